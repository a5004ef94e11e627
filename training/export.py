"""Export a trained (or randomly initialised) network to one self-contained ONNX file plus its model card.

The exported graph is the whole inference contract (see models/README.md): it takes uint8 RGB frames
(B, T, H, W, 3), converts, normalises and transposes them itself, and returns the video feature v as
``embedding`` (B, C). Batch and frame axes are dynamic. Parity with PyTorch is checked with onnxruntime
on fresh random input before the card is written.

    python -m training.export --checkpoint runs/mars/final.pt --out models/mars.onnx
    python -m training.export --random-init --backbone resnet18 --height 128 --width 64 --out models/tiny.onnx
    python -m training.export --checkpoint runs/mars/final.pt --precision int8 --calibration data/mars \
        --out models/mars-int8.onnx

``--precision fp16|int8`` converts the checked fp32 graph (training.precision); int8 is calibrated on the
tracklets of ``--calibration``. The card records the precision.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import (
    EMBEDDING_NAME,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_NAME,
    CardArchitecture,
    CardEmbedding,
    CardExport,
    CardInput,
    CardTestTime,
    CardTraining,
    ModelCard,
    card_path_for,
    model_version_of,
)
from training.architecture import DEFAULT_REDUCTION, HEAD_NAMES, ModelConfig
from training.checkpoint import load_checkpoint
from training.data.sampling import canonical_test_mode
from training.model import VideoReIDModel, build_model
from training.precision import PRECISIONS, calibration_clips, convert_fp16, cosine_agreement, quantize_int8

log = logging.getLogger(__name__)

OPSET = 18


class ExportWrapper(nn.Module):
    """uint8 RGB (B, T, H, W, 3) -> normalised float (B, T, 3, H, W) -> model -> embedding [, attention...].

    Args:
        model: the network, in eval mode.
        normalize: l2-normalise the embedding inside the graph (off by default: the paper matches the
            raw v by l2 distance). Recorded in the model card.
        with_attention: also output, per granularity, the attention averaged over the group's channels,
            (B, T, Hm, Wm), for visualisation.
    """

    def __init__(self, model: VideoReIDModel, normalize: bool = False, with_attention: bool = False):
        super().__init__()
        self.model = model
        self.normalize = normalize
        self.with_attention = with_attention
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255.0)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        images = frames.permute(0, 1, 4, 2, 3).float()
        # (x/255 - mean)/std folded into one affine step on the 0..255 scale.
        images = (images - self.mean) / self.std
        output = self.model(images, return_attention=self.with_attention)
        embedding = output.embedding
        if self.normalize:
            embedding = nn.functional.normalize(embedding, dim=1)
        if not self.with_attention:
            return (embedding,)
        return (embedding, *(attention.mean(dim=2) for attention in output.attention))


def attention_output_names(model: VideoReIDModel) -> list[str]:
    groups = getattr(model.head, "groups", ())
    return [f"attention_{index + 1}" for index in range(len(groups))]


def check_parity(
    wrapper: ExportWrapper,
    onnx_path: Path,
    shapes: tuple[tuple[int, int], ...] = ((1, 8), (3, 4)),
    seed: int = 0,
) -> float:
    """Largest relative error of onnxruntime against PyTorch on fresh random uint8 frames.

    The error of one output is max|ort - torch| / max|torch|, so near-zero entries do not inflate it.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    height, width = wrapper.model.config.height, wrapper.model.config.width
    generator = np.random.default_rng(seed)
    worst = 0.0
    for batch, frames in shapes:
        data = generator.integers(0, 256, size=(batch, frames, height, width, 3), dtype=np.uint8)
        with torch.no_grad():
            expected = [t.numpy() for t in wrapper(torch.from_numpy(data))]
        actual = session.run(None, {input_name: data})
        for want, got in zip(expected, actual, strict=True):
            if want.shape != got.shape:
                raise AssertionError(f"onnxruntime output shape {got.shape} != PyTorch {want.shape}")
            scale = max(float(np.abs(want).max()), 1e-12)
            worst = max(worst, float(np.abs(want - got).max()) / scale)
    return worst


def card_architecture(config: ModelConfig) -> CardArchitecture:
    """The card's `model` section; a ModelConfig field the contract does not know is a clear error."""
    unknown = sorted(set(config.to_dict()) - set(CardArchitecture.model_fields))
    if unknown:
        raise ValueError(f"ModelConfig fields {unknown} are not in the model card's `model` section: add them to "
                         "models.contract.CardArchitecture (with defaults) and to models/README.md")
    return CardArchitecture(**config.to_dict(), label=config.label)


