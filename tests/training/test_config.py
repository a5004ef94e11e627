"""Reading configs: pydantic coercion and validation, readable errors, and no torch import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from training.config import TrainConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_reading_a_yaml_config_does_not_import_torch():
    script = (
        "import sys, training.config as c\n"
        "config = c.load_config('training/configs/mars.yaml', ['optim.lr=1e-4'])\n"
        "assert config.optim.lr == 1e-4 and config.model.label == 'MG-RAFA(N=4)', config\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_values_are_coerced_to_the_field_types(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: 2024\noptim:\nloss:\n  triplet_margin: ~\n", encoding="utf-8")
    config = load_config(path, ["optim.milestones=40", "amp=yes", "model.pretrained=none", "data.num_frames=4.0",
                                "augment.erase_area=[0.1, 0.2]", "optim.betas=[0.5, 0.9]"])
    assert config.name == "2024"  # a number where text is expected
    assert config.optim.lr == 3.5e-4 and config.optim.milestones == (40,)  # empty section: defaults
    assert config.amp is True and config.model.pretrained is None and config.loss.triplet_margin is None
    assert config.data.num_frames == 4 and isinstance(config.data.num_frames, int)
    assert config.augment.erase_area == (0.1, 0.2) and config.optim.betas == (0.5, 0.9)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_errors_name_every_unknown_key_and_the_unreadable_value():
    with pytest.raises(KeyError, match=r"unknown config key\(s\) model.foo, data.bar; known: backbone, head"):
        load_config(None, ["model.foo=1", "data.bar=2"])
    with pytest.raises(ValueError, match=r"data.num_frames: cannot read 2.5 .*fractional"):
        load_config(None, ["data.num_frames=2.5"])
    with pytest.raises(ValueError, match=r"optim.betas: cannot read \[1, 2, 3\]"):
        load_config(None, ["optim.betas=[1, 2, 3]"])
    with pytest.raises(ValueError, match="optim: cannot read 3"):
        load_config(None, ["optim=3"])
    with pytest.raises(ValueError, match="amp: cannot read 'perhaps'"):
        load_config(None, ["amp=perhaps"])
