"""Command line of the training side: ``python -m training <command>`` (or the ``rafa-train`` script).

    python -m training synthetic --root data/synthetic           generate the CPU benchmark
    python -m training synthetic-footage --out data/footage      two cameras of footage with MOT ground truth
    python -m training train --config training/configs/synthetic.yaml
    python -m training evaluate --checkpoint runs/synthetic-mg-rafa/final.pt [--rerank]
    python -m training evaluate --onnx models/synthetic-int8.onnx    an export (any precision), same evaluation
    python -m training export --checkpoint runs/synthetic-mg-rafa/final.pt --out models/synthetic.onnx
    python -m training complexity
    python -m training ablation --config training/configs/synthetic.yaml --heads baseline mg-rafa:4
    python -m training attention --checkpoint runs/synthetic-mg-rafa/final.pt --tracklet DIR --out DIR

Multi-GPU / multi-node: ``torchrun --nproc_per_node 4 -m training train --config ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from models.rerank import K1, K2, LAMBDA, SHORTLIST_SIZE, RerankParameters

log = logging.getLogger(__name__)

DESCRIPTION = """\
Train, evaluate, export and compare MG-RAFA video person re-identification models.

Typical session on the CPU benchmark:
  python -m training synthetic --root data/synthetic
  python -m training train --config training/configs/synthetic.yaml --output runs/synthetic
  python -m training evaluate --checkpoint runs/synthetic/final.pt
  python -m training export --checkpoint runs/synthetic/final.pt --out models/synthetic.onnx

