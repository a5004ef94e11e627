"""The ablation runner: one config trained with several heads (and seeds), results side by side like Table 2.

    python -m training ablation --config training/configs/synthetic.yaml \\
        --heads baseline mg-afa:4 sg-rafa:1 mg-rafa:4 --seeds 0 1 2 --out runs/ablation

A head spec is ``NAME[:NUMBER][,reference=temporal|frame|all][,s=REDUCTION]``: ``mg-rafa:4`` is
MG-RAFA(N=4), ``sg-rafa:4`` SG-RAFA(S=4), ``sg-rafa:1,reference=all`` the all-nodes reference of Table 3,
``mg-rafa:4,s=8`` the reduction ratio 8. Every head is trained with the same data, schedule and losses
into ``OUT/<head>/`` (``OUT/<head>/seed<k>/`` with ``--seeds``), then evaluated in every test-time mode
with one backbone pass (:mod:`training.test_time`). The table (``ablation.md``: mean ± std over seeds,
and the modes side by side) and its data (``ablation.json``) go to ``OUT``. A run that already finished
(``result.json``) is not trained again with ``--resume``, so an interrupted ablation can be restarted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.architecture import DEFAULT_REDUCTION, HEAD_NAMES, REFERENCES, head_label
from training.config import TrainConfig, load_config
from training.data.sampling import TEST_MODES, canonical_test_mode
from training.evaluation import RetrievalMetrics

log = logging.getLogger(__name__)

#: The four heads of the issue's ablation (the paper's Table 2 rows without SG-RAFA(S=4) and N=2).
DEFAULT_HEADS = ("baseline", "mg-afa:4", "sg-rafa:1", "mg-rafa:4")

#: The paper's MARS results (mAP, rank-1; Table 2, and Table 3's all-nodes reference), by head spec.
PAPER_MARS = {
    "baseline": (82.1, 85.9),
    "mg-afa:4": (82.5, 86.6),
    "sg-rafa:1": (85.1, 87.8),
    "sg-rafa:4": (84.9, 88.4),
    "mg-rafa:2": (85.5, 88.4),
    "mg-rafa:4": (85.9, 88.8),
    "sg-rafa:1,reference=all": (84.3, 87.3),
}
#: The comparisons the paper draws (Sections 4.3.1, 4.3.2), and the ones the ablation adds: (A, B, what
#: A - B measures). The report shows each where both heads have runs, paired by seed.
COMPARISONS = (
    ("mg-rafa:4", "baseline", "the MG-RAFA module"),
    ("mg-rafa:4", "mg-afa:4", "relations (attention from relations vs from appearance alone)"),
    ("mg-rafa:4", "sg-rafa:1", "multiple granularities vs one"),
    ("mg-rafa:4", "sg-rafa:4", "granularities vs as many masks at one granularity"),
    ("mg-afa:4", "baseline", "attention without relations"),
    ("sg-rafa:1", "mg-afa:4", "single-granularity relations vs multi-granularity appearance"),
    ("mg-rafa:4", "mg-rafa:2", "N=4 vs N=2"),
    ("mg-rafa:2", "mg-rafa:1", "N=2 vs N=1"),
    ("mg-rafa:3", "mg-rafa:2", "N=3 vs N=2"),
    ("mg-rafa:4", "mg-rafa:3", "N=4 vs N=3"),
    ("sg-rafa:1", "sg-rafa:1,reference=all", "temporal-average reference vs all nodes (Table 3)"),
    ("sg-rafa:1", "sg-rafa:1,reference=frame", "temporal-average reference vs per-frame references"),
    ("mg-rafa:4", "mg-rafa:4,s=8", "reduction ratio s=6 vs s=8"),
)


@dataclass(frozen=True)
class HeadSpec:
    """One row of the ablation: a head, its N (MG heads) or S (SG-RAFA), reduction s and reference set."""

    head: str
    granularities: int
    splits: int
    reduction: int = DEFAULT_REDUCTION
    reference: str = "temporal"

    @classmethod
    def parse(cls, spec: str) -> HeadSpec:
        """"mg-rafa:4" -> MG-RAFA with N=4 (S=1); "sg-rafa:4" sets S; no number: N=4, or S=1 for SG-RAFA.

        Options after commas: ``s=8`` (reduction ratio), ``reference=frame`` (see ``training.rafa.REFERENCES``).
        """
        base, *options = spec.lower().split(",")
        name, _, number = base.partition(":")
        if name not in HEAD_NAMES:
            raise ValueError(f"unknown head {name!r} in {spec!r}; choose one of {', '.join(HEAD_NAMES)}")
        if number and not number.isdigit():
            raise ValueError(f"{spec!r}: the number after ':' is N (MG heads) or S (SG-RAFA), e.g. mg-rafa:4")
        value = int(number) if number else (1 if name == "sg-rafa" else 4)
        extra: dict[str, Any] = {}
        for option in options:
            key, _, text = option.partition("=")
            if key == "s" and text.isdigit() and int(text) > 0:
                extra["reduction"] = int(text)
            elif key == "reference" and text in REFERENCES:
                extra["reference"] = text
            else:
                raise ValueError(f"{spec!r}: unknown option {option!r}; use s=N or reference={'|'.join(REFERENCES)}")
        if name == "sg-rafa":
            return cls(name, granularities=1, splits=value, **extra)
        return cls(name, granularities=value, splits=1, **extra)

    @property
    def slug(self) -> str:
        """The run folder's name: baseline, mg-rafa-n4, sg-rafa-s1, sg-rafa-s1-ref-all, mg-rafa-n4-r8, ..."""
        if self.head == "baseline":
            return "baseline"
        slug = f"sg-rafa-s{self.splits}" if self.head == "sg-rafa" else f"{self.head}-n{self.granularities}"
        if self.reference != "temporal":
            slug += f"-ref-{self.reference}"
        if self.reduction != DEFAULT_REDUCTION:
            slug += f"-r{self.reduction}"
        return slug

    @property
    def label(self) -> str:
        return head_label(self.head, self.granularities, self.splits, self.reduction, self.reference)

    @property
    def modes(self) -> tuple[str, ...]:
        """Test-time modes this head can run (the all-nodes reference is built for one T)."""
        return tuple(mode for mode in TEST_MODES if not (mode == "all" and self.reference == "all"))

    def apply(self, config: TrainConfig, seed: int | None = None) -> TrainConfig:
        """``config`` with this head (and ``seed``), named after it."""
        model = dataclasses.replace(
            config.model, head=self.head, granularities=self.granularities, splits=self.splits,
            reduction=self.reduction, reference=self.reference,
            reference_frames=config.data.num_frames if self.reference == "all" else None,
        )  # fmt: skip
        seed = config.seed if seed is None else seed
        return dataclasses.replace(config, model=model, name=f"{config.name}-{self.slug}", seed=seed)


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
    seed: int | None = None
    reduction: int = DEFAULT_REDUCTION
    reference: str = "temporal"
    #: The test-time mode of ``metrics``; ``modes`` holds the metrics of every mode evaluated.
    test_mode: str = "centres"
    modes: dict[str, RetrievalMetrics] = field(default_factory=dict)
    #: The command line that reproduces this row.
    command: str | None = None

    @property
    def spec_key(self) -> HeadSpec:
        return HeadSpec(self.head, self.granularities, self.splits, self.reduction, self.reference)

    def as_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["metrics"] = self.metrics.as_dict() if self.metrics is not None else None
        values["modes"] = {mode: metrics.as_dict() for mode, metrics in self.modes.items()}
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> AblationRow:
        metrics = values.get("metrics")
        modes = {mode: RetrievalMetrics.from_dict(m) for mode, m in (values.get("modes") or {}).items()}
        return cls(**{**values, "metrics": RetrievalMetrics.from_dict(metrics) if metrics else None, "modes": modes})


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
    threads = torch.get_num_threads()
    text = f"{cpu}, {cores} cores, torch {torch.__version__} with {threads} thread{'s' if threads != 1 else ''}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    else:
        text += ", no GPU"
    return text


