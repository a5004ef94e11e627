"""What a training run writes besides checkpoints: train.log, metrics.jsonl (one line per epoch,
TensorBoard scalars too when it is installed) and the one-line epoch summary on the console."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.evaluation import RetrievalMetrics, format_metrics

log = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    """One line of metrics.jsonl."""

    epoch: int
    lr: float
    #: Mean of each loss term over the epoch ("total", "id", "triplet", "accuracy", ...).
    loss: dict[str, float]
    time_s: float = 0.0
    #: Query/gallery metrics when this epoch ended with an evaluation.
    eval: RetrievalMetrics | None = None

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"epoch": self.epoch, "lr": self.lr, "loss": self.loss}
        if self.eval is not None:
            record["eval"] = self.eval.as_dict()
        record["time_s"] = self.time_s
        return record

    def summary(self, total_epochs: int) -> str:
        """One readable line per epoch."""
        loss = self.loss
        terms = f"id {loss['id']:.3f} tri {loss['triplet']:.3f}"
        if "part_id" in loss:
            terms += f" part-id {loss['part_id']:.3f} part-tri {loss['part_triplet']:.3f}"
        line = (
            f"epoch {self.epoch:3d}/{total_epochs} | loss {loss['total']:.3f} ({terms}) | "
            f"id-acc {loss['accuracy']:.1%} | lr {self.lr:.2e} | {self.time_s:.1f} s"
        )
        if self.eval is not None:
            line += " | " + format_metrics(self.eval)
        return line


class MetricsLog:
    """metrics.jsonl, plus TensorBoard scalars when ``torch.utils.tensorboard`` imports."""

    def __init__(self, output_dir: Path, enabled: bool):
        self.path = output_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.debug("tensorboard not installed; metrics go to %s only", self.path)
            else:
                self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def write(self, record: EpochRecord) -> None:
        if not self.enabled:
            return
        values = record.as_json()
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(values) + "\n")
        if self.writer is not None:
            for key, value in flatten_numbers(values).items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, record.epoch)
            self.writer.flush()

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs after ``epoch`` (written by a run that died before its checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as handle:
            kept = [line for line in handle if line.strip() and json.loads(line)["epoch"] <= epoch]
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.writelines(kept)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def flatten_numbers(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"loss": {"id": 1.0}}`` -> ``{"loss/id": 1.0}`` (numbers only), as TensorBoard tags."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def add_file_log(output_dir: Path) -> logging.Handler:
    """Copy the log to ``output_dir/train.log`` (remove the returned handler when the run ends)."""
    handler = logging.FileHandler(output_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    return handler
