"""python -m service.gallery import / export: embeddings with their records, in and out of a gallery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from models.contract import ModelCard
from service.gallery import SqliteGallery, TrackletRecord
from service.gallery.__main__ import main, write_bundle

REPO = Path(__file__).resolve().parents[2]


def bundle(tmp_path: Path, dim: int, count: int, prefix: str = "m") -> tuple[Path, list[TrackletRecord], np.ndarray]:
    rng = np.random.default_rng(count)
    records = [
        TrackletRecord(id=f"{prefix}{index}", person_id=f"p{index % 3}", camera_id=f"c{index % 2}",
                       metadata={"source": "migration", "n": index},
                       start_time=datetime(2026, 5, 1, 14, index % 60, tzinfo=timezone.utc), end_time=None)
        for index in range(count)
    ]
    embeddings = rng.normal(size=(count, dim)).astype(np.float32)
    path = tmp_path / f"{prefix}.npz"
    write_bundle(path, records, embeddings)
    return path, records, embeddings


def test_import_then_export_round_trip(tiny_model, tmp_path, capsys):
    card = ModelCard.read(tiny_model.with_suffix(".json"))
    path, records, embeddings = bundle(tmp_path, card.dim, 25)
    data_dir = tmp_path / "gallery"
    assert main(["import", str(path), "--model", str(tiny_model), "--data-dir", str(data_dir), "--chunk", "10"]) == 0
    assert "imported 25 tracklets" in capsys.readouterr().out
    gallery = SqliteGallery(data_dir, card.dim, card.model_version)
    try:
        stored = gallery.get("m7")
        assert stored.person_id == "p1" and stored.metadata == {"source": "migration", "n": 7}
        assert stored.start_time == records[7].start_time and stored.model_version == card.model_version
        np.testing.assert_array_equal(gallery.get_embedding("m7"), embeddings[7])
        (matches,) = gallery.search(embeddings[12][None], 1)
        assert matches[0].record.id == "m12"
    finally:
        gallery.close()

    exported = tmp_path / "out.npz"
    assert main(["export", str(exported), "--model", str(tiny_model), "--data-dir", str(data_dir)]) == 0
    with np.load(exported) as saved:
        assert [json.loads(text)["id"] for text in saved["records"]] == [record.id for record in records]
        np.testing.assert_array_equal(saved["embeddings"], embeddings)

    # Importing the same ids again is refused; nothing changes.
    assert main(["import", str(path), "--model", str(tiny_model), "--data-dir", str(data_dir)]) == 2
    assert "already enrolled" in capsys.readouterr().err
    gallery = SqliteGallery(data_dir, card.dim, card.model_version)
    try:
        assert gallery.count() == 25
    finally:
        gallery.close()


def test_bad_files_are_refused_with_the_reason(tiny_model, tmp_path, capsys):
    card = ModelCard.read(tiny_model.with_suffix(".json"))
    wrong_dim, _, _ = bundle(tmp_path, card.dim + 1, 3, prefix="w")
    data_dir = tmp_path / "gallery"
    assert main(["import", str(wrong_dim), "--model", str(tiny_model), "--data-dir", str(data_dir)]) == 2
    assert f"(n, {card.dim})" in capsys.readouterr().err
    broken = tmp_path / "broken.npz"
    np.savez(broken, embeddings=np.zeros((1, card.dim), np.float32), records=np.array(['{"person_id": "x"}']))
    assert main(["import", str(broken), "--model", str(tiny_model), "--data-dir", str(data_dir)]) == 2
    assert "record 0" in capsys.readouterr().err


def test_the_module_runs_as_a_command(tiny_model, tmp_path):
    card = ModelCard.read(tiny_model.with_suffix(".json"))
    path, _, _ = bundle(tmp_path, card.dim, 4)
    result = subprocess.run(
        [sys.executable, "-m", "service.gallery", "import", str(path), "--model", str(tiny_model),
         "--data-dir", str(tmp_path / "g")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "imported 4 tracklets" in result.stdout
