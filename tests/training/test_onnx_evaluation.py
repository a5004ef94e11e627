"""``python -m training evaluate --onnx``: an exported model scored by the same evaluation as its checkpoint
(same metrics, same distances up to onnxruntime's rounding), in fp32 and int8, and the top-k overlap."""

import json

import numpy as np
import pytest
from test_cli import CONFIGS, TINY  # the same tiny training budget as the CLI tests

from models import ModelCard, card_path_for
from training.cli import main
from training.export import main as export_main
from training.run_evaluation import evaluate_checkpoint, evaluate_onnx, top_k_overlap

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny synthetic benchmark, one epoch of training on it, and the run's fp32 and int8 exports."""
    base = tmp_path_factory.mktemp("onnx_eval")
    root = base / "synthetic"
    assert main([
        "synthetic", "--root", str(root), "--identities", "8", "--cameras", "2", "--tracklets-per-camera", "2",
        "--min-frames", "4", "--max-frames", "7", "--height", "64", "--width", "32", "--seed", "1",
    ]) == 0  # fmt: skip
    run = base / "run"
    overrides = [arg for item in TINY for arg in ("--set", item)]
    assert main(["train", "--config", str(CONFIGS / "synthetic.yaml"), "--data-root", str(root),
                 "--output", str(run), *overrides]) == 0
    models = {}
    for precision in ("fp32", "int8"):
        models[precision] = base / f"model-{precision}.onnx"
        extra = ["--calibration", str(root / "bbox_train")] if precision == "int8" else []
        assert export_main(["--checkpoint", str(run / "final.pt"), "--out", str(models[precision]),
                            "--precision", precision, *extra]) == 0
    return root, run / "final.pt", models


def test_fp32_export_scores_what_its_checkpoint_scores(trained, tmp_path, capsys):
    root, checkpoint, models = trained
    torch_report = evaluate_checkpoint(checkpoint, output_dir=tmp_path / "torch", num_workers=0)
    capsys.readouterr()
    # The card names the checkpoint, so --onnx alone finds the run's dataset and test-time settings.
    assert main(["evaluate", "--onnx", str(models["fp32"]), "--output", str(tmp_path / "onnx")]) == 0
    printed = capsys.readouterr().out
    assert "(fp32 ONNX) on synthetic (consecutive" in printed
    written = json.loads((tmp_path / "onnx" / "metrics.json").read_text())
    assert written["precision"] == "fp32" and written["onnx"] == str(models["fp32"])
    assert written["num_query"] == torch_report.num_query and "distances" not in written
    assert written["mAP"] == pytest.approx(torch_report.metrics.mAP, abs=1e-9)
    assert written["cmc"] == pytest.approx(torch_report.cmc, abs=1e-9)
    report = evaluate_onnx(models["fp32"], output_dir=tmp_path / "again", progress=False)
    scale = torch_report.distances.max()
    assert np.abs(report.distances - torch_report.distances).max() < 1e-4 * scale
    assert top_k_overlap(torch_report.distances, report.distances, k=5).min() == 1.0


def test_int8_export_is_evaluated_and_compared(trained, tmp_path):
    _, _, models = trained
    fp32 = evaluate_onnx(models["fp32"], output_dir=tmp_path / "fp32", progress=False)
    int8 = evaluate_onnx(models["int8"], output_dir=tmp_path / "int8", progress=False)
    assert int8.precision == "int8" and "(int8 ONNX)" in int8.model
    assert int8.distances.shape == fp32.distances.shape
    assert not np.array_equal(int8.distances, fp32.distances)  # really another graph
    overlap = top_k_overlap(fp32.distances, int8.distances, k=5)
    assert overlap.shape == (fp32.num_query,) and overlap.mean() >= 0.8
    assert abs(int8.metrics.mAP - fp32.metrics.mAP) < 0.1


def test_top_k_overlap_counts_shared_neighbours():
    reference = np.array([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    other = np.array([[0.0, 3.0, 2.0, 1.0], [3.0, 2.0, 1.0, 0.0]])
    # query 0: top-2 {0, 1} vs {0, 3} -> 1/2; query 1: identical -> 1.
    assert top_k_overlap(reference, other, k=2).tolist() == [0.5, 1.0]
    assert top_k_overlap(reference, other, k=10).tolist() == [1.0, 1.0]  # k capped at the gallery size
    with pytest.raises(ValueError):
        top_k_overlap(reference, other[:1])


def test_an_export_without_a_checkpoint_needs_one(trained, tmp_path, capsys):
    _, _, models = trained
    # A randomly initialised export's card has no `training` section: the same graph with such a card.
    model = tmp_path / "random.onnx"
    model.write_bytes(models["fp32"].read_bytes())
    card = ModelCard.read(card_path_for(models["fp32"]))
    card.model_copy(update={"training": None, "name": "random"}).write(card_path_for(model))
    capsys.readouterr()
    assert main(["evaluate", "--onnx", str(model)]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert "--onnx" in capsys.readouterr().err
