"""Retrieval agreement of reduced-precision exports with fp32, through the real evaluation.

Exports one trained checkpoint in each precision (int8 calibrated on the training split's tracklets) and
evaluates every export with ``python -m training evaluate --onnx``'s code (training.run_evaluation.evaluate_onnx:
the run's dataset, protocol and test-time mode, onnxruntime on the CPU); reports mAP and CMC side by side,
and per query how many of fp32's 10 nearest gallery tracklets each precision also ranks in its top 10.
fp16 is evaluated too: onnxruntime's CPU provider runs fp16 graphs (slowly: it is for GPUs), so its agreement
is measured here even though its speed is not. Writes the "Agreement" section of bench/precision.md.

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 nice -n 10 python bench/bench_precision_agreement.py \\
        --checkpoint runs/ablation/mg-rafa-n4/seed0/final.pt --calibration data/synthetic/bbox_train
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import load_average, machine_description, write_section

log = logging.getLogger("bench_precision_agreement")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained run's final.pt")
    parser.add_argument("--calibration", type=Path, required=True, help="the training split's tracklet folders")
    parser.add_argument("--data-root", type=Path, help="dataset folder (default: the run's)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "fp16"])
    parser.add_argument("--calibration-tracklets", type=int, default=32)
    parser.add_argument("--mode", help="test-time mode (default: the run's)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "reid-bench-agreement")
    parser.add_argument("--out", type=Path, default=Path("bench/precision.md"))
    args = parser.parse_args()

    from training.export import export_model, load_checkpoint_model
    from training.run_evaluation import evaluate_onnx, top_k_overlap

    if args.precisions[0] != "fp32":
        parser.error("the first precision is the reference: fp32")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    loads = [load_average()]
    reports, export_seconds = {}, {}
    for precision in args.precisions:
        path = args.work_dir / f"{args.checkpoint.parent.name}-{precision}.onnx"
        model, info, num_frames = load_checkpoint_model(args.checkpoint)
        started = time.perf_counter()
        export_model(model, path, num_frames=num_frames, training_info=info, precision=precision,
                     calibration=args.calibration if precision == "int8" else None,
                     calibration_count=args.calibration_tracklets)
        export_seconds[precision] = time.perf_counter() - started
        reports[precision] = evaluate_onnx(path, checkpoint=args.checkpoint, dataset_root=args.data_root,
                                           output_dir=args.work_dir / f"eval-{precision}", mode=args.mode,
                                           threads=args.threads,
                                           progress=False)
        loads.append(load_average())
        log.info("%s: %s", precision, reports[precision].metrics)

    from training.checkpoint import load_checkpoint

    state = load_checkpoint(args.checkpoint)
    reference = reports["fp32"]
    rows = []
    if state.metrics is not None and reference.mode == state.train_config().data.test_mode:
        trained = state.metrics
        rows.append(f"| PyTorch checkpoint (trainer's final evaluation) | {100 * trained.mAP:.2f} | "
                    f"{100 * trained.rank1:.2f} | {100 * trained.rank5:.2f} | "
                    f"{100 * (trained.mAP - reference.metrics.mAP):+.2f} | - | - | - | - |")
    for precision, report in reports.items():
        overlap = top_k_overlap(reference.distances, report.distances, k=10)
        same = float(np.mean(overlap == 1.0))
        rows.append(
            f"| {precision} ONNX | {100 * report.metrics.mAP:.2f} | {100 * report.metrics.rank1:.2f} | "
            f"{100 * report.metrics.rank5:.2f} | {100 * (report.metrics.mAP - reference.metrics.mAP):+.2f} | "
            f"{100 * overlap.mean():.2f}% | {100 * overlap.min():.0f}% | {100 * same:.1f}% | "
            f"{report.seconds:.0f} s |")
    first = reference
    body = "\n".join([
        f"`bench/bench_precision_agreement.py`, one run. {machine_description()}. Load average (1/5/15 min) "
        f"before and after each precision: {' -> '.join(loads)}.", "",
        f"Model: {first.model.split(' (')[0]} trained by `{args.checkpoint}` (epoch {first.epoch}), exported in "
        f"each precision; int8 calibrated on {args.calibration_tracklets} tracklets of `{args.calibration}` (the "
        f"training split). Evaluated with `python -m training evaluate --onnx`'s code: {first.dataset}, "
        f"{first.num_query} queries against {first.num_gallery} gallery tracklets, test-time mode {first.mode} "
        f"(T={first.num_frames}), onnxruntime CPU with {args.threads} threads. Top-10 overlap: per query, the "
        "share of fp32's 10 nearest gallery tracklets (squared l2, whole gallery) that the precision also "
        "ranks in its top 10; mean, worst query, and the share of queries whose top 10 is the same set.", "",
        "| model | mAP | rank-1 | rank-5 | mAP vs fp32 (points) | top-10 overlap with fp32 | worst query "
        "| queries with the same top 10 | evaluation time |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        "Command:", "",
        "```bash",
        "PYTHONPATH=$PWD OMP_NUM_THREADS=2 nice -n 10 python bench/bench_precision_agreement.py \\",
        f"    --checkpoint {args.checkpoint} --calibration {args.calibration}"
        + (f" --precisions {' '.join(args.precisions)}" if args.precisions != ["fp32", "int8", "fp16"] else "")
        + (f" --mode {args.mode}" if args.mode else ""),
        "```", "",
        "Each model alone: `python -m training evaluate --onnx MODEL.onnx` (its card names the checkpoint).",
    ])
    write_section(args.out, f"Agreement through the evaluation: {first.model.split(' (')[0]} trained "
                            f"{first.epoch} epochs ({args.checkpoint.name}), {first.mode}", body)
    print(body)
    print("export seconds:", {key: round(value) for key, value in export_seconds.items()})


if __name__ == "__main__":
    main()