def train_and_evaluate(config: TrainConfig, head: HeadSpec, run_dir: Path, resume: bool) -> AblationRow:
    """Train one (head, seed) run, then evaluate its final network in every mode the head can run."""
    from training.checkpoint import load_checkpoint
    from training.distributed import resolve_device
    from training.loaders import load_config_dataset
    from training.test_time import evaluate_modes
    from training.trainer import train

    # No evaluation inside the run: the one below scores every test-time mode with one backbone pass.
    result = train(dataclasses.replace(config, eval_every=0, eval_at_end=False), run_dir,
                   resume=resume and (run_dir / "last.pt").is_file())  # fmt: skip
    model = load_checkpoint(result.final_checkpoint).build_model(resolve_device(config.device))
    modes = evaluate_modes(model, load_config_dataset(config), config, head.modes)
    default_mode = canonical_test_mode(config.data.test_mode)
    head_params, total_params = head_parameters(config)
    return AblationRow(
        label=result.label, spec="", head=head.head, granularities=head.granularities, splits=head.splits,
        metrics=modes[default_mode].metrics if default_mode in modes else None,
        cmc=modes[default_mode].cmc if default_mode in modes else None,
        epochs=result.epochs, wall_time_s=result.wall_time_s, head_parameters=head_params,
        total_parameters=total_params, checkpoint=result.final_checkpoint, seed=config.seed,
        reduction=head.reduction, reference=head.reference, test_mode=default_mode,
        modes={mode: value.metrics for mode, value in modes.items()},
    )  # fmt: skip


