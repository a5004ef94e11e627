"""The model smoke path in one command (``make smoke``): build a small random network, export it to ONNX
with its model card, render one synthetic tracklet, sample its T test frames and embed them with
onnxruntime, checking the embedding against PyTorch's. Seconds on a CPU; no data, no training.

    python -m training.smoke [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import sample_frame_indices
from training.data.pedestrian import random_appearance
from training.data.synthetic import render_tracklet
from training.data.synthetic_scene import random_camera
from training.export import ExportWrapper, export_model
from training.model import build_model

HEIGHT, WIDTH, NUM_FRAMES, TRACKLET_LENGTH = 64, 32, 4, 12


@dataclass
class SmokeResult:
    onnx_path: Path
    model_version: str
    embedding: np.ndarray
    #: max |onnxruntime - PyTorch| / max |PyTorch| on the tracklet.
    relative_error: float


def run_smoke(work_dir: Path, seed: int = 0) -> SmokeResult:
    """Export a random ResNet-18 MG-RAFA(N=2) and embed one rendered tracklet through onnxruntime."""
    import onnxruntime as ort

    torch.manual_seed(seed)
    model = build_model(backbone="resnet18", head="mg-rafa", granularities=2, height=HEIGHT, width=WIDTH).eval()
    onnx_path = work_dir / "smoke.onnx"
    card = export_model(model, onnx_path, num_frames=NUM_FRAMES)

    rng = np.random.default_rng(seed)
    frames = render_tracklet(random_appearance(rng), random_camera(rng), TRACKLET_LENGTH, HEIGHT, WIDTH, rng)
    # The frames the service would take: the contract's test-time sampling, T from the card.
    clip = np.stack([frames[index] for index in sample_frame_indices(len(frames), card.num_frames)])[None]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (embedding,) = session.run(["embedding"], {"frames": clip})
    with torch.no_grad():
        (expected,) = ExportWrapper(model).eval()(torch.from_numpy(clip))
    expected = expected.numpy()
    if embedding.shape != (1, card.embedding.dim) or not np.isfinite(embedding).all():
        raise AssertionError(f"onnxruntime gave an embedding of shape {embedding.shape} with non-finite values")
    error = float(np.abs(embedding - expected).max() / max(float(np.abs(expected).max()), 1e-12))
    if error > 1e-4:
        raise AssertionError(f"onnxruntime and PyTorch disagree on the tracklet: relative error {error:.1e}")
    return SmokeResult(onnx_path, card.model_version, embedding[0], error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, help="where the ONNX file and card go (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as temporary:
        work_dir = args.work_dir or Path(temporary)
        work_dir.mkdir(parents=True, exist_ok=True)
        result = run_smoke(work_dir)
        print(f"smoke OK: exported {result.onnx_path.name} (model_version {result.model_version}); one "
              f"{TRACKLET_LENGTH}-frame tracklet -> {NUM_FRAMES} frames -> embedding of dim {len(result.embedding)}, "
              f"norm {np.linalg.norm(result.embedding):.3f}, onnxruntime vs PyTorch relative error "
              f"{result.relative_error:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
