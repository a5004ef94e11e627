"""The service runs with torch (and training/) impossible to import: only the `service` group is needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "training"):
            raise ImportError(f"{name} must not be imported by the service")
        return None

sys.meta_path.insert(0, Refuse())
import numpy as np
from fastapi.testclient import TestClient
from service.app import create_app
from service.config import Settings

model, data_dir = sys.argv[1], sys.argv[2]
app = create_app(Settings(model_path=model, data_dir=data_dir, device="auto", intra_op_threads=1))
import cv2
frames = [("frames", (f"{i}.png", cv2.imencode(".png", np.full((64, 32, 3), 40 * i, np.uint8))[1].tobytes(),
                      "image/png")) for i in range(5)]
with TestClient(app) as client:
    assert client.get("/readyz").json()["device"] == "cpu"
    assert client.post("/tracklets", files=frames, data={"tracklet_id": "t1"}).status_code == 201
    match = client.post("/query", files=frames).json()["matches"][0]
    assert match["id"] == "t1" and match["distance"] < 1e-6, match
print("torch-free service OK", "torch" in sys.modules)
"""


def test_service_works_without_torch(tiny_model, tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model), str(tmp_path / "gallery")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch-free service OK False" in result.stdout
