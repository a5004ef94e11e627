"""models.sample_clip_indices: the one rule by which offline evaluation and the service pick a tracklet's clips."""

import numpy as np
import pytest

from models import MAX_TEST_CLIPS, sample_clip_indices, sample_frame_indices


@pytest.mark.parametrize("mode", ["strided", "consecutive", "all"])
def test_a_short_tracklet_uses_every_frame(mode):
    clips = sample_clip_indices(10, 4, mode)
    assert sorted(set(clips.reshape(-1).tolist())) == list(range(10))
    assert all(list(clip) == sorted(clip) for clip in clips)  # each clip in temporal order


def test_each_mode_makes_the_clips_its_name_says():
    np.testing.assert_array_equal(sample_clip_indices(10, 4, "centres"), sample_frame_indices(10, 4)[None])
    # consecutive: [0-3], [4-7], [8, 9, 9, 9] (the last clip repeats its last frame)
    np.testing.assert_array_equal(sample_clip_indices(10, 4, "consecutive"),
                                  [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]])  # fmt: skip
    # strided: chunks [0,1] [2-4] [5,6] [7-9]; clip k takes the k-th frame of each chunk
    np.testing.assert_array_equal(sample_clip_indices(10, 4, "strided"),
                                  [[0, 2, 5, 7], [1, 3, 6, 8], [1, 4, 6, 9]])  # fmt: skip
    np.testing.assert_array_equal(sample_clip_indices(10, 4, "all"), [list(range(10))])


@pytest.mark.parametrize("mode", ["strided", "consecutive", "all"])
def test_a_long_tracklet_is_thinned_to_t_times_max_clips_chunk_centres(mode):
    clips = sample_clip_indices(100, 4, mode)
    kept = sample_frame_indices(100, 4 * MAX_TEST_CLIPS)
    assert set(clips.reshape(-1).tolist()) == set(kept.tolist())
    assert clips.size == 4 * MAX_TEST_CLIPS


@pytest.mark.parametrize(("mode", "shape"), [("strided", (25, 4)), ("consecutive", (25, 4)), ("all", (1, 100))])
def test_no_cap_keeps_every_frame_of_any_tracklet(mode, shape):
    clips = sample_clip_indices(100, 4, mode, max_clips=None)
    assert clips.shape == shape and sorted(set(clips.reshape(-1).tolist())) == list(range(100))
    # centres is one clip of T frames whatever the cap
    assert sample_clip_indices(100, 4, "centres", max_clips=None).shape == (1, 4)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="max_clips"):
        sample_clip_indices(10, 4, "consecutive", max_clips=0)
    with pytest.raises(ValueError, match="test-time mode"):
        sample_clip_indices(10, 4, "dense")
    with pytest.raises(ValueError, match="num_frames"):
        sample_clip_indices(0, 4, "consecutive")
