"""Test-time modes on long tracklets, with the T x max_clips cap and without it.

The synthetic ablation's tracklets have 8-16 frames, so with T=4 they never reach the cap of
T x MAX_TEST_CLIPS = 16 frames: its comparison of the four modes says nothing about tracklets longer than
that (MARS averages about 60 frames). This script scores trained ablation checkpoints on a test set of
long tracklets in all four modes twice: capped (``data.max_test_clips: 4``, the default and what the
service does: thin to 16 chunk centres first) and uncapped (``data.max_test_clips: null``, every frame).
One backbone pass per (checkpoint, cap) serves the four modes (training.test_time).

    python -m training synthetic --root data/synthetic-long --identities 400 --min-frames 24 --max-frames 64
    python bench/bench_test_time_long.py --root data/synthetic-long --out bench/test_time_long \
        --checkpoints bench/ablation_runs/mg-rafa-n4/seed1/final.pt ...

Each checkpoint's result is saved as OUT/<run>.json (a finished one is skipped, so several processes can
share the list); the table OUT.md is rebuilt from every JSON in OUT at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine_description  # noqa: E402
from models import MAX_TEST_CLIPS  # noqa: E402

MODES = ("centres", "strided", "consecutive", "all")
CAPS = {"capped": MAX_TEST_CLIPS, "uncapped": None}


def run_name(checkpoint: Path) -> str:
    """``bench/ablation_runs/mg-rafa-n4/seed1/final.pt`` -> ``mg-rafa-n4-seed1``."""
    return f"{checkpoint.parent.parent.name}-{checkpoint.parent.name}"


def measure(checkpoint: Path, root: Path) -> dict:
    import torch

    from training.architecture import head_label
    from training.checkpoint import load_checkpoint
    from training.loaders import load_config_dataset
    from training.test_time import evaluate_modes

    saved = load_checkpoint(checkpoint)
    config = saved.train_config()
    model = saved.build_model("cpu")
    dataset = load_config_dataset(config, root)
    frames = [len(t.frames) for t in (*dataset.query, *dataset.gallery)]
    result = {
        "checkpoint": str(checkpoint),
        "label": head_label(config.model.head, config.model.granularities, config.model.splits,
                            config.model.reduction, config.model.reference),  # fmt: skip
        "seed": config.seed,
        "num_frames": config.data.num_frames,
        "test_frames": {"min": min(frames), "max": max(frames), "mean": sum(frames) / len(frames)},
        "queries": len(dataset.query),
        "gallery": len(dataset.gallery),
        "torch_threads": torch.get_num_threads(),
    }
    for name, cap in CAPS.items():
        capped = dataclasses.replace(config, data=dataclasses.replace(config.data, max_test_clips=cap, num_workers=0))
        start = time.perf_counter()
        scores = evaluate_modes(model, dataset, capped, MODES, progress=False)
        result[name] = {
            "max_clips": cap,
            "wall_s": round(time.perf_counter() - start, 1),
            "modes": {mode: {"mAP": s.metrics.mAP, "rank1": s.metrics.rank1} for mode, s in scores.items()},
        }
        print(f"{run_name(checkpoint)} {name}: " + ", ".join(
            f"{mode} {100 * s.metrics.mAP:.1f}" for mode, s in scores.items()), flush=True)  # fmt: skip
    return result


def best_modes(modes: dict) -> list[str]:
    """The modes whose mAP, rounded as the table prints it, is the highest."""
    top = max(round(100 * modes[m]["mAP"], 1) for m in MODES)
    return [m for m in MODES if round(100 * modes[m]["mAP"], 1) == top]


def table(results: list[dict]) -> str:
    first = results[0]
    frames = first["test_frames"]
    cap = first["capped"]["max_clips"]
    lines = [
        f"# Test-time modes on long tracklets: the T x {cap} cap against every frame",
        "",
        f"Machine: {machine_description()}; torch threads per process: {first['torch_threads']} (wall times "
        "depend on what else ran: the committed runs were two such processes side by side on 2 cores). Test set: "
        f"{first['queries']} queries, {first['gallery']} gallery tracklets "
        f"of {frames['min']}-{frames['max']} frames (mean {frames['mean']:.1f}), T={first['num_frames']}, so the "
        f"cap keeps {first['num_frames'] * cap} chunk centres of each tracklet. Reproduce: the commands at the "
        "top of bench/bench_test_time_long.py.",
        "",
        f"mAP / rank-1 (%), capped (max_clips {cap}, the default) -> uncapped (every frame):",
        "",
        "| Model | seed | " + " | ".join(MODES) + " | wall s (capped / uncapped) |",
        "|---|---|" + "---:|" * len(MODES) + "---:|",
    ]
    for r in results:
        cells = []
        for mode in MODES:
            a, b = (r[name]["modes"][mode] for name in CAPS)
            cells.append(" -> ".join(f"{100 * x['mAP']:.1f} / {100 * x['rank1']:.1f}" for x in (a, b)))
        walls = f"{r['capped']['wall_s']:.0f} / {r['uncapped']['wall_s']:.0f}"
        lines.append(f"| {r['label']} | {r['seed']} | " + " | ".join(cells) + f" | {walls} |")
    lines += ["", "Best mode by mAP in each run (modes tied at one decimal all named):", ""]
    for r in results:
        best = {name: ", ".join(f"`{m}`" for m in best_modes(r[name]["modes"])) for name in CAPS}
        lines.append(f"- {r['label']} seed {r['seed']}: capped {best['capped']}; uncapped {best['uncapped']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="a long-tracklet dataset in the MARS layout")
    parser.add_argument("--checkpoints", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/test_time_long"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for checkpoint in args.checkpoints:
        target = args.out / f"{run_name(checkpoint)}.json"
        if target.is_file():
            continue
        target.write_text(json.dumps(measure(checkpoint, args.root), indent=2) + "\n")
    results = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))]
    if results:
        order = {"Baseline": 0}
        results.sort(key=lambda r: (order.get(r["label"], 1), r["label"], r["seed"]))
        args.out.with_suffix(".md").write_text(table(results))
        print(f"wrote {args.out.with_suffix('.md')} ({len(results)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
