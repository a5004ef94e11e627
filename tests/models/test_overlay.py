"""models.overlay: the Figure 3 overlays follow the attention values (torch-free)."""

import cv2
import numpy as np
import pytest

from models.overlay import attention_figure, granularity_name, heat, overlay_frames, write_png


def grey_frames(num_frames: int, height: int = 32, width: int = 16, value: int = 90) -> np.ndarray:
    return np.full((num_frames, height, width, 3), value, np.uint8)


def test_hottest_pixel_lies_in_the_cell_of_maximum_attention():
    rng = np.random.default_rng(0)
    attention = rng.random((3, 4, 2))
    attention /= attention.sum()
    frame, row, col = np.unravel_index(np.argmax(attention), attention.shape)
    overlays = overlay_frames(grey_frames(3), attention)
    brightness = overlays.astype(np.int64).sum(axis=-1)  # (T, H, W)
    hot_frame, hot_y, hot_x = np.unravel_index(np.argmax(brightness), brightness.shape)
    assert hot_frame == frame
    assert (hot_y // 8, hot_x // 8) == (row, col)  # 32x16 frame, 4x2 map: 8x8 pixel cells
    # The whole cell has that colour, and every other cell of every frame is darker.
    cell = brightness[frame, row * 8 : (row + 1) * 8, col * 8 : (col + 1) * 8]
    assert cell.min() == cell.max() == brightness.max()


def test_colour_is_monotone_in_attention_and_cells_match_their_weights():
    weights = np.arange(1, 9, dtype=np.float64).reshape(1, 4, 2)  # eight cells, increasing
    overlay = overlay_frames(grey_frames(1), weights / weights.sum())[0].astype(np.int64)
    centres = [overlay[8 * r + 4, 8 * c + 4] for r in range(4) for c in range(2)]
    # Every channel is non-decreasing in the weight and the sum strictly increasing (COLORMAP_HOT).
    for earlier, later in zip(centres, centres[1:], strict=False):
        assert np.all(later >= earlier) and later.sum() > earlier.sum()
    # Exact colour: the frame blended with the colormap entry of round(255 * w / max(w)).
    level = np.uint8(round(255 * 5 / 8))
    hot = cv2.cvtColor(cv2.applyColorMap(np.array([[level]], np.uint8), cv2.COLORMAP_HOT), cv2.COLOR_BGR2RGB)[0, 0]
    expected = np.round(0.4 * 90 + 0.6 * hot.astype(np.float32))
    assert np.array_equal(overlay[8 * 2 + 4, 8 * 0 + 4], expected.astype(np.int64))


def test_frames_share_one_scale_and_onnx_shapes_are_accepted():
    attention = np.zeros((1, 2, 2, 1))  # ONNX output of one tracklet: (1, T, Hm, Wm)
    attention[0, 0] = [[0.1], [0.1]]
    attention[0, 1] = [[0.4], [0.4]]
    levels = heat(attention)
    assert np.allclose(levels[0], 0.25) and np.allclose(levels[1], 1.0)
    overlays = overlay_frames(grey_frames(2, 8, 4), attention)
    assert overlays[1].astype(int).sum() > overlays[0].astype(int).sum()
    assert np.array_equal(heat(np.zeros((2, 2, 1))), np.zeros((2, 2, 1)))


def test_figure_has_a_row_per_granularity_and_writes_png(tmp_path):
    frames = grey_frames(4)
    maps = [np.random.default_rng(i).random((4, 4 // 2**i or 1, max(1, 2 // 2**i))) for i in range(3)]
    figure = attention_figure(frames, maps)
    assert figure.shape[0] == 4 * (32 + 2) + 2  # frames + 3 granularities
    # The overlay of granularity 2 sits in its row, unchanged.
    row = overlay_frames(frames, maps[1])
    top, left = 2 + 2 * (32 + 2), 56 + 2
    assert np.array_equal(figure[top : top + 32, left : left + 16], row[0])
    write_png(figure, tmp_path / "figure.png")
    assert cv2.imread(str(tmp_path / "figure.png")).shape == figure.shape
    assert [granularity_name(i) for i in range(4)] == ["G-1st", "G-2nd", "G-3rd", "G-4th"]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="frames but attention"):
        overlay_frames(grey_frames(2), np.ones((3, 2, 2)))
    with pytest.raises(ValueError, match="one tracklet"):
        overlay_frames(grey_frames(2), np.ones((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        overlay_frames(grey_frames(1), -np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="uint8"):
        overlay_frames(np.zeros((1, 4, 4, 3)), np.ones((1, 2, 2)))
