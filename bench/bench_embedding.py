"""Embedding latency of MG-RAFA: onnxruntime (what the service runs) against PyTorch eager.

Setup of the paper: ResNet-50 with last stride 1, MG-RAFA with N=4, T=8 frames of 256x128. Random
weights (speed does not depend on them). Reports per-tracklet latency at batch 1 and 8, tracklets/s,
achieved GFLOP/s (FLOPs counted with torch.utils.flop_counter, 2 per multiply-accumulate) against the
machine's float32 matmul rate, and the cost of the MG-RAFA head against the baseline's average pooling.

    PYTHONPATH=. .venv/bin/python bench/bench_embedding.py            # writes bench/bench_embedding.md

A benchmark script run by hand, not a test. torch is allowed here (never under service/).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.machine import load_average, machine_description
from models import IMAGENET_MEAN, IMAGENET_STD
from service.embedder import OnnxEmbedder
from training.export import ExportWrapper, export_model
from training.model import build_model

log = logging.getLogger("bench_embedding")

HEIGHT, WIDTH, NUM_FRAMES = 256, 128, 8


def timed(function: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        function()
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        durations.append(time.perf_counter() - started)
    return durations


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    """float32 square matmul rate of this machine in torch (the reference for 'achieved')."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    seconds = statistics.median(timed(lambda: a @ b, repeats))
    return 2 * size**3 / seconds / 1e9