def run_ablation(
    config: TrainConfig,
    heads: list[str],
    output_dir: str | Path,
    resume: bool = False,
    seeds: list[int] | None = None,
    command: str | None = None,
    report_only: bool = False,
    config_args: list[str] | None = None,
) -> list[AblationRow]:
    """Train ``config`` once per head spec (and seed); returns one row per run, writes ablation.md / .json.

    With ``seeds`` the runs go to ``OUT/<head>/seed<k>`` (seed-major order, so partial tables compare
    all heads), otherwise (the config's seed) to ``OUT/<head>``. ``report_only`` trains nothing: the
    tables hold the runs that have finished (runs trained by several processes side by side, each on its
    own heads and seeds, are gathered this way). With ``config_args`` (``--config PATH`` and any ``--set``) the
    table gives each row the command that reproduces it.
    """
    from training.distributed import DistributedContext

    output_dir = Path(output_dir)
    is_main = DistributedContext.from_environment().is_main
    rows = []
    consistent = True  # every reused run was trained with what this command would train
    for seed in seeds or [None]:
        for spec in heads:
            head = HeadSpec.parse(spec)
            run_config = head.apply(config, seed)
            run_dir = output_dir / head.slug / (f"seed{seed}" if seeds else "")
            result_path = run_dir / "result.json"
            if (resume or report_only) and result_path.is_file():
                with open(result_path, encoding="utf-8") as handle:
                    row = AblationRow.from_json(json.load(handle))
                log.info("%s (seed %s): already trained, reusing %s", row.label, row.seed, result_path)
                saved_config = run_dir / "config.yaml"
                if saved_config.is_file() and trained_as(load_config(saved_config)) != trained_as(run_config):
                    log.warning(
                        "%s (seed %s) was trained with another config than this command's (%s): the table lists "
                        "the command lines the runs recorded instead of per-row commands", row.label, row.seed,
                        saved_config,
                    )  # fmt: skip
                    consistent = False
            elif report_only:
                log.info("%s (seed %s): not trained yet, left out of the tables", head.label, seed)
                continue
            else:
                log.info("ablation: training %s (seed %d) into %s", head.label, run_config.seed, run_dir)
                row = dataclasses.replace(train_and_evaluate(run_config, head, run_dir, resume), spec=spec,
                                          command=command)  # fmt: skip
                if is_main:
                    with open(result_path, "w", encoding="utf-8") as handle:
                        json.dump(row.as_json(), handle, indent=2)
            rows.append(row)
            if is_main:
                write_tables(rows, config, output_dir, config_args if seeds and consistent else None)
    return rows


def trained_as(config: TrainConfig) -> dict[str, Any]:
    """What decides a run's training: the config without the evaluation-only settings (the test-time mode,
    its batch size, data workers, evaluating at the end), which the ablation sets or measures itself."""
    values = config.to_dict()
    values.pop("eval_at_end", None)
    values["data"] = {key: value for key, value in values["data"].items()
                      if key not in ("test_mode", "test_batch_size", "num_workers")}  # fmt: skip
    return values


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def mean_std(values: list[float]) -> str:
    """Fractions as percent: '61.2 ± 1.3' (mean ± sample std) over several values, '61.2' for one."""
    percent = 100 * np.asarray(values, dtype=np.float64)
    if len(percent) == 1:
        return f"{percent[0]:.1f}"
    return f"{percent.mean():.1f} ± {percent.std(ddof=1):.1f}"


def group_rows(rows: list[AblationRow]) -> list[list[AblationRow]]:
    """Rows of the same head configuration together (one per seed), in first-seen order."""
    groups: dict[HeadSpec, list[AblationRow]] = {}
    for row in rows:
        groups.setdefault(row.spec_key, []).append(row)
    return list(groups.values())


