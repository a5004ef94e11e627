"""Reproduce the #GFLOPs column of the paper's Table 2 by counting the real modules.

The paper's '#GFLOPs' are multiply-accumulates (ResNet-50 on 8 frames of 256x128 with last stride 1
is 32.4 G MACs, the paper says 32.694). We run the network under ``torch.utils.flop_counter`` on the
meta device (shapes only, no arithmetic), so the counts come from the very modules that are trained
and exported, and halve its FLOP count (it counts a multiply-accumulate as two FLOPs).

    python -m training.complexity            # table beside the paper's numbers
    python -m training.complexity --json     # {"baseline": G, "MG-AFA(N=4)": G, ...} (heads: added cost)
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from training.architecture import DEFAULT_REDUCTION
from training.model import ModelConfig, build_model
from training.rafa import build_head

#: The paper's Table 2: baseline total and the cost each head adds, in G multiply-accumulates.
PAPER_TABLE2 = {
    "baseline": 32.694,
    "MG-AFA(N=4)": 0.095,
    "SG-RAFA(S=1)": 2.301,
    "SG-RAFA(S=4)": 0.615,
    "MG-RAFA(N=2)": 0.742,
    "MG-RAFA(N=4)": 0.212,
}

#: (label, head name, keyword arguments) of the heads in Table 2's order.
TABLE2_HEADS = (
    ("MG-AFA(N=4)", "mg-afa", {"granularities": 4}),
    ("SG-RAFA(S=1)", "sg-rafa", {"splits": 1}),
    ("SG-RAFA(S=4)", "sg-rafa", {"splits": 4}),
    ("MG-RAFA(N=2)", "mg-rafa", {"granularities": 2}),
    ("MG-RAFA(N=4)", "mg-rafa", {"granularities": 4}),
)


def count_macs(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (the counter's FLOPs / 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def table2_macs(
    backbone: str = "resnet50",
    num_frames: int = 8,
    height: int = 256,
    width: int = 128,
    reduction: int = DEFAULT_REDUCTION,
) -> dict[str, float]:
    """Baseline (backbone + average pooling) total and each head's added cost, in G MACs."""
    config = ModelConfig(backbone=backbone, head="baseline", height=height, width=width, reduction=reduction)
    with torch.device("meta"):
        model = build_model(config).eval()
        frames = torch.empty(1, num_frames, 3, height, width)
        results = {"baseline": count_macs(model, frames) / 1e9}
        feature_maps = torch.empty(1, num_frames, config.channels, *config.feature_size)
        for label, name, kwargs in TABLE2_HEADS:
            head = build_head(name, config.channels, config.feature_size, reduction=reduction, **kwargs).eval()
            results[label] = count_macs(head, feature_maps) / 1e9
    return results


def format_table(results: dict[str, float], compare_to_paper: bool = True) -> str:
    rows = ["| Model | #GMACs (ours) | #GFLOPs (paper) | ours / paper |", "|---|---:|---:|---:|"]
    for label, value in results.items():
        sign = "" if label == "baseline" else "+"
        paper = PAPER_TABLE2.get(label) if compare_to_paper else None
        paper_cell = f"{sign}{paper:.3f}" if paper is not None else "-"
        ratio_cell = f"{value / paper:.3f}" if paper else "-"
        rows.append(f"| {label} | {sign}{value:.3f} | {paper_cell} | {ratio_cell} |")
    sg, mg, base = results["SG-RAFA(S=1)"], results["MG-RAFA(N=4)"], results["baseline"]
    rows.append("")
    rows.append(f"MG-RAFA(N=4) / SG-RAFA(S=1) = {100 * mg / sg:.1f}% (paper: 9.2%)")
    rows.append(f"MG-RAFA(N=4) / baseline = {100 * mg / base:.2f}% (paper: {100 * 0.212 / 32.694:.2f}%, '<1%')")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.complexity",
        description="Multiply-accumulate counts of the backbone and of each aggregation head (paper Table 2).",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet18", "resnet34"])
    parser.add_argument("--frames", type=int, default=8, help="T")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--reduction", type=int, default=DEFAULT_REDUCTION, help="reduction ratio s")
    args = parser.parse_args(argv)
    results = table2_macs(args.backbone, args.frames, args.height, args.width, args.reduction)
    if args.json:
        print(json.dumps({label: round(value, 6) for label, value in results.items()}))
        return 0
    paper_setting = (args.backbone, args.frames, args.height, args.width) == ("resnet50", 8, 256, 128)
    print(f"{args.backbone}, last stride 1, T={args.frames}, {args.height}x{args.width}, reduction s={args.reduction}")
    print("Heads: the cost they ADD to the baseline. 1 MAC = 1 multiply-accumulate (the paper's 'FLOP').")
    print(format_table(results, compare_to_paper=paper_setting))
    return 0


if __name__ == "__main__":
    sys.exit(main())
