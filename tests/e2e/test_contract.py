"""The training/service contract: what the service computes must equal what offline evaluation computes."""

from __future__ import annotations

import numpy as np
import pytest

from service.sampling import sample_frame_indices
from training.data.sampling import chunk_frame_indices


@pytest.mark.parametrize("num_samples", [1, 4, 8, 12])
def test_service_sampling_equals_training_test_sampling(num_samples):
    for num_frames in range(1, 200):
        np.testing.assert_array_equal(
            sample_frame_indices(num_frames, num_samples), chunk_frame_indices(num_frames, num_samples)
        )


def test_short_tracklets_repeat_frames_in_order():
    indices = sample_frame_indices(3, 8)
    assert list(indices) == sorted(indices) and set(indices) == {0, 1, 2}