Run "python -m training COMMAND --help" for the options of a command.
"""


def forwarded_main(command: str) -> Callable[[list[str]], int]:
    """The ``main`` of a module whose CLI this one forwards to (imported only when used)."""
    if command == "export":
        from training.export import main
    elif command == "complexity":
        from training.complexity import main
    elif command == "synthetic-footage":
        from training.data.synthetic_footage import main
    elif command == "attention":
        from training.attention import main
    else:
        try:
            from training.data.synthetic import main
        except ImportError as error:
            raise SystemExit(f"error: the synthetic data generator is not available ({error})") from error
    return main


FORWARDED = {
    "export": "export a checkpoint (or a random network) to ONNX + model card; see 'export --help'",
    "complexity": "count the heads' multiply-accumulates (the paper's Table 2 column); see 'complexity --help'",
    "synthetic": "generate the synthetic benchmark in the MARS layout; see 'synthetic --help'",
    "synthetic-footage": "render fixed-camera footage with MOTChallenge ground truth; see 'synthetic-footage --help'",
    "attention": "render a checkpoint's attention over a tracklet per granularity (Figure 3); see 'attention --help'",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model. Checkpoints go to OUTPUT/last.pt every epoch and OUTPUT/final.pt at the end,\n"
        "per-epoch metrics to OUTPUT/metrics.jsonl, the full config to OUTPUT/config.yaml.",
        epilog="examples:\n"
        "  python -m training train --config training/configs/synthetic.yaml\n"
        "  python -m training train --config training/configs/mars.yaml --data-root /data/MARS --set amp=true\n"
        "  python -m training train --config training/configs/prid2011.yaml --data-root /data/prid_2011 --all-splits\n"
        "  torchrun --nproc_per_node 4 -m training train --config training/configs/mars.yaml   (4 GPUs, P x Z each)\n"
        "  python -m training train --config training/configs/mars.yaml --output runs/mars --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "--config", type=Path, help="YAML config, e.g. training/configs/mars.yaml (default: the MARS paper setup)"
    )
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value with a dotted key, e.g. --set optim.lr=1e-4 --set device=cpu (repeatable)",
    )
    train.add_argument("--output", type=Path, help="run folder (default: runs/<config name>)")
    train.add_argument("--data-root", help="dataset folder (same as --set data.root=...)")
    train.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
        help="continue an interrupted run exactly, from OUTPUT/last.pt or the given checkpoint",
    )
    train.add_argument("--split-id", type=int, help="which of the 10 iLIDS-VID / PRID2011 splits to train on")
    train.add_argument(
        "--all-splits", action="store_true",
        help="train and evaluate every split into OUTPUT/splitNN and report the mean CMC (and mAP) over them",
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a checkpoint on its dataset's query/gallery",
        description="Evaluate a checkpoint: CMC and mAP under the dataset's protocol, written to "
        "OUTPUT/metrics.json with a CMC curve (cmc.png) and ranked lists (ranked_lists.png).",
    )
    evaluate.add_argument("--checkpoint", type=Path,
                          help="last.pt or final.pt of a run (with --onnx: the run whose dataset and settings "
                          "to use; default: the checkpoint named in the model's card)")
    evaluate.add_argument("--onnx", type=Path, metavar="MODEL.onnx",
                          help="evaluate this exported model (fp32, fp16 or int8; its card beside it) with "
                          "onnxruntime on the CPU instead of the checkpoint's PyTorch network")
    evaluate.add_argument("--threads", type=int, default=0,
                          help="with --onnx: onnxruntime intra-op threads (default: onnxruntime's)")
    evaluate.add_argument("--data-root", help="dataset folder (default: the one the run was trained on)")
    evaluate.add_argument(
        "--mode", choices=["centres", "strided", "consecutive", "all", "test", "dense"],
        help="test-time sampling: centres (T chunk centres), strided (clip k = k-th frame of every chunk, "
        "averaged), consecutive (every frame in clips of T, averaged), all (every frame in one pass); "
        "test and dense are the old names of centres and consecutive (default: the run's)",
    )
    evaluate.add_argument("--output", type=Path, help="output folder (default: eval_<mode> beside the checkpoint)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    evaluate.add_argument("--batch-size", type=int, help="tracklets of T frames per backbone pass")
    evaluate.add_argument("--num-workers", type=int, help="data-loading processes (default: the run's)")
    evaluate.add_argument(
        "--rerank", action="store_true",
        help="k-reciprocal re-ranking (Zhong et al. 2017) on a shortlist, the same code as the service's rerank=true",
    )
    evaluate.add_argument("--rerank-k1", type=int, default=K1, help="k-reciprocal neighbours (default: %(default)s)")
    evaluate.add_argument("--rerank-k2", type=int, default=K2, help="local query expansion (default: %(default)s)")
    evaluate.add_argument("--rerank-lambda", type=float, default=LAMBDA,
                          help="weight of the original distance (default: %(default)s)")
    evaluate.add_argument("--rerank-shortlist", type=int, default=SHORTLIST_SIZE,
                          help="query neighbours whose own neighbours join the shortlist (default: %(default)s)")

    from training.ablation import add_arguments as add_ablation_arguments

    ablation = commands.add_parser(
        "ablation",
        help="train one config with several heads and tabulate them (the paper's Table 2)",
        description="Train the same config with each head and write OUT/ablation.md and OUT/ablation.json: "
        "mAP, rank-1/5/10/20 and wall time side by side.",
    )
    add_ablation_arguments(ablation)

    for name, text in FORWARDED.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


def setup_logging(verbose: bool) -> None:
    from training.distributed import DistributedContext

    # Under torchrun only rank 0 speaks, unless something goes wrong.
    is_main = DistributedContext.from_environment().is_main
    level = logging.DEBUG if verbose else (logging.INFO if is_main else logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.distributed import DistributedContext
    from training.evaluation import format_metrics
    from training.trainer import train, train_all_splits

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.split_id is not None:
        overrides.append(f"data.split_id={args.split_id}")
    config = load_config(args.config, overrides)
    output = args.output or Path("runs") / config.name
    is_main = DistributedContext.from_environment().is_main
    if args.all_splits:
        summary = train_all_splits(config, output, resume=bool(args.resume))
        if is_main and summary.mean_metrics is not None:
            print(f"mean over {len(summary.splits)} split(s) of {config.data.dataset}: "
                  f"{format_metrics(summary.mean_metrics)}  ->  {output / 'all_splits.json'}")
        return 0
    result = train(config, output, resume=args.resume)
    if is_main:
        metrics = format_metrics(result.metrics) if result.metrics else "not evaluated"
        print(f"{result.label} on {config.data.dataset}: {metrics}; "
              f"{result.wall_time_s / 60:.1f} min; checkpoint {result.final_checkpoint}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from training.evaluation import format_metrics
    from training.run_evaluation import evaluate_checkpoint, evaluate_onnx

    rerank = (RerankParameters(args.rerank_k1, args.rerank_k2, args.rerank_lambda, args.rerank_shortlist)
              if args.rerank else None)
    if args.onnx is not None:
        report = evaluate_onnx(args.onnx, checkpoint=args.checkpoint, dataset_root=args.data_root,
                               output_dir=args.output, mode=args.mode, batch_size=args.batch_size,
                               threads=args.threads, rerank=rerank)
    elif args.checkpoint is None:
        raise ValueError("evaluate needs --checkpoint (a run's last.pt or final.pt) or --onnx (an exported model)")
    else:
        report = evaluate_checkpoint(
            args.checkpoint,
            dataset_root=args.data_root,
            output_dir=args.output,
            mode=args.mode,
            device=args.device,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            rerank=rerank,
        )
    print(report.protocol)
    reranked = ", k-reciprocal re-ranked" if args.rerank else ""
    print(f"{report.model} on {report.dataset} ({report.mode}{reranked}, {report.num_query} queries, "
          f"{report.num_gallery} gallery tracklets): {format_metrics(report.metrics)}")
    pictures = "cmc.png" if args.onnx is not None else "cmc.png, ranked_lists.png"
    print(f"wrote {report.output_dir}/metrics.json, {pictures}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED:
        return forwarded_main(argv[0])(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.command == "train":
            return run_train(args)
        if args.command == "evaluate":
            return run_evaluate(args)
        from training.ablation import run_from_args

        return run_from_args(args)
    except (FileNotFoundError, KeyError, ValueError) as error:
        # Configuration and data-layout mistakes: one readable line, not a traceback.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        log.debug("traceback of the error below", exc_info=True)
        print(f"error: {message} (run with -v for the traceback)", file=sys.stderr)
        return 2
