"""Test-time frame sampling: the contract's rule (models.sample_frame_indices), which the service calls."""

from __future__ import annotations

import numpy as np
import pytest

from models import sample_frame_indices


@pytest.mark.parametrize(
    ("num_frames", "num_samples", "expected"),
    [
        (10, 4, [1, 3, 6, 8]),  # edges 0, 2.5, 5, 7.5, 10 -> centres 1.25, 3.75, 6.25, 8.75
        (8, 8, [0, 1, 2, 3, 4, 5, 6, 7]),
        (3, 8, [0, 0, 0, 1, 1, 2, 2, 2]),  # shorter than T: frames repeat, in order
        (1, 4, [0, 0, 0, 0]),
        (100, 1, [50]),
        (7, 2, [1, 5]),  # edges 0, 3.5, 7 -> centres 1.75, 5.25
        # float64 linspace, not integer arithmetic: the exact centre 7 of chunk 2 comes out as 6.999...
        (14, 5, [1, 4, 6, 9, 12]),
    ],
)
def test_centre_of_each_uniform_chunk(num_frames, num_samples, expected):
    indices = sample_frame_indices(num_frames, num_samples)
    assert indices.dtype == np.int64
    assert indices.tolist() == expected


@pytest.mark.parametrize("num_frames", [1, 2, 5, 8, 9, 33, 250, 1001])
@pytest.mark.parametrize("num_samples", [1, 4, 8])
def test_always_t_ordered_in_range_indices(num_frames, num_samples):
    indices = sample_frame_indices(num_frames, num_samples)
    assert len(indices) == num_samples
    assert np.all(np.diff(indices) >= 0)
    assert indices.min() >= 0 and indices.max() <= num_frames - 1
    if num_frames >= num_samples:
        assert len(set(indices.tolist())) == num_samples  # long tracklets never repeat a frame
    else:
        assert set(indices.tolist()) == set(range(num_frames))  # short ones use every frame


@pytest.mark.parametrize(("num_frames", "num_samples"), [(0, 4), (-1, 4), (5, 0)])
def test_rejects_empty_tracklets_and_zero_samples(num_frames, num_samples):
    with pytest.raises(ValueError):
        sample_frame_indices(num_frames, num_samples)
