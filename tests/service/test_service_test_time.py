"""What the service makes of a model card's test_time: the mode and cap it samples uploads by, or a refusal."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from service.config import Settings
from service.errors import StartupError
from service.state import load_state


def model_with_card(tiny_model: Path, folder: Path, edit) -> Path:
    """A copy of the tiny model (same bytes, so the same model_version) whose card ``edit`` changed."""
    folder.mkdir()
    onnx = folder / tiny_model.name
    shutil.copy(tiny_model, onnx)
    card = json.loads(tiny_model.with_suffix(".json").read_text())
    edit(card)
    onnx.with_suffix(".json").write_text(json.dumps(card))
    return onnx


def settings_for(model: Path, tmp_path: Path) -> Settings:
    return Settings(model_path=model, data_dir=tmp_path / "data", device="cpu", intra_op_threads=1, _env_file=None)


def test_the_exported_card_is_served_by_its_own_mode_and_cap(tiny_model, tmp_path):
    state = load_state(settings_for(tiny_model, tmp_path))
    try:
        assert (state.decoder.test_mode, state.decoder.max_clips) == ("consecutive", 4)
    finally:
        state.close()


def test_a_card_without_test_time_is_served_as_centres_with_a_warning(tiny_model, tmp_path, caplog):
    model = model_with_card(tiny_model, tmp_path / "old", lambda card: card.pop("test_time"))
    with caplog.at_level(logging.WARNING, logger="service.state"):
        state = load_state(settings_for(model, tmp_path))
    try:
        assert state.decoder.test_mode == "centres"
        assert "no test_time section" in caplog.text
    finally:
        state.close()


@pytest.mark.parametrize(
    ("test_time", "message"),
    [({"mode": "consecutive", "max_clips": None}, "max_clips is null"), ({"mode": "all", "max_clips": 4}, "'all'")],
)
def test_offline_only_test_time_is_refused_at_start(tiny_model, tmp_path, test_time, message):
    model = model_with_card(tiny_model, tmp_path / "offline", lambda card: card.update(test_time=test_time))
    with pytest.raises(StartupError, match=message):
        load_state(settings_for(model, tmp_path))