def row_commands(groups: list[list[AblationRow]], config_args: list[str], output_dir: str | Path) -> list[str]:
    """Per row of the table, the command that trains (or, with ``--resume``, completes) exactly its runs."""
    lines = []
    for group in groups:
        seeds = [str(row.seed) for row in group if row.seed is not None]
        arguments = [*config_args, "--heads", group[0].spec, *(["--seeds", *seeds] if seeds else []),
                     "--out", str(output_dir), "--resume"]  # fmt: skip
        named = f", seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}" if seeds else ""
        lines += [f"# {group[0].label}{named}",
                  "python -m training ablation " + shlex.join(arguments)]  # fmt: skip
    return lines


def metrics_in(row: AblationRow, mode: str) -> RetrievalMetrics | None:
    """A run's metrics in ``mode`` (from its every-mode results), None when it never measured that mode."""
    return row.modes.get(mode, row.metrics if row.test_mode == mode else None)


def paired_comparisons(groups: list[list[AblationRow]], mode: str) -> list[str]:
    """The paper's comparisons (:data:`COMPARISONS`) as differences A - B, paired by seed, beside the paper's.

    A seed fixes the backbone's initialisation, the batches and the augmentation draws for every head, so
    the difference within a seed isolates the head; its mean ± std over the shared seeds is the estimate.
    """
    by_spec = {group[0].spec_key: group for group in groups}

    lines = []
    for first, second, meaning in COMPARISONS:
        a, b = by_spec.get(HeadSpec.parse(first)), by_spec.get(HeadSpec.parse(second))
        if a is None or b is None:
            continue
        of_b = {row.seed: metrics_in(row, mode) for row in b}
        triples = [(row.seed, metrics_in(row, mode), of_b.get(row.seed)) for row in a]
        triples = [(seed, x, y) for seed, x, y in triples if x is not None and y is not None]
        if not triples:
            continue
        seeds = [str(seed) for seed, _, _ in triples]
        pairs = [(x, y) for _, x, y in triples]
        map_diff = [x.mAP - y.mAP for x, y in pairs]
        rank1_diff = [x.rank1 - y.rank1 for x, y in pairs]
        paper = PAPER_MARS.get(first), PAPER_MARS.get(second)
        if paper[0] and paper[1]:
            paper_map, paper_rank1 = paper[0][0] - paper[1][0], paper[0][1] - paper[1][1]
            mean = float(np.mean(map_diff))
            order = "same" if mean * paper_map > 0 else ("reversed" if mean * paper_map < 0 else "tie")
            if len(map_diff) > 1 and abs(mean) < np.std(map_diff, ddof=1):
                order += " (within a std)"
            paper_cells = f"{paper_map:+.1f} / {paper_rank1:+.1f} | {order}"
        else:
            paper_cells = "not in the paper | -"
        label = f"{a[0].label} - {b[0].label}"
        lines.append(
            f"| {label} | {meaning} | {', '.join(seeds)} | {signed_mean_std(map_diff)} | "
            f"{signed_mean_std(rank1_diff)} | {paper_cells} |"
        )
    if not lines:
        return []
    return [
        "",
        f"Paired by seed (same backbone initialisation, batches and augmentation), `{mode}`: differences in "
        "points, mean ± std over the seeds both heads have; the paper's on MARS (Tables 2 and 3):",
        "",
        "| A - B | measures | seeds | mAP | Rank-1 | paper mAP / Rank-1 | order vs paper (mAP) |",
        "|---|---|---|---:|---:|---:|---|",
        *lines,
    ]


def signed_mean_std(values: list[float]) -> str:
    """Differences of fractions as signed points: '+2.1 ± 1.3' over several, '+2.1' for one."""
    points = 100 * np.asarray(values, dtype=np.float64)
    if len(points) == 1:
        return f"{points[0]:+.1f}"
    return f"{points.mean():+.1f} ± {points.std(ddof=1):.1f}"


