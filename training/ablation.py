"""The ablation runner: one config trained with several heads, results side by side like the paper's Table 2.

    python -m training ablation --config training/configs/synthetic.yaml \\
        --heads baseline mg-afa:4 sg-rafa:1 mg-rafa:4 --out runs/ablation

Every head is trained with the same seed, data, schedule and losses into ``OUT/<head>/``; the table
(``ablation.md``) and its data (``ablation.json``) go to ``OUT``. A head whose run already finished
(``OUT/<head>/result.json``) is not trained again, so an interrupted ablation can be restarted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.architecture import HEAD_NAMES, head_label
from training.config import TrainConfig, load_config
from training.evaluation import RetrievalMetrics

log = logging.getLogger(__name__)

#: The four heads of the issue's ablation (the paper's Table 2 rows without SG-RAFA(S=4) and N=2).
DEFAULT_HEADS = ("baseline", "mg-afa:4", "sg-rafa:1", "mg-rafa:4")


@dataclass(frozen=True)
class HeadSpec:
    """One row of the ablation: a head and its N (MG heads) or S (SG-RAFA)."""

    head: str
    granularities: int
    splits: int

    @classmethod
    def parse(cls, spec: str) -> HeadSpec:
        """"mg-rafa:4" -> MG-RAFA with N=4 (S=1); "sg-rafa:4" sets S; no number: N=4, or S=1 for SG-RAFA."""
        name, _, number = spec.lower().partition(":")
        if name not in HEAD_NAMES:
            raise ValueError(f"unknown head {name!r} in {spec!r}; choose one of {', '.join(HEAD_NAMES)}")
        if number and not number.isdigit():
            raise ValueError(f"{spec!r}: the number after ':' is N (MG heads) or S (SG-RAFA), e.g. mg-rafa:4")
        value = int(number) if number else (1 if name == "sg-rafa" else 4)
        if name == "sg-rafa":
            return cls(name, granularities=1, splits=value)
        return cls(name, granularities=value, splits=1)

    @property
    def slug(self) -> str:
        """The run folder's name: baseline, mg-rafa-n4, sg-rafa-s1, ..."""
        if self.head == "baseline":
            return "baseline"
        if self.head == "sg-rafa":
            return f"sg-rafa-s{self.splits}"
        return f"{self.head}-n{self.granularities}"

    @property
    def label(self) -> str:
        return head_label(self.head, self.granularities, self.splits)

    def apply(self, config: TrainConfig) -> TrainConfig:
        """``config`` with this head, named after it."""
        model = dataclasses.replace(
            config.model, head=self.head, granularities=self.granularities, splits=self.splits
        )
        return dataclasses.replace(config, model=model, name=f"{config.name}-{self.slug}")


@dataclass
class AblationRow:
    """One trained head; ``result.json`` of its run folder and one row of ablation.json."""

    label: str
    spec: str
    head: str
    granularities: int
    splits: int
    metrics: RetrievalMetrics | None
    cmc: list[float] | None
    epochs: int
    wall_time_s: float
    head_parameters: int
    total_parameters: int
    checkpoint: str | None

    def as_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["metrics"] = self.metrics.as_dict() if self.metrics is not None else None
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> AblationRow:
        metrics = values.get("metrics")
        return cls(**{**values, "metrics": RetrievalMetrics.from_dict(metrics) if metrics else None})


def head_parameters(config: TrainConfig) -> tuple[int, int]:
    """(parameters of the head, of the whole network)."""
    from training.model import build_model

    model = build_model(config.model.to_model_config())
    return sum(p.numel() for p in model.head.parameters()), sum(p.numel() for p in model.parameters())