def count_flops(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/reid-bench"), help="where the ONNX goes")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs at batch 1 (batch 8: half, at least 2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for torch and onnxruntime")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_embedding.md"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    load_before = load_average()

    # Seeded, so a re-run that reuses the export rebuilds the very weights in it (the parity line checks).
    torch.manual_seed(0)
    model = build_model(backbone="resnet50", head="mg-rafa", granularities=4, height=HEIGHT, width=WIDTH).eval()
    torch.manual_seed(1)
    baseline = build_model(backbone="resnet50", head="baseline", height=HEIGHT, width=WIDTH).eval()
    onnx_path = args.work_dir / "mgrafa-r50-n4.onnx"
    if not (onnx_path.is_file() and onnx_path.with_suffix(".json").is_file()):
        log.info("exporting %s", onnx_path)
        export_model(model, onnx_path, num_frames=NUM_FRAMES)
    else:
        log.info("reusing %s (delete it to re-export)", onnx_path)
    wrapper = ExportWrapper(model).eval()
    baseline_wrapper = ExportWrapper(baseline).eval()

    rng = np.random.default_rng(0)
    clips = {batch: rng.integers(0, 256, (batch, NUM_FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8) for batch in (1, 8)}
    flops_per_tracklet = count_flops(wrapper, torch.from_numpy(clips[1]))
    baseline_flops = count_flops(baseline_wrapper, torch.from_numpy(clips[1]))
    log.info("FLOPs per tracklet: MG-RAFA %.2f G, baseline %.2f G", flops_per_tracklet / 1e9, baseline_flops / 1e9)

    embedder = OnnxEmbedder(onnx_path, device="cpu", intra_op_threads=args.threads)
    reference_gflops = matmul_gflops()
    log.info("matmul reference: %.0f GFLOP/s", reference_gflops)

    rows = []
    for batch in (1, 8):
        repeats = args.repeats if batch == 1 else max(2, args.repeats // 2)
        frames = clips[batch]
        tensor = torch.from_numpy(frames)

        def run_eager(tensor=tensor):
            with torch.inference_mode():
                return wrapper(tensor)

        engines = {"onnxruntime (CPU provider)": lambda frames=frames: embedder.embed(frames),
                   "PyTorch eager": run_eager}
        # The engines take turns, run by run, so a burst of load from other jobs hits both alike.
        durations: dict[str, list[float]] = {name: [] for name in engines}
        for function in engines.values():
            function()  # warm-up
        for _ in range(repeats):
            for name, function in engines.items():
                durations[name] += timed(function, 1, warmup=0)
        for name, values in durations.items():
            median = statistics.median(values)
            rows.append({
                "engine": name, "batch": batch, "median_s": median, "min_s": min(values),
                "per_tracklet_ms": median / batch * 1000, "tracklets_per_s": batch / median,
                "gflops": flops_per_tracklet * batch / median / 1e9, "runs": repeats,
            })
            log.info("%s batch %d: median %.3f s, min %.3f s per call", name, batch, median, min(values))

    # Parity of the two engines on the benchmarked input (same weights).
    with torch.inference_mode():
        eager_embedding = wrapper(torch.from_numpy(clips[1]))[0].numpy()
    ort_embedding = embedder.embed(clips[1])
    parity = float(np.abs(eager_embedding - ort_embedding).max() / np.abs(eager_embedding).max())

    # Head cost: the same backbone feature maps through MG-RAFA(N=4) and through the baseline's pooling.
    images = (torch.from_numpy(clips[1]).permute(0, 1, 4, 2, 3).float() / 255 - torch.tensor(IMAGENET_MEAN).view(
        1, 1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    with torch.inference_mode():
        maps = model.forward_features(images)
        backbone_s = statistics.median(timed(lambda: model.forward_features(images), 3))
        mg_head_s = statistics.median(timed(lambda: model.forward_head(maps), 20, warmup=3))
        base_head_s = statistics.median(timed(lambda: baseline.forward_head(maps), 20, warmup=3))
    head_flops = count_flops(model.head, maps)
    base_head_flops = count_flops(baseline.head, maps)

    load_after = load_average()
    lines = [
        "# Embedding latency: onnxruntime vs PyTorch eager",
        "",
        f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} with "
        f"`PYTHONPATH=. .venv/bin/python bench/bench_embedding.py` ({args.threads} threads).",
        "",
        f"- Machine: {machine_description()}; no GPU, so onnxruntime ran on its CPUExecutionProvider "
        f"(onnxruntime {ort.__version__}, torch {torch.__version__}).",
        f"- Load average (1/5/15 min) before: {load_before}; after: {load_after}. The machine is shared with "
        "other engineers' jobs, so absolute times are noisy; ratios measured back to back are more reliable.",
        f"- Model: ResNet-50 (last stride 1) + MG-RAFA(N=4), T={NUM_FRAMES} frames of {HEIGHT}x{WIDTH}, random "
        f"weights, uint8 frames in (normalisation inside both the graph and the eager wrapper). "
        f"{flops_per_tracklet / 1e9:.2f} GFLOP per tracklet (baseline head: {baseline_flops / 1e9:.2f}).",
        f"- Reference: float32 4096x4096 matmul in torch on this machine now: {reference_gflops:.0f} GFLOP/s.",
        "- Per-tracklet figures use the median; the engines took turns run by run. Achieved GFLOP/s counts "
        "2 FLOPs per multiply-accumulate of convolutions and matmuls (torch.utils.flop_counter).",
        f"- Engines agree: max |ort - eager| / max |eager| = {parity:.1e}.",
        "",
        "| engine | batch | runs | median per call (s) | fastest call (s) | per tracklet (ms) | tracklets/s "
        "| achieved GFLOP/s | % of matmul |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['engine']} | {row['batch']} | {row['runs']} | {row['median_s']:.3f} | {row['min_s']:.3f} "
            f"| {row['per_tracklet_ms']:.0f} | {row['tracklets_per_s']:.2f} | {row['gflops']:.0f} "
            f"| {100 * row['gflops'] / reference_gflops:.0f}% |"
        )
    seconds = {(row["engine"].split()[0], row["batch"]): row["median_s"] for row in rows}
    speedups = [f"batch {batch}: {seconds['PyTorch', batch] / seconds['onnxruntime', batch]:.2f}x" for batch in (1, 8)]
    lines += [
        "",
        f"onnxruntime speed-up over eager: {', '.join(speedups)}.",
        "",
        "## Head cost (PyTorch eager, batch 1, same feature maps (1, 8, 2048, 16, 8))",
        "",
        "| part | median (ms) | GFLOP (matmul/conv only) |",
        "|---|---:|---:|",
        f"| backbone (8 frames) | {backbone_s * 1000:.0f} | {(flops_per_tracklet - head_flops) / 1e9:.2f} |",
        f"| MG-RAFA(N=4) head | {mg_head_s * 1000:.2f} | {head_flops / 1e9:.3f} |",
        f"| baseline head (average pooling) | {base_head_s * 1000:.3f} | {base_head_flops / 1e9:.3f} |",
        "",
        f"MG-RAFA head / baseline head time: {mg_head_s / base_head_s:.0f}x; but the MG-RAFA head is "
        f"{100 * mg_head_s / (backbone_s + mg_head_s):.1f}% of the whole embedding time "
        f"(its FLOPs: {100 * head_flops / flops_per_tracklet:.2f}% of the total).",
        "",
    ]
    args.out.write_text("\n".join(lines))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
