"""training.test_time: every mode's feature is the head's output on that mode's clips, averaged."""

import cv2
import numpy as np
import pytest
import torch

from models import sample_clip_indices
from training.data.tracklets import Tracklet
from training.data.transforms import load_frame, to_tensor
from training.model import build_model
from training.test_time import extract_features_by_mode

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_each_mode_equals_the_model_on_its_clips(tmp_path):
    torch.manual_seed(0)
    model = build_model(backbone="resnet18", head="mg-rafa", granularities=2, height=64, width=32).eval()
    rng = np.random.default_rng(0)
    tracklets = []
    for index, length in enumerate((3, 9, 21)):  # 21 > T x 4: thinned to 16 chunk centres first
        paths = []
        for frame in range(length):
            path = tmp_path / f"{index}_{frame:02d}.png"
            cv2.imwrite(str(path), rng.integers(0, 255, size=(64, 32, 3), dtype=np.uint8))
            paths.append(str(path))
        tracklets.append(Tracklet(tuple(paths), pid=index, camid=0))
    features = extract_features_by_mode(model, tracklets, num_frames=4, batch_size=7, progress=False)
    assert set(features) == {"centres", "strided", "consecutive", "all"}
    with torch.no_grad():
        for row, tracklet in enumerate(tracklets):
            frames = np.stack([load_frame(path, 64, 32) for path in tracklet.frames])
            for mode, embedded in features.items():
                clips = sample_clip_indices(len(frames), 4, mode)
                expected = torch.stack([model(to_tensor(frames[clip])[None]).embedding[0] for clip in clips]).mean(0)
                np.testing.assert_allclose(embedded[row], expected.numpy(), rtol=1e-4, atol=1e-5, err_msg=mode)
    # The modes really differ for an attention head on a long tracklet.
    assert not np.allclose(features["centres"][2], features["strided"][2], rtol=1e-3)
    # max_clips=None keeps every frame: `all` is then the head over all 21 frames in one pass, and it differs
    # from the capped `all` (16 chunk centres).
    uncapped = extract_features_by_mode(model, tracklets[2:], num_frames=4, modes=["all"], batch_size=5,
                                        max_clips=None, progress=False)["all"][0]  # fmt: skip
    with torch.no_grad():
        frames = np.stack([load_frame(path, 64, 32) for path in tracklets[2].frames])
        expected = model(to_tensor(frames)[None]).embedding[0].numpy()
    np.testing.assert_allclose(uncapped, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(uncapped, features["all"][2], rtol=1e-3)
