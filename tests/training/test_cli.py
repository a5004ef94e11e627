"""``python -m training``: generate -> train -> evaluate, the ablation table, all splits, forwarding, errors."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.checkpoint import load_checkpoint
from training.cli import main
from training.evaluation import RetrievalMetrics, format_metrics, metrics_from_cmc
from training.features import evaluate_model
from training.loaders import load_config_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"

#: Shrinks training/configs/synthetic.yaml to seconds: tiny frames, T=2, one or two epochs.
TINY = [
    "device=cpu", "model.height=64", "model.width=32", "data.num_frames=2", "data.num_workers=0",
    "data.test_batch_size=8", "sampler.num_identities=4", "sampler.tracklets_per_identity=2",
    "optim.epochs=1", "optim.warmup_epochs=0", "optim.milestones=[]",
]  # fmt: skip


def overrides(*extra: str) -> list[str]:
    args = []
    for item in (*TINY, *extra):
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "synthetic"
    code = main([
        "synthetic", "--root", str(root), "--identities", "8", "--cameras", "2", "--tracklets-per-camera", "2",
        "--min-frames", "4", "--max-frames", "6", "--height", "64", "--width", "32", "--seed", "1",
    ])  # fmt: skip
    assert code == 0 and (root / "info" / "query_IDX.mat").is_file()
    return root


METRIC_KEYS = ("mAP", "rank1", "rank5", "rank10", "rank20")
#: matplotlib's first curve colour (RGB), the CMC curve of a one-curve plot.
FIRST_CURVE_COLOUR = (31, 119, 180)


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image[:, :, ::-1].astype(int)


def pixels_near(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 30) -> np.ndarray:
    return (np.abs(image - np.asarray(colour)) <= tolerance).all(axis=2)


def test_train_then_evaluate_writes_checkpoint_metrics_and_pictures(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--config", str(CONFIGS / "synthetic.yaml"), "--data-root", str(tiny_root),
                 "--output", str(run), *overrides()])
    assert code == 0
    assert (run / "final.pt").is_file() and (run / "last.pt").is_file()
    assert "MG-RAFA(N=4) on synthetic" in capsys.readouterr().out

    # evaluate, in the run's test mode, gives exactly what the trainer measured at the end of training.
    final = load_checkpoint(run / "final.pt")
    code = main(["evaluate", "--checkpoint", str(run / "final.pt"), "--output", str(tmp_path / "again"),
                 "--num-workers", "0"])
    assert code == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert {key: again[key] for key in METRIC_KEYS} == pytest.approx(final.metrics.as_dict(), abs=1e-12)
    assert again["cmc"] == pytest.approx(final.cmc, abs=1e-12) and again["mode"] == "consecutive"
    capsys.readouterr()

    evaluation = tmp_path / "evaluation"
    code = main(["evaluate", "--checkpoint", str(run / "final.pt"), "--mode", "dense", "--output", str(evaluation),
                 "--num-workers", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Official MARS protocol" in printed
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["mode"] == "dense" and metrics["dataset"] == "synthetic" and metrics["epoch"] == 1
    assert metrics["num_query"] == 4 and len(metrics["cmc"]) == 20
    assert np.all(np.diff(metrics["cmc"]) >= 0)
    expected = metrics_from_cmc(np.array(metrics["cmc"]), metrics["mAP"]).as_dict()
    assert {key: metrics[key] for key in METRIC_KEYS} == expected
    assert format_metrics(RetrievalMetrics.from_dict(metrics)) in printed

    # cmc.png: 600 x 400 (6 x 4 inches at 100 dpi), one curve.
    cmc_image = read_rgb(evaluation / "cmc.png")
    assert cmc_image.shape == (400, 600, 3) and pixels_near(cmc_image, FIRST_CURVE_COLOUR).sum() > 100
    # ranked_lists.png: one row per query with a true match (all 4), its T=2 frames of 64x32 side by side
    # (aspect 1), then its top 8 of the 20 valid gallery tracklets (aspect 0.5), 1.3 in per unit of aspect
    # + 0.5 in wide and 2.3 in per row, at 100 dpi; each tile framed green (match) or red.
    ranked = read_rgb(evaluation / "ranked_lists.png")
    width = round(100 * (1.3 * (1.0 + 8 * 0.5) + 0.5))
    assert abs(ranked.shape[0] - 920) <= 1 and abs(ranked.shape[1] - width) <= 1
    assert pixels_near(ranked, (0, 170, 0), 40).sum() > 50 and pixels_near(ranked, (220, 0, 0), 40).sum() > 50

    code = main(["evaluate", "--checkpoint", str(run / "final.pt"), "--num-workers", "0", "--rerank",
                 "--rerank-k1", "4", "--rerank-k2", "2"])
    assert code == 0
    assert "k-reciprocal re-ranked" in capsys.readouterr().out
    reranked = json.loads((run / "eval_consecutive_rerank" / "metrics.json").read_text())
    assert reranked["rerank"] == {"k1": 4, "k2": 2, "lambda_value": 0.3, "shortlist_size": 30}
    assert reranked["num_query"] == 4 and reranked["rank1"] == reranked["cmc"][0]
    assert reranked["rank5"] == reranked["cmc"][4] and reranked["rank20"] == reranked["cmc"][19]


def test_ablation_writes_a_table_with_one_row_per_head(tiny_root, tmp_path, capsys):
    out = tmp_path / "ablation"
    code = main(["ablation", "--config", str(CONFIGS / "synthetic.yaml"), "--heads", "baseline", "mg-rafa:2",
                 "--out", str(out), *overrides(f"data.root={tiny_root}")])
    assert code == 0
    table = (out / "ablation.md").read_text()
    assert "| Baseline |" in table and "| MG-RAFA(N=2) |" in table
    data = json.loads((out / "ablation.json").read_text())
    assert [row["label"] for row in data["rows"]] == ["Baseline", "MG-RAFA(N=2)"]
    for row, folder in zip(data["rows"], ("baseline", "mg-rafa-n2"), strict=True):
        # Each row holds what its final network scores (rescored here), and the table shows it in %.
        final = load_checkpoint(out / folder / "final.pt")
        config = final.train_config()
        rescored = evaluate_model(final.build_model(), load_config_dataset(config), config, progress=False).metrics
        assert row["metrics"] == pytest.approx(rescored.as_dict(), abs=1e-12) and row["wall_time_s"] > 0
        # ... in the default test-time mode, beside every other mode (measured with one backbone pass).
        assert set(row["modes"]) == {"centres", "strided", "consecutive", "all"} and row["test_mode"] == "consecutive"
        assert row["metrics"] == row["modes"]["consecutive"]
        cells = " | ".join(f"{100 * value:.1f}" for value in rescored.as_dict().values())
        assert f"| {row['label']} | {row['seed']} | {cells} |" in table
    assert data["rows"][0]["head_parameters"] == 0 and data["rows"][1]["head_parameters"] > 0
    assert (out / "baseline" / "final.pt").is_file() and (out / "mg-rafa-n2" / "final.pt").is_file()
    # Restarting reuses finished heads instead of training them again.
    before = (out / "baseline" / "final.pt").stat().st_mtime_ns
    assert main(["ablation", "--config", str(CONFIGS / "synthetic.yaml"), "--heads", "baseline", "--out", str(out),
                 "--resume", *overrides(f"data.root={tiny_root}")]) == 0
    assert (out / "baseline" / "final.pt").stat().st_mtime_ns == before


def make_tiny_ilidsvid(root: Path, num_persons: int = 8) -> Path:
    """iLIDS-VID's layout with a few frames per person and camera (a colour per person, so it is learnable)."""
    rng = np.random.default_rng(0)
    for person in range(1, num_persons + 1):
        colour = rng.integers(0, 255, size=3)
        for camera in ("cam1", "cam2"):
            folder = root / "i-LIDS-VID" / "sequences" / camera / f"person{person:03d}"
            folder.mkdir(parents=True)
            for frame in range(4):
                image = np.clip(colour + rng.normal(0, 20, size=(64, 32, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{camera}_person{person:03d}_{frame:05d}.png"), image)
    return root


def test_all_splits_trains_each_split_and_averages(tmp_path):
    from training.config import load_config
    from training.trainer import train_all_splits

    root = make_tiny_ilidsvid(tmp_path / "ilids")
    config = load_config(CONFIGS / "ilidsvid.yaml", [*TINY, f"data.root={root}", "model.backbone=resnet18",
                                                      "model.pretrained=null", "sampler.num_identities=2"])
    summary = train_all_splits(config, tmp_path / "runs", split_ids=[0, 1])
    assert [split_id for split_id, _ in summary.splits] == [0, 1]
    assert (tmp_path / "runs" / "split00" / "final.pt").is_file()
    assert (tmp_path / "runs" / "split01" / "final.pt").is_file()
    per_split = [result.metrics.rank1 for _, result in summary.splits]
    assert summary.mean_metrics.rank1 == pytest.approx(np.mean(per_split))
    mean_cmc = np.mean([result.cmc for _, result in summary.splits], axis=0)
    np.testing.assert_allclose(summary.mean_cmc, mean_cmc)
    saved = json.loads((tmp_path / "runs" / "all_splits.json").read_text())
    assert saved["mean_metrics"] == pytest.approx(summary.mean_metrics.as_dict())
    assert [entry["split_id"] for entry in saved["splits"]] == [0, 1]
    assert saved["splits"][1]["metrics"] == summary.splits[1][1].metrics.as_dict()


def test_forwarded_commands_reach_their_own_parsers(capsys):
    for command, expected in (("export", "--checkpoint"), ("complexity", "usage"), ("synthetic", "--identities")):
        with pytest.raises(SystemExit) as stopped:
            main([command, "--help"])
        assert stopped.value.code == 0
        assert expected in capsys.readouterr().out


def test_help_and_readable_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "evaluate", "export", "complexity", "ablation", "synthetic"):
        assert command in text

    assert main(["train", "--set", "optim.learning_rate=1"]) == 2
    assert "unknown config key(s) optim.learning_rate" in capsys.readouterr().err
    assert main(["train", "--set", "data.root=" + str(tmp_path / "nowhere"), "--output", str(tmp_path / "r")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["ablation", "--config", str(CONFIGS / "synthetic.yaml"), "--heads", "mg-rafa:x"]) == 2