def ablation_markdown(
    rows: list[AblationRow],
    config: TrainConfig,
    machine: str,
    config_args: list[str] | None = None,
    output_dir: str | Path | None = None,
) -> str:
    """The Table-2-style table (metrics in %, mean ± std over seeds) and the test-time modes side by side.

    With ``config_args`` and ``output_dir``, each row's reproducing command is generated from its head spec
    and seeds; otherwise the command lines recorded in the runs are listed.
    """
    model, data = config.model, config.data
    default_mode = canonical_test_mode(data.test_mode)
    lines = [
        f"# Ablation on {data.dataset}: {model.backbone}, {model.height}x{model.width}, T={data.num_frames}, "
        f"{config.optim.epochs} epochs, P={config.sampler.num_identities} x Z={config.sampler.tracklets_per_identity}",
        "",
        f"Config `{config.name}`, test-time mode `{default_mode}`. Machine: {machine}.",
        "",
        "| Model | Seeds | mAP | Rank-1 | Rank-5 | Rank-10 | Rank-20 | Head params | Wall time (mean) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups = group_rows(rows)
    for group in groups:
        seeds = ", ".join(str(row.seed) for row in group)
        # The config's test-time mode, from the runs' every-mode results (a run trained while another mode was
        # the default still has it); a run without it shows n/a rather than another mode's numbers.
        chosen = [metrics_in(row, default_mode) for row in group]
        if all(metrics is not None for metrics in chosen):
            keys = ("mAP", "rank1", "rank5", "rank10", "rank20")
            cells = [mean_std([getattr(metrics, key) for metrics in chosen]) for key in keys]
        else:
            cells = ["n/a"] * 5
        wall = float(np.mean([row.wall_time_s for row in group]))
        lines.append(
            f"| {group[0].label} | {seeds} | {' | '.join(cells)} | {group[0].head_parameters / 1e6:.3f} M | "
            f"{format_duration(wall)} |"
        )
    if any(row.modes for row in rows):
        lines += [
            "",
            "Test-time modes, mAP / Rank-1 (%):",
            "",
            "| Model | Seeds | " + " | ".join(TEST_MODES) + " |",
            "|---|---|" + "---:|" * len(TEST_MODES),
        ]
        for group in groups:
            cells = []
            for mode in TEST_MODES:
                values = [row.modes[mode] for row in group if mode in row.modes]
                if values and len(values) == len(group):
                    cells.append(f"{mean_std([v.mAP for v in values])} / {mean_std([v.rank1 for v in values])}")
                else:
                    cells.append("n/a")
            lines.append(f"| {group[0].label} | {', '.join(str(row.seed) for row in group)} | {' | '.join(cells)} |")
    lines += paired_comparisons(groups, default_mode)
    if config_args is not None and output_dir is not None:
        lines += ["", "Reproduce each row (a finished run is reused, an interrupted one resumed):", "", "```",
                  *row_commands(groups, config_args, output_dir), "```"]  # fmt: skip
    else:
        commands = list(dict.fromkeys(row.command for row in rows if row.command))
        if commands:
            lines += ["", "Reproduce:", "", "```", *commands, "```"]
    return "\n".join(lines) + "\n"


def write_tables(
    rows: list[AblationRow], config: TrainConfig, output_dir: Path, config_args: list[str] | None = None
) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    table = ablation_markdown(rows, config, machine, config_args, output_dir if config_args is not None else None)
    (output_dir / "ablation.md").write_text(table, encoding="utf-8")
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
    parser.add_argument(
        "--seeds", nargs="+", type=int, metavar="SEED",
        help="train every head once per seed into OUT/<head>/seed<k>; the table shows mean ± std",
    )  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="skip finished heads, resume an interrupted one")
    parser.add_argument(
        "--report-only", action="store_true",
        help="train nothing: write the tables from the runs of OUT that have finished",
    )  # fmt: skip


def run_from_args(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    for spec in args.heads:
        HeadSpec.parse(spec)  # fail before hours of training, not after
    seeds = ["--seeds", *map(str, args.seeds)] if args.seeds else []
    config_args = ["--config", str(args.config), *[item for override in args.overrides for item in ("--set", override)]]
    command = "python -m training ablation " + shlex.join([*config_args, "--heads", *args.heads, *seeds,
                                                          "--out", str(args.out)])  # fmt: skip
    rows = run_ablation(config, args.heads, args.out, resume=args.resume, seeds=args.seeds, command=command,
                        report_only=args.report_only, config_args=config_args)  # fmt: skip
    from training.distributed import DistributedContext

    if DistributedContext.from_environment().is_main:
        print((args.out / "ablation.md").read_text(encoding="utf-8"))
        heads = len(group_rows(rows))
        print(f"wrote {args.out / 'ablation.md'} and {args.out / 'ablation.json'} ({len(rows)} runs of {heads} heads)")
    return 0
