"""The network's architecture as data, torch-free: :class:`ModelConfig`, the head names and labels.

Kept apart from :mod:`training.model` so that reading a config (and anything else that only describes a
network) does not import torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: Default channel reduction ratio s of mu, nu, phi and psi.
#: The paper leaves s to its (unavailable) supplementary. With s=6 and a single-layer theta the
#: multiply-accumulate counts of our heads land on the paper's Table 2 column for ResNet-50, T=8,
#: 256x128: SG-RAFA(S=1) 2.33 G (paper 2.301), MG-RAFA(N=2) 0.745 G (0.742), MG-RAFA(N=4) 0.211 G
#: (0.212). s=8, the value of the same authors' RGA code, gives 1.75 G / 0.16 G, further from the
#: paper, so 6 is the default (``python -m training.complexity`` prints the comparison).
DEFAULT_REDUCTION = 6
HEAD_NAMES = ("baseline", "sg-rafa", "mg-rafa", "mg-afa")
#: Which nodes serve as reference for the relations (the paper's Table 3, built from its Section 4.3.2):
#: ``temporal``: the S-RFNs of the paper ("Ours (16x8x1)"), the temporal average of the T frame maps,
#: Hm*Wm reference nodes shared by every frame. ``frame``: every frame relates its nodes to the Hm*Wm
#: nodes of its own map (no temporal pooling, no cross-frame relations: relation-aware attention of the
#: image model [41] applied frame by frame; the reference is as small as the S-RFNs but not shared).
#: ``all``: every node relates to all T*Hm*Wm nodes of the clip ("ST (16x8x8)"); psi then has T*Hm*Wm
#: input channels, so this variant only accepts the T it was built for.
REFERENCES = ("temporal", "frame", "all")
#: Channels of each backbone's last feature map.
BACKBONE_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
#: conv1 (stride 2) + maxpool (2) + layer2 (2) + layer3 (2); layer4 keeps stride 1 (last stride 1).
BACKBONE_STRIDE = 16


def head_label(
    name: str, granularities: int = 4, splits: int = 1, reduction: int = DEFAULT_REDUCTION, reference: str = "temporal"
) -> str:
    """The paper's name for a head configuration, e.g. 'MG-RAFA(N=4)'; non-default s and reference appended."""
    name = name.lower()
    if name == "baseline":
        return "Baseline"
    label = f"SG-RAFA(S={splits})" if name == "sg-rafa" else f"{name.upper()}(N={granularities})"
    if reference != "temporal" and name != "mg-afa":
        label += f" ref={reference}"
    if reduction != DEFAULT_REDUCTION:
        label += f" s={reduction}"
    return label


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored in checkpoints and model cards."""

    backbone: str = "resnet50"
    head: str = "mg-rafa"
    granularities: int = 4
    splits: int = 1
    reduction: int = DEFAULT_REDUCTION
    #: Reference nodes of the relations (:data:`REFERENCES`; Table 3 of the paper).
    reference: str = "temporal"
    #: T of the ``all`` reference, whose psi sees T*H*W relations (None for the other references).
    reference_frames: int | None = None
    height: int = 256
    width: int = 128

    @property
    def feature_size(self) -> tuple[int, int]:
        return self.height // BACKBONE_STRIDE, self.width // BACKBONE_STRIDE

    @property
    def channels(self) -> int:
        return BACKBONE_CHANNELS[self.backbone]

    @property
    def label(self) -> str:
        return head_label(self.head, self.granularities, self.splits, self.reduction, self.reference)

    def to_dict(self) -> dict:
        return asdict(self)
