"""The README's first command, end to end on a tiny synthetic set: data -> train -> evaluate -> export ->
service -> enroll/query over HTTP, offline and service metrics agree; footage through POST /footage scored
against its ground truth; a second run reuses what it built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

TINY = [
    "--identities", "12",
    "--set", "optim.epochs=1",
    "--set", "model.height=64",
    "--set", "model.width=32",
    "--set", "data.num_workers=0",
    "--set", "sampler.num_identities=4",
    "--footage-seconds", "6",
]  # fmt: skip


def run_demo(tmp: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "training.demo", "--data-root", str(tmp / "syn"), "--run-dir",
               str(tmp / "run"), "--model", str(tmp / "models" / "demo.onnx"), *TINY]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_demo_end_to_end_and_rerun(tmp_path):
    first = run_demo(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "demo.json").read_text())
    assert report["agree"] is True
    # It ends with the web page's address.
    assert first.stdout.rstrip().splitlines()[-1].strip() == "http://127.0.0.1:8000/ui/"
    for key in ("mAP", "rank1", "rank5", "rank10", "rank20"):
        assert 0.0 <= report["service"][key] <= 1.0
        assert abs(report["offline"][key] - report["service"][key]) <= 0.005
    assert report["offline"]["num_query"] == 6 and report["offline"]["num_gallery"] == 40
    card = json.loads((tmp_path / "models" / "demo.json").read_text())
    assert card["model_version"] == report["model_version"]
    assert card["training"]["dataset"] == "synthetic"
    for artefact in ("final.pt", "eval/metrics.json", "eval/cmc.png", "eval/ranked_lists.png"):
        assert (tmp_path / "run" / artefact).is_file(), artefact
    assert "/docs" in first.stdout
    # The footage step: both cameras through POST /footage, scored against the renderer's ground truth.
    footage = report["footage"]
    assert set(footage["cameras"]) == {"cam_a", "cam_b"}
    for scores in footage["cameras"].values():
        assert 0.0 < scores["idf1"] <= 1.0 and scores["mota"] <= 1.0 and scores["job_fps"] > 0
    assert footage["queries"] >= 1 and footage["gallery"] >= 1 and 0.0 <= footage["rank1"] <= 1.0
    assert "cross-camera retrieval from footage: rank-1" in first.stdout and "| person |" in first.stdout

    second = run_demo(tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for reused in ("reusing the synthetic benchmark", "reusing the trained model", "reusing the export",
                   "reusing the synthetic footage"):
        assert reused in second.stdout
    assert json.loads((tmp_path / "run" / "demo.json").read_text())["service"] == report["service"]
