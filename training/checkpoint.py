"""The one checkpoint format of the training side (last.pt, final.pt) and its one loader.

A checkpoint file is a plain dict of tensors, numbers, strings, lists and dicts (the training config as
a plain dict, the random states as lists and tensors), so :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``: loading never runs code from the file. Training, evaluation and
export all read checkpoints through :func:`load_checkpoint`.

``last.pt`` holds everything :class:`~training.trainer.Trainer` needs to resume (optimizer, scheduler,
gradient scaler, random states of every rank); ``final.pt`` leaves those out (they are None).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig
from training.evaluation import RetrievalMetrics
from training.model import ModelConfig, VideoReIDModel, build_model

CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    """One training checkpoint, as saved by the trainer and read by evaluate and export."""

    #: Epochs done.
    epoch: int
    #: The network's state dict.
    model: dict[str, torch.Tensor]
    #: The architecture (:class:`training.model.ModelConfig` as a dict).
    model_config: dict[str, Any]
    #: The whole training config (:class:`training.config.TrainConfig` as a plain dict).
    config: dict[str, Any]
    dataset: str
    split_id: int
    num_train_pids: int
    #: Processes that trained it (resume with another number reseeds the random states).
    world_size: int = 1
    #: The last evaluation's metrics and CMC curve (None when none ran).
    metrics: RetrievalMetrics | None = None
    cmc: list[float] | None = None
    #: The classifiers of the losses (state dict).
    criterion: dict[str, Any] | None = None
    #: What resuming needs (last.pt only).
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    #: Random states of every rank, in rank order (see :mod:`training.randomness`).
    rng: list[dict[str, Any]] | None = None
    version: int = CHECKPOINT_VERSION

    @property
    def resumable(self) -> bool:
        return self.optimizer is not None and self.rng is not None

    def without_resume_state(self) -> Checkpoint:
        """The same checkpoint minus optimizer, scheduler, scaler and random states (what final.pt holds)."""
        return dataclasses.replace(self, optimizer=None, scheduler=None, scaler=None, rng=None)

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config)

    @property
    def num_frames(self) -> int:
        """T the network was trained with."""
        return int(self.config["data"]["num_frames"])

    def build_model(self, device: torch.device | str = "cpu") -> VideoReIDModel:
        """The trained network, in eval mode on ``device``."""
        model = build_model(ModelConfig(**self.model_config))
        model.load_state_dict(self.model)
        return model.to(device).eval()

    def to_state(self) -> dict[str, Any]:
        """The plain dict written to disk (no copy of the tensors)."""
        state = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        state["metrics"] = self.metrics.as_dict() if self.metrics is not None else None
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str = "checkpoint") -> Checkpoint:
        if not isinstance(state, dict):
            raise ValueError(f"{source}: not a training checkpoint (a {type(state).__name__}, not a dict)")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(state) - known)
        if unknown:
            raise ValueError(f"{source}: unknown checkpoint entries {', '.join(unknown)}")
        if state.get("version", CHECKPOINT_VERSION) != CHECKPOINT_VERSION:
            raise ValueError(f"{source}: checkpoint version {state['version']}, this code reads {CHECKPOINT_VERSION}")
        values = dict(state)
        if values.get("metrics") is not None:
            values["metrics"] = RetrievalMetrics.from_dict(values["metrics"])
        try:
            return cls(**values)
        except TypeError as error:  # a required entry is missing
            raise ValueError(f"{source}: not a complete training checkpoint ({error})") from error

    def save(self, path: str | Path) -> None:
        """torch.save to a temporary file beside ``path``, then rename: a crash never leaves half a file."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.tmp")
        torch.save(self.to_state(), temporary)
        os.replace(temporary, path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by the trainer, on the CPU, with ``weights_only=True`` (no code runs).

    A file that is not one (truncated, another format) is a ValueError naming it, not torch's traceback.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0] or type(error).__name__
        raise ValueError(f"{path}: not a readable training checkpoint ({reason})") from error
    return Checkpoint.from_state(state, source=str(path))
