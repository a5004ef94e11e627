"""ONNX export: one file, dynamic batch and T, uint8 input normalised in the graph, parity with PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models import IMAGENET_MEAN, IMAGENET_STD, SCHEMA_VERSION, ModelCard, model_version_of
from training.export import ExportWrapper, card_architecture, export_model, main
from training.model import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(backbone="resnet18", head="mg-rafa", granularities=4, height=64, width=32).eval()
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    card = export_model(model, path, num_frames=8, with_attention=True)
    return model, path, card


def test_one_self_contained_file_with_card(exported):
    _, path, card = exported
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.json", "tiny.onnx"]  # no .onnx.data
    written = json.loads(path.with_suffix(".json").read_text())
    assert written == card.to_json_dict() and ModelCard.read(path.with_suffix(".json")) == card
    assert written["schema_version"] == SCHEMA_VERSION == 2 and written["precision"] == "fp32"
    assert written["input"] == {"name": "frames", "dtype": "uint8", "layout": "BTHWC", "color": "RGB",
                                "height": 64, "width": 32}
    assert written["num_frames"] == 8 and written["embedding"]["dim"] == 512
    assert written["embedding"]["normalized"] is False and written["embedding"]["metric"] == "l2"
    assert written["model"]["label"] == "MG-RAFA(N=4)" and written["model"]["granularities"] == 4
    assert written["mean"] == list(IMAGENET_MEAN) and written["std"] == list(IMAGENET_STD)
    assert written["model_version"] == model_version_of(path) and written["training"] is None
    assert written["attention_outputs"] == ["attention_1", "attention_2", "attention_3", "attention_4"]


def test_graph_signature_is_uint8_with_dynamic_batch_and_frames(exported):
    _, path, _ = exported
    graph = onnx.load(str(path)).graph
    (frames,) = graph.input
    assert frames.name == "frames"
    assert frames.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = frames.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param  # symbolic: batch and T
    assert [d.dim_value for d in dims[2:]] == [64, 32, 3]
    assert graph.output[0].name == "embedding"


def test_onnxruntime_matches_pytorch_for_several_t_and_batches(exported):
    model, path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = ExportWrapper(model, with_attention=True).eval()
    rng = np.random.default_rng(123)
    for frames in (4, 8, 12):
        for batch in (1, 3):
            data = rng.integers(0, 256, size=(batch, frames, 64, 32, 3), dtype=np.uint8)
            got = session.run(None, {"frames": data})
            with torch.no_grad():
                want = [t.numpy() for t in wrapper(torch.from_numpy(data))]
            assert got[0].shape == (batch, 512)
            for g, w in zip(got, want, strict=True):
                assert g.shape == w.shape
                relative = np.abs(g - w).max() / np.abs(w).max()
                assert relative < 1e-4, (frames, batch, relative)


def test_graph_normalises_exactly_like_training(exported):
    """The graph's preprocessing equals: /255, ImageNet mean/std, NHWC -> NCHW, then the model."""
    model, path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    data = np.random.default_rng(7).integers(0, 256, size=(2, 5, 64, 32, 3), dtype=np.uint8)
    images = torch.from_numpy(data).float().div(255).permute(0, 1, 4, 2, 3)
    images = (images - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        want = model(images).embedding.numpy()
    got = session.run(["embedding"], {"frames": data})[0]
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def test_attention_outputs_are_normalised_maps(exported):
    _, path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    data = np.random.default_rng(1).integers(0, 256, size=(1, 6, 64, 32, 3), dtype=np.uint8)
    outputs = session.run(None, {"frames": data})
    shapes = [o.shape for o in outputs[1:]]
    assert shapes == [(1, 6, 4, 2), (1, 6, 2, 1), (1, 6, 1, 1), (1, 6, 1, 1)]
    for attention in outputs[1:]:
        # channel-averaged softmax weights still sum to one over all positions
        np.testing.assert_allclose(attention.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)


def test_cli_random_init_with_normalised_embedding(tmp_path):
    out = tmp_path / "baseline.onnx"
    assert main(["--random-init", "--backbone", "resnet18", "--head", "baseline", "--height", "32",
                 "--width", "16", "--num-frames", "4", "--normalize", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["embedding"]["normalized"] is True and card["model"]["head"] == "baseline"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    data = np.random.default_rng(0).integers(0, 256, size=(3, 4, 32, 16, 3), dtype=np.uint8)
    embedding = session.run(["embedding"], {"frames": data})[0]
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)


def test_cli_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_a_model_config_field_the_card_does_not_know_is_a_clear_error():
    class FutureConfig:
        label = "MG-RAFA(N=4)"

        def to_dict(self):
            return {"backbone": "resnet18", "head": "mg-rafa", "granularities": 4, "splits": 1, "reduction": 6,
                    "height": 64, "width": 32, "dilation": 2}

    with pytest.raises(ValueError, match=r"\['dilation'\] are not in the model card.*CardArchitecture"):
        card_architecture(FutureConfig())
