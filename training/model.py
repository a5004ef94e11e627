"""The video reID network: a per-frame ResNet backbone followed by an aggregation head.

One definition serves training, evaluation, complexity counting and ONNX export. Classifiers and
losses live outside (``training.losses``); ``forward`` returns the same :class:`HeadOutput` in every mode.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet

from training.architecture import BACKBONE_CHANNELS, BACKBONE_STRIDE, ModelConfig
from training.rafa import HeadOutput, build_head

log = logging.getLogger(__name__)

BACKBONES = {
    "resnet18": (resnet.resnet18, resnet.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (resnet.resnet34, resnet.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (resnet.resnet50, resnet.ResNet50_Weights.IMAGENET1K_V1),
}


class FrameBackbone(nn.Module):
    """torchvision ResNet without its classifier, the stride of conv5_x's first block set to 1.

    A 256x128 frame then gives a 16x8 map (2048 channels for ResNet-50, 512 for ResNet-18/34).

    Args:
        name: resnet18, resnet34 or resnet50.
        pretrained: None, a path to a torchvision ImageNet state dict, or "imagenet" to fetch
            torchvision's weights through its weights API (needs internet; tests never do this).
    """

    def __init__(self, name: str = "resnet50", pretrained: str | Path | None = None):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
        factory, weights = BACKBONES[name]
        self.out_channels = BACKBONE_CHANNELS[name]
        net = factory(weights=weights if pretrained == "imagenet" else None)
        if pretrained not in (None, "imagenet"):
            load_imagenet_weights(net, Path(pretrained))
        # Remove the last spatial down-sampling (conv5_x), as in the paper.
        for module in net.layer4[0].modules():
            if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                module.stride = (1, 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(images))


def load_imagenet_weights(net: nn.Module, path: Path) -> None:
    """Load a torchvision ResNet state dict from a local file (the classifier is ignored)."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the backbone: missing {missing[:5]}, unexpected {unexpected[:5]}")
    log.info("loaded ImageNet weights from %s", path)


class VideoReIDModel(nn.Module):
    """Frames (B, T, 3, H, W), normalised, -> :class:`HeadOutput` (v, v_g, optional attention).

    Works for any T >= 1 and any batch size with the same weights; the spatial size is fixed at
    construction because the relation embedding psi has H*W/pool^2 input channels.
    """

    def __init__(self, config: ModelConfig = ModelConfig(), pretrained: str | Path | None = None):
        super().__init__()
        if config.height % BACKBONE_STRIDE or config.width % BACKBONE_STRIDE:
            raise ValueError(f"input {config.height}x{config.width} must be a multiple of {BACKBONE_STRIDE}")
        self.config = config
        self.backbone = FrameBackbone(config.backbone, pretrained)
        self.head = build_head(
            config.head,
            self.backbone.out_channels,
            config.feature_size,
            granularities=config.granularities,
            splits=config.splits,
            reduction=config.reduction,
            reference=config.reference,
            num_frames=config.reference_frames,
        )

    @property
    def embedding_dim(self) -> int:
        return self.backbone.out_channels

    def forward_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> per-frame feature maps (B, T, C, h, w)."""
        batch, num_frames = frames.shape[:2]
        maps = self.backbone(frames.flatten(0, 1))
        return maps.unflatten(0, (batch, num_frames))

    def forward_head(self, feature_maps: torch.Tensor, return_attention: bool = False) -> HeadOutput:
        return self.head(feature_maps, return_attention=return_attention)

    def forward(self, frames: torch.Tensor, return_attention: bool = False) -> HeadOutput:
        return self.forward_head(self.forward_features(frames), return_attention)


def build_model(config: ModelConfig | None = None, pretrained: str | Path | None = None, **overrides) -> VideoReIDModel:
    """Build the network from a config (or keyword overrides of the paper's default)."""
    if config is None:
        config = ModelConfig(**overrides)
    elif overrides:
        config = ModelConfig(**{**config.to_dict(), **overrides})
    return VideoReIDModel(config, pretrained)