def describe_machine() -> str:
    """CPU model and cores, or the GPU, for the record beside timings."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cpu}, {cores} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    else:
        text += ", no GPU"
    return text


def run_ablation(
    config: TrainConfig, heads: list[str], output_dir: str | Path, resume: bool = False
) -> list[AblationRow]:
    """Train ``config`` once per head spec; returns one row per head and writes ablation.md / .json."""
    from training.distributed import DistributedContext
    from training.trainer import train

    output_dir = Path(output_dir)
    is_main = DistributedContext.from_environment().is_main
    rows = []
    for spec in heads:
        head = HeadSpec.parse(spec)
        head_config = head.apply(config)
        run_dir = output_dir / head.slug
        result_path = run_dir / "result.json"
        if resume and result_path.is_file():
            with open(result_path, encoding="utf-8") as handle:
                row = AblationRow.from_json(json.load(handle))
            log.info("%s: already trained, reusing %s", row.label, result_path)
        else:
            log.info("ablation: training %s into %s", head.label, run_dir)
            result = train(head_config, run_dir, resume=resume and (run_dir / "last.pt").is_file())
            head_params, total_params = head_parameters(head_config)
            row = AblationRow(
                label=result.label,
                spec=spec,
                head=head.head,
                granularities=head.granularities,
                splits=head.splits,
                metrics=result.metrics,
                cmc=result.cmc,
                epochs=result.epochs,
                wall_time_s=result.wall_time_s,
                head_parameters=head_params,
                total_parameters=total_params,
                checkpoint=result.final_checkpoint,
            )
            if is_main:
                with open(result_path, "w", encoding="utf-8") as handle:
                    json.dump(row.as_json(), handle, indent=2)
        rows.append(row)
        if is_main:
            write_tables(rows, config, output_dir)
    return rows


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def ablation_markdown(rows: list[AblationRow], config: TrainConfig, machine: str) -> str:
    """The Table-2-style markdown table (metrics in %)."""
    model, data = config.model, config.data
    lines = [
        f"# Ablation on {data.dataset}: {model.backbone}, {model.height}x{model.width}, T={data.num_frames}, "
        f"{config.optim.epochs} epochs, P={config.sampler.num_identities} x Z={config.sampler.tracklets_per_identity}",
        "",
        f"Config `{config.name}`, seed {config.seed}, evaluation mode `{data.test_mode}`. Machine: {machine}.",
        "",
        "| Model | mAP | Rank-1 | Rank-5 | Rank-10 | Rank-20 | Head params | Wall time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.metrics is not None:
            cells = [f"{100 * value:.1f}" for value in row.metrics.as_dict().values()]
        else:
            cells = ["n/a"] * 5
        lines.append(
            f"| {row.label} | {' | '.join(cells)} | {row.head_parameters / 1e6:.3f} M | "
            f"{format_duration(row.wall_time_s)} |"
        )
    return "\n".join(lines) + "\n"


def write_tables(rows: list[AblationRow], config: TrainConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    (output_dir / "ablation.md").write_text(ablation_markdown(rows, config, machine), encoding="utf-8")
    with open(output_dir / "ablation.json", "w", encoding="utf-8") as handle:
        rows_json = [row.as_json() for row in rows]
        json.dump({"config": config.to_dict(), "machine": machine, "rows": rows_json}, handle, indent=2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML training config shared by all heads")
    parser.add_argument(
        "--heads",
        nargs="+",
        default=list(DEFAULT_HEADS),
        metavar="HEAD",
        help="heads to compare: baseline, mg-afa:N, sg-rafa:S, mg-rafa:N (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value for every head, e.g. --set optim.epochs=5 (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="skip finished heads, resume an interrupted one")


def run_from_args(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    for spec in args.heads:
        HeadSpec.parse(spec)  # fail before hours of training, not after
    rows = run_ablation(config, args.heads, args.out, resume=args.resume)
    from training.distributed import DistributedContext

    if DistributedContext.from_environment().is_main:
        print((args.out / "ablation.md").read_text(encoding="utf-8"))
        print(f"wrote {args.out / 'ablation.md'} and {args.out / 'ablation.json'} ({len(rows)} heads)")
    return 0
