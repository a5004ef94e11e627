"""Figure 3 two ways: the torch command's overlays equal the torch-free ones rendered from the ONNX graph's
attention outputs (what the service's tracklet view shows), for the same network and frames."""

import cv2
import numpy as np

from models.overlay import overlay_frames
from service.embedder import OnnxEmbedder
from tests.training.test_attention import save_checkpoint, write_tracklet
from training.checkpoint import load_checkpoint
from training.cli import main
from training.export import export_model


def test_onnx_attention_overlays_equal_the_attention_commands(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "final.pt")
    tracklet = write_tracklet(tmp_path / "tracklet")
    out = tmp_path / "out"
    assert main(["attention", "--checkpoint", str(checkpoint), "--tracklet", str(tracklet), "--out", str(out)]) == 0
    saved = np.load(out / "attention.npz")
    frames = saved["frames"]  # (T, H, W, 3) uint8 RGB: the frames the network saw

    onnx_path = tmp_path / "m.onnx"
    loaded = load_checkpoint(checkpoint)
    export_model(loaded.build_model(), onnx_path, num_frames=loaded.num_frames, with_attention=True)
    embedder = OnnxEmbedder(onnx_path, device="cpu", intra_op_threads=1)
    onnx_maps = embedder.attention(frames)
    assert len(onnx_maps) == 3
    for index, (label, attention) in enumerate(zip(["G-1st", "G-2nd", "G-3rd"], onnx_maps, strict=True), start=1):
        np.testing.assert_allclose(attention, saved[f"attention_{index}"], rtol=1e-4, atol=1e-6)
        png = cv2.cvtColor(cv2.imread(str(out / f"{label}.png")), cv2.COLOR_BGR2RGB)
        rendered = np.concatenate(list(overlay_frames(frames, attention)), axis=1)
        # float rounding between the two runtimes may move a blended pixel by one level, no more
        assert png.shape == rendered.shape
        assert np.abs(png.astype(np.int16) - rendered.astype(np.int16)).max() <= 1
