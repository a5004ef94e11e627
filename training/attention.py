"""Figure 3: a trained network's attention over a tracklet's frames, per granularity, as overlays.

    python -m training attention --checkpoint runs/synthetic/final.pt --tracklet data/synthetic/bbox_test/0002 \\
        --out runs/attention

Reads the tracklet's frames (a folder of images, name order), takes T frames as a training clip spans the
tracklet (the centre of each of T chunks; ``--frames`` changes T, the head accepts any), runs the network
with its attention and writes, to OUT:

* ``attention.png``: the frames on top, one row of overlays per granularity (G-1st = the finest), like
  the paper's Figure 3 (a) and (b) in one picture;
* ``G-1st.png`` ...: each granularity's row alone;
* ``attention.npz``: the frame indices and each granularity's channel-averaged attention (T, Hm, Wm),
  the values the colours come from.

The rendering is ``models.overlay`` (torch-free), the same the service applies to the ONNX model's
``attention_1..N`` outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from models.overlay import attention_figure, granularity_name, overlay_frames, write_png
from training.checkpoint import load_checkpoint
from training.data.sampling import chunk_frame_indices
from training.data.tracklets import FRAME_SUFFIXES, sorted_frames
from training.data.transforms import load_frame, to_tensor


def tracklet_frame_paths(folder: str | Path) -> list[Path]:
    """The images of a tracklet folder in name order (hidden files, such as macOS ``._`` twins, skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"tracklet folder {folder} does not exist")
    paths = [Path(frame) for frame in sorted_frames(folder)]
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(FRAME_SUFFIXES)}) in {folder}")
    return paths


@torch.no_grad()
def tracklet_attention(model, paths: list[Path], num_frames: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(frame indices, frames (T, H, W, 3) uint8, per group the channel-averaged attention (T, Hm, Wm))."""
    indices = chunk_frame_indices(len(paths), num_frames)
    frames = np.stack([load_frame(str(paths[i]), model.config.height, model.config.width) for i in indices])
    device = next(model.parameters()).device
    output = model(to_tensor(frames)[None].to(device), return_attention=True)
    if not output.attention:
        raise ValueError(f"{model.config.label} has no attention to show (the baseline averages every node)")
    maps = [attention[0].mean(dim=1).float().cpu().numpy() for attention in output.attention]
    return indices, frames, maps


def group_labels(model) -> list[str]:
    """G-1st .. G-Nth for MG heads (finest first); S-1 .. S-S for SG-RAFA's same-granularity groups."""
    count = len(model.head.groups)
    if model.config.head == "sg-rafa":
        return [f"S-{index + 1}" for index in range(count)]
    return [granularity_name(index) for index in range(count)]


def render_attention(
    checkpoint: str | Path, tracklet: str | Path, out: str | Path, num_frames: int | None = None, device: str = "cpu"
) -> dict:
    """Write attention.png, one PNG per group and attention.npz to ``out``; returns a summary."""
    loaded = load_checkpoint(checkpoint)
    model = loaded.build_model(device)
    paths = tracklet_frame_paths(tracklet)
    num_frames = num_frames or loaded.num_frames
    indices, frames, maps = tracklet_attention(model, paths, num_frames)
    labels = group_labels(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_png(attention_figure(frames, maps, labels=labels), out / "attention.png")
    for label, attention in zip(labels, maps, strict=True):
        row = overlay_frames(frames, attention)
        write_png(np.concatenate(list(row), axis=1), out / f"{label}.png")
    np.savez(out / "attention.npz", frame_indices=indices, frames=frames,
             **{f"attention_{i + 1}": m for i, m in enumerate(maps)})  # fmt: skip
    summary = {
        "model": model.config.label,
        "tracklet": str(tracklet),
        "frame_indices": indices.tolist(),
        "groups": [{"label": label, "shape": list(m.shape)} for label, m in zip(labels, maps, strict=True)],
    }
    (out / "attention.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training attention",
        description="Render a checkpoint's attention over a tracklet's frames per granularity (the paper's "
        "Figure 3): OUT/attention.png, OUT/G-1st.png ..., OUT/attention.npz.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="final.pt or last.pt of a run")
    parser.add_argument("--tracklet", required=True, type=Path, help="folder of the tracklet's frames (images)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--frames", type=int, help="frames to show, one per chunk (default: the T trained with)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.frames is not None and args.frames < 1:
        parser.error("--frames must be at least 1")
    try:
        summary = render_attention(args.checkpoint, args.tracklet, args.out, args.frames, args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    groups = ", ".join(f"{g['label']} {g['shape'][1]}x{g['shape'][2]}" for g in summary["groups"])
    frames = summary["frame_indices"]
    print(f"{summary['model']}: attention over frames {frames} ({groups}) -> {args.out}/attention.png")
    return 0