def export_model(
    model: VideoReIDModel,
    out_path: str | Path,
    num_frames: int = 8,
    training_info: dict | None = None,
    normalize: bool = False,
    with_attention: bool = True,
    parity_tolerance: float = 1e-4,
    precision: str = "fp32",
    calibration: str | Path | None = None,
    calibration_count: int = 32,
) -> ModelCard:
    """Write ``out_path`` (.onnx) and the model card beside it (.json, through models.ModelCard); return
    the card. ``training_info``: the card's `training` section (dataset, checkpoint, epoch, metrics), and
    under ``test_time`` the run's test-time mode and max clips for the card's `test_time` (else the
    contract's defaults), so the service embeds as the run's own evaluation did.

    ``precision``: fp32, fp16 or int8 (training.precision); int8 needs ``calibration``, a folder of tracklet
    frame folders (a dataset root), of which ``calibration_count`` tracklets calibrate the activation ranges.
    The card's parity is the fp32 graph's against PyTorch (the reduced graph's agreement with it is logged).

    Raises AssertionError when onnxruntime disagrees with PyTorch by more than ``parity_tolerance``
    (relative), in which case nothing is left at ``out_path``; ValueError for an unknown precision or an
    int8 export without calibration tracklets.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise ValueError("an int8 export needs --calibration DIR (tracklet frame folders of the training data): "
                         "static quantisation is calibrated on real tracklets")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    # Attention outputs by default, for the heads that have attention (the baseline head has none).
    with_attention = with_attention and bool(attention_output_names(model))
    wrapper = ExportWrapper(model, normalize=normalize, with_attention=with_attention).eval()
    config = model.config
    attention_names = attention_output_names(model) if with_attention else []
    output_names = [EMBEDDING_NAME, *attention_names]
    dynamic_shapes = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("frames")},)
    example = torch.zeros(2, num_frames, config.height, config.width, 3, dtype=torch.uint8)

    # Write next to the target and rename, so a failed export never leaves a half-written model.
    handle, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=out_path.parent)
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                (example,),
                str(tmp_path),
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        parity = check_parity(wrapper, tmp_path)
        if parity > parity_tolerance:
            raise AssertionError(f"onnxruntime differs from PyTorch: relative error {parity:.2e}")
        if precision != "fp32":
            reduce_precision(tmp_path, precision, config, num_frames, calibration, calibration_count)
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, out_path)
    finally:
        tmp_path.unlink(missing_ok=True)

    training_info = dict(training_info) if training_info is not None else None
    test_time = training_info.pop("test_time", None) if training_info is not None else None
    # Validated on the way out: an export that does not fit the contract fails here, not in the service.
    card = ModelCard(
        name=out_path.stem,
        model_version=model_version_of(out_path),
        onnx_file=out_path.name,
        input=CardInput(height=config.height, width=config.width),
        num_frames=num_frames,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        precision=precision,
        embedding=CardEmbedding(dim=model.embedding_dim, normalized=normalize),
        attention_outputs=attention_names,
        model=card_architecture(config),
        training=CardTraining(**training_info) if training_info is not None else None,
        test_time=CardTestTime(**test_time) if test_time is not None else CardTestTime(),
        export=CardExport(
            opset=OPSET,
            torch=str(torch.__version__),
            parity_max_rel_error=parity,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ),
    )
    card_path = card.write(card_path_for(out_path))
    log.info("exported %s (%s, dim %d, parity %.1e) and %s", out_path, config.label, model.embedding_dim,
             parity, card_path.name)
    return card


def reduce_precision(path: Path, precision: str, config: ModelConfig, num_frames: int,
                     calibration: str | Path | None, calibration_count: int) -> None:
    """Replace the fp32 graph at ``path`` by its fp16 or int8 variant; log how closely it agrees with fp32."""
    import onnxruntime as ort

    if calibration is not None:
        clips = calibration_clips(calibration, num_frames, config.height, config.width, calibration_count)
    else:  # fp16 needs no calibration; its agreement is checked on random frames
        clips = np.random.default_rng(0).integers(0, 256, size=(2, num_frames, config.height, config.width, 3),
                                                  dtype=np.uint8)
    reduced = path.with_name(path.stem + f".{precision}.onnx")
    try:
        if precision == "int8":
            quantize_int8(path, reduced, clips, INPUT_NAME)
        else:
            convert_fp16(path, reduced)
        # onnxruntime's CPU build runs the fp16 graph too (its fp16 kernels, or casts around them), so
        # both precisions are checked against the fp32 graph before anything is written.
        fp32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (want,) = fp32.run([EMBEDDING_NAME], {INPUT_NAME: clips})
        session = ort.InferenceSession(str(reduced), providers=["CPUExecutionProvider"])
        (got,) = session.run([EMBEDDING_NAME], {INPUT_NAME: clips})
        log.info("%s graph: smallest cosine similarity with fp32 over %d clips %.4f",
                 precision, len(clips), cosine_agreement(want, got))
        os.replace(reduced, path)
    finally:
        reduced.unlink(missing_ok=True)


def load_checkpoint_model(checkpoint: str | Path) -> tuple[VideoReIDModel, dict, int]:
    """Rebuild the network from a training checkpoint (read once, by the training side's one loader): the
    network, the training info of the model card, and the number of frames T it was trained with."""
    state = load_checkpoint(checkpoint)
    info = {
        "dataset": state.dataset,
        "checkpoint": str(checkpoint),
        "epoch": state.epoch,
        "metrics": state.metrics.as_dict() if state.metrics is not None else None,
    }
    data = state.train_config().data
    info["test_time"] = {"mode": canonical_test_mode(data.test_mode), "max_clips": data.max_test_clips}
    return state.build_model(), info, state.num_frames


def card_test_time(run_test_time: dict, max_clips: int | None) -> dict:
    """The card's test_time: the run's, with ``max_clips`` (export --max-clips) as its cap when given."""
    if max_clips is not None:
        return {**run_test_time, "max_clips": max_clips}
    if run_test_time["max_clips"] is None:
        log.warning("the run was evaluated with no cap on clips (data.max_test_clips: null): the card says so, "
                    "and the service refuses such a card; --max-clips N writes a cap it can serve")
    return run_test_time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Export the network to ONNX (uint8 frames in, embedding out) with its JSON model card.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a training checkpoint (.pt)")
    source.add_argument("--random-init", action="store_true", help="export an untrained network of the given shape")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx path; the card is written beside it")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet18", "resnet34"])
    parser.add_argument("--head", default="mg-rafa", choices=HEAD_NAMES)
    parser.add_argument("--granularities", type=int, default=4, help="N of MG-RAFA / MG-AFA")
    parser.add_argument("--splits", type=int, default=1, help="S of SG-RAFA")
    parser.add_argument("--reduction", type=int, default=DEFAULT_REDUCTION, help="reduction ratio s")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--num-frames", type=int, default=None,
                        help="T recorded in the card (default: the checkpoint's, else 8)")
    parser.add_argument("--max-clips", type=int, default=None, metavar="N",
                        help="the card's test_time.max_clips (default: the checkpoint run's data.max_test_clips); "
                             "a run evaluated with no cap (null) needs one to be served")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32; fp16 (GPU hosts); int8 (CPU hosts, static quantisation, needs --calibration)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="int8: a dataset root or folder of tracklet frame folders to calibrate on")
    parser.add_argument("--calibration-tracklets", type=int, default=32,
                        help="int8: how many tracklets (spread over the folder) calibrate (default 32)")
    parser.add_argument("--normalize", action="store_true", help="l2-normalise the embedding in the graph")
    parser.add_argument("--attention", dest="with_attention", action=argparse.BooleanOptionalAction, default=True,
                        help="add the attention_1..N outputs (default; the service's attention overlays need them)")
    # Kept for older command lines: attention outputs are the default now.
    parser.add_argument("--with-attention", dest="with_attention", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    args = parse_args(argv)
    if args.precision == "int8" and args.calibration is None:
        print("error: --precision int8 needs --calibration DIR (tracklet frame folders of the training data)",
              file=sys.stderr)
        return 2
    if args.calibration is not None and not args.calibration.is_dir():
        print(f"error: calibration folder not found: {args.calibration}", file=sys.stderr)
        return 2
    if args.max_clips is not None and (args.max_clips < 1 or args.checkpoint is None):
        print("error: --max-clips needs a --checkpoint and a value of at least 1", file=sys.stderr)
        return 2
    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            print(f"error: checkpoint not found: {args.checkpoint}", file=sys.stderr)
            return 2
        model, info, trained_frames = load_checkpoint_model(args.checkpoint)
        num_frames = args.num_frames or trained_frames
        info["test_time"] = card_test_time(info["test_time"], args.max_clips)
    else:
        torch.manual_seed(args.seed)
        try:
            model = build_model(
                backbone=args.backbone,
                head=args.head,
                granularities=args.granularities,
                splits=args.splits,
                reduction=args.reduction,
                height=args.height,
                width=args.width,
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        info, num_frames = None, args.num_frames or 8
    card = export_model(model, args.out, num_frames=num_frames, training_info=info,
                        normalize=args.normalize, with_attention=args.with_attention,
                        precision=args.precision, calibration=args.calibration,
                        calibration_count=args.calibration_tracklets)
    print(f"wrote {args.out} and {card_path_for(args.out)}: {card.model.label} on {card.model.backbone}, "
          f"{card.precision}, "
          f"{card.height}x{card.width}, T={card.num_frames}, dim {card.dim}, model_version {card.model_version}, "
          f"parity max rel error {card.export.parity_max_rel_error:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
