"""Decoding uploads into the model's T frames: each media kind, preprocessing, limits and unsafe archives."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from service_media import (
    encode_image,
    encode_video,
    level_frames,
    png_header_only,
    tar_bytes,
    tar_with_member,
    tracklet_frames,
    zip_bytes,
    zip_with_symlink,
)

from service.decoding import (
    DecodeLimits,
    NamedMedia,
    TrackletDecoder,
    image_header_size,
    natural_sort_key,
    to_model_frame,
)
from service.decoding import images as decoding_images
from service.decoding import video as decoding_video
from service.errors import InvalidMediaError, LimitExceededError, UnsafeArchiveError

HEIGHT, WIDTH, T = 32, 16, 4
# Well separated grey levels: frame k of a test tracklet has value LEVELS[k].
LEVELS = [10, 40, 70, 100, 130, 160, 190, 220, 250, 25]


@pytest.fixture
def decoder() -> TrackletDecoder:
    return TrackletDecoder(HEIGHT, WIDTH, T, DecodeLimits(max_frames=50, max_frame_dimension=200,
                                                          max_archive_entries=20, max_archive_bytes=200_000))


def picked_levels(frames: np.ndarray) -> list[int]:
    """Which LEVELS value each model frame carries (nearest), robust to lossy codecs."""
    means = frames.reshape(len(frames), -1).mean(axis=1)
    return [min(LEVELS, key=lambda level, mean=mean: abs(level - mean)) for mean in means]


# ------------------------------------------------------------------------------------------ preprocessing
def test_model_frame_is_rgb_resized_uint8_like_training():
    frame = tracklet_frames(seed=3, count=1, height=50, width=30)[0]
    out = to_model_frame(frame, HEIGHT, WIDTH)
    assert out.shape == (HEIGHT, WIDTH, 3) and out.dtype == np.uint8
    expected = cv2.resize(frame[:, :, ::-1].copy(), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out, expected)
    # Channel order really is swapped: a pure-blue BGR frame becomes pure blue in RGB (last channel).
    blue = np.zeros((8, 4, 3), np.uint8)
    blue[..., 0] = 255
    assert to_model_frame(blue, 8, 4)[0, 0].tolist() == [0, 0, 255]


def test_png_frames_decode_exactly_in_upload_order(decoder):
    frames = tracklet_frames(seed=1, count=10)
    uploads = [NamedMedia(f"f{k}.png", encode_image(frame)) for k, frame in enumerate(frames)]
    result = decoder.decode_images(uploads)
    assert result.frames.shape == (T, HEIGHT, WIDTH, 3) and result.frames.dtype == np.uint8
    assert result.frames_decoded == 10 and result.frames_used == 4
    assert result.frame_indices == (1, 3, 6, 8)
    for model_frame, index in zip(result.frames, result.frame_indices, strict=True):
        np.testing.assert_array_equal(model_frame, to_model_frame(frames[index], HEIGHT, WIDTH))


def test_jpeg_frames_and_short_tracklets_repeat_frames(decoder):
    uploads = [NamedMedia(f"{k}.jpg", encode_image(frame, ".jpg")) for k, frame in enumerate(level_frames(LEVELS[:3]))]
    result = decoder.decode_images(uploads)
    assert result.frame_indices == (0, 1, 1, 2)
    assert result.frames_decoded == 3 and result.frames_used == 3
    assert picked_levels(result.frames) == [LEVELS[0], LEVELS[1], LEVELS[1], LEVELS[2]]


def test_grey_and_alpha_images_become_three_channel_rgb(decoder):
    grey = encode_image(np.full((20, 10), 90, np.uint8))
    rgba = encode_image(np.full((20, 10, 4), 90, np.uint8))
    result = decoder.decode_images([NamedMedia("g.png", grey), NamedMedia("a.png", rgba)])
    assert result.frames.shape == (T, HEIGHT, WIDTH, 3)
    assert np.all(result.frames == 90)


def test_image_that_is_not_an_image_is_rejected_with_its_name(decoder):
    good = encode_image(level_frames([10])[0])
    with pytest.raises(InvalidMediaError, match="Frame 2 \\('notes.txt'\\)"):
        decoder.decode_images([NamedMedia("a.png", good), NamedMedia("notes.txt", b"just text")])
    with pytest.raises(InvalidMediaError):
        decoder.decode_images([NamedMedia("cut.png", good[: len(good) // 2])])
    with pytest.raises(InvalidMediaError):
        decoder.decode_images([NamedMedia("empty.png", b"")])
    with pytest.raises(InvalidMediaError, match="No frames"):
        decoder.decode_images([])


def test_too_many_frames(decoder):
    frame = encode_image(level_frames([10], 8, 4)[0])
    with pytest.raises(LimitExceededError) as error:
        decoder.decode_images([NamedMedia(f"{k}.png", frame) for k in range(51)])
    assert error.value.code == "too_many_frames" and error.value.status_code == 413


# ---------------------------------------------------------------------------------------------- headers
@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".webp"])
def test_header_size_matches_the_encoded_image(extension):
    image = tracklet_frames(seed=0, count=1, height=37, width=23)[0]
    assert image_header_size(encode_image(image, extension)) == (23, 37)


def test_header_size_of_gif_and_unknown_formats():
    assert image_header_size(b"GIF89a" + (640).to_bytes(2, "little") + (480).to_bytes(2, "little") + b"\0" * 8) == (
        640, 480)
    assert image_header_size(b"plain text, not an image") is None
    assert image_header_size(b"\x89PNG\r\n\x1a\n") is None  # truncated header: unknown, not a crash


def test_huge_png_is_rejected_from_its_header_before_decoding(decoder, monkeypatch):
    def fail_imdecode(*args, **kwargs):
        raise AssertionError("imdecode must not run for an oversized header")

    monkeypatch.setattr(decoding_images.cv2, "imdecode", fail_imdecode)
    with pytest.raises(LimitExceededError, match="20000x20000") as error:
        decoder.decode_images([NamedMedia("huge.png", png_header_only(20000, 20000))])
    assert error.value.code == "frame_too_large"


def test_tiff_over_the_dimension_limit_is_refused_from_its_header(decoder, monkeypatch):
    tiff = encode_image(np.zeros((10, 201, 3), np.uint8), ".tiff")
    assert image_header_size(tiff) == (201, 10)

    def fail_imdecode(*args, **kwargs):
        raise AssertionError("imdecode must not run for an oversized header")

    monkeypatch.setattr(decoding_images.cv2, "imdecode", fail_imdecode)
    with pytest.raises(LimitExceededError, match="201x10"):
        decoder.decode_images([NamedMedia("wide.tiff", tiff)])


# ------------------------------------------------------------------------------------------------ video
@pytest.mark.parametrize(("fourcc", "extension"), [("mp4v", ".mp4"), ("MJPG", ".avi"), ("VP80", ".mkv")])
def test_video_decodes_sampled_frames(decoder, fourcc, extension):
    video = encode_video(level_frames(LEVELS), fourcc, extension)
    result = decoder.decode_video(video)
    assert result.frames_decoded == 10
    assert result.frame_indices == (1, 3, 6, 8)
    assert result.frames.shape == (T, HEIGHT, WIDTH, 3) and result.frames.dtype == np.uint8
    assert picked_levels(result.frames) == [LEVELS[1], LEVELS[3], LEVELS[6], LEVELS[8]]


def test_video_from_a_temporary_file_when_opencv_cannot_read_memory(decoder, monkeypatch, tmp_path):
    real_capture = cv2.VideoCapture
    opened_paths = []

    def capture_without_streams(source, *args):
        if not isinstance(source, str):
            raise TypeError("this OpenCV cannot read streams")
        opened_paths.append(source)
        return real_capture(source, *args)

    monkeypatch.setattr(decoding_video.cv2, "VideoCapture", capture_without_streams)
    monkeypatch.setattr(decoding_video.tempfile, "tempdir", str(tmp_path))
    result = decoder.decode_video(encode_video(level_frames(LEVELS[:5]), "MJPG", ".avi"))
    assert result.frames_decoded == 5
    assert picked_levels(result.frames) == [LEVELS[0], LEVELS[1], LEVELS[3], LEVELS[4]]
    assert len(set(opened_paths)) == 1 and len(opened_paths) == 2  # one spill file, read twice
    assert list(tmp_path.iterdir()) == []  # and removed afterwards


def test_short_video_repeats_frames(decoder):
    result = decoder.decode_video(encode_video(level_frames(LEVELS[:2]), "MJPG", ".avi"))
    assert result.frames_decoded == 2 and result.frames_used == 2
    assert picked_levels(result.frames) == [LEVELS[0], LEVELS[0], LEVELS[1], LEVELS[1]]


@pytest.mark.parametrize(
    "payload",
    [b"this is a text file, not a video\n" * 20, b"", bytes(range(256)) * 40],
    ids=["text", "empty", "noise"],
)
def test_not_a_video(decoder, payload):
    with pytest.raises(InvalidMediaError):
        decoder.decode_video(payload)


@pytest.mark.parametrize(("fourcc", "extension"), [("mp4v", ".mp4"), ("MJPG", ".avi"), ("VP80", ".mkv")])
def test_truncated_video_is_rejected(decoder, fourcc, extension):
    video = encode_video(level_frames(LEVELS * 3), fourcc, extension)
    with pytest.raises(InvalidMediaError, match="truncated"):
        decoder.decode_video(video[: len(video) // 2])


def test_video_limits(decoder):
    with pytest.raises(LimitExceededError) as error:
        decoder.decode_video(encode_video(level_frames([10] * 51, 16, 8), "MJPG", ".avi"))
    assert error.value.code == "too_many_frames"
    with pytest.raises(LimitExceededError) as error:
        decoder.decode_video(encode_video(level_frames([10, 20], 240, 64), "MJPG", ".avi"))
    assert error.value.code == "frame_too_large"


def test_many_failed_video_decodes_do_not_crash_the_process(tmp_path):
    # Regression: OpenCV keeps no reference to the in-memory stream; once it was collected early, FFmpeg read
    # freed memory and the process died with SIGSEGV on a truncated upload. Run in a child to see a crash.
    video = encode_video(level_frames(LEVELS * 3), "VP80", ".mkv")
    (tmp_path / "clip.mkv").write_bytes(video)
    script = (
        "import gc, sys; from pathlib import Path\n"
        "from service.decoding import TrackletDecoder\n"
        "data = Path(sys.argv[1]).read_bytes(); decoder = TrackletDecoder(8, 4, 4)\n"
        "for cut in range(8, 1, -1):\n"
        "    for attempt in range(3):\n"
        "        try: decoder.decode_video(data[: len(data) * cut // 8])\n"
        "        except Exception: pass\n"
        "        gc.collect()\n"
        "print('survived')\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "clip.mkv")], capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-1500:]
    assert "survived" in result.stdout


# ---------------------------------------------------------------------------------------------- archives
def level_entries(levels, names):
    return [(name, encode_image(frame)) for name, frame in zip(names, level_frames(levels), strict=True)]


def test_natural_sort_key_orders_numbers_by_value():
    names = ["f10.png", "f2.png", "F1.png", "f1.png", "dir/f3.png", "f02.png"]
    assert sorted(names, key=natural_sort_key) == ["dir/f3.png", "F1.png", "f1.png", "f02.png", "f2.png", "f10.png"]


@pytest.mark.parametrize("kind", ["zip", "zip-deflated", "tar", "tar.gz"])
def test_archive_frames_come_in_file_name_order(decoder, kind):
    # Written out of order, and 10 must come after 9 (natural order, not text order).
    names = [f"track/{k}.png" for k in (3, 10, 1, 2, 9, 4, 5, 6, 7, 8)]
    levels_by_number = {k: LEVELS[k - 1] for k in range(1, 11)}
    entries = level_entries([levels_by_number[int(Path(name).stem)] for name in names], names)
    entries += [("track/", b""), ("__MACOSX/._1.png", b"junk"), ("track/.DS_Store", b"junk")] if "zip" in kind else []
    if kind == "zip":
        data = zip_bytes(entries)
    elif kind == "zip-deflated":
        data = zip_bytes(entries, zipfile.ZIP_DEFLATED)
    else:
        data = tar_bytes(entries, "w:gz" if kind == "tar.gz" else "w")
    result = decoder.decode_archive(data)
    assert result.frames_decoded == 10
    assert picked_levels(result.frames) == [levels_by_number[k] for k in (2, 4, 7, 9)]


def test_archive_rejections(decoder):
    good = level_entries([10], ["1.png"])
    cases = [
        (zip_bytes(good + [("../../etc/evil.png", good[0][1])]), UnsafeArchiveError, "climbs out"),
        (zip_bytes(good + [("/abs/evil.png", good[0][1])]), UnsafeArchiveError, "absolute"),
        (zip_bytes(good + [("..\\evil.png", good[0][1])]), UnsafeArchiveError, "climbs out"),
        (zip_with_symlink("link.png", "/etc/passwd"), UnsafeArchiveError, "symbolic link"),
        (tar_bytes(good + [("../evil.png", good[0][1])]), UnsafeArchiveError, "climbs out"),
        (zip_bytes([("readme.txt", b"hello")]), InvalidMediaError, "readme.txt"),
        (zip_bytes([("__MACOSX/._a.png", b"junk")]), InvalidMediaError, "no frame files"),
        (b"PK\x03\x04 not really a zip", InvalidMediaError, "neither"),
        (b"random bytes that are no archive" * 10, InvalidMediaError, "neither"),
        (b"", InvalidMediaError, "empty"),
    ]
    for data, error_type, message in cases:
        with pytest.raises(error_type, match=message):
            decoder.decode_archive(data)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "chardev", "fifo"])
def test_tar_links_and_devices_are_refused(decoder, kind):
    info = tarfile.TarInfo("frame.png")
    info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE,
                 "fifo": tarfile.FIFOTYPE}[kind]
    if kind in ("symlink", "hardlink"):
        info.linkname = "/etc/passwd"
    with pytest.raises(UnsafeArchiveError):
        decoder.decode_archive(tar_with_member(info))


def test_archive_limits(decoder):
    frame = encode_image(level_frames([10], 8, 4)[0])
    with pytest.raises(LimitExceededError) as error:
        decoder.decode_archive(zip_bytes([(f"{k}.png", frame) for k in range(21)]))
    assert error.value.code == "archive_too_many_entries"
    with pytest.raises(LimitExceededError) as error:
        decoder.decode_archive(tar_bytes([(f"{k}.png", frame) for k in range(21)]))
    assert error.value.code == "archive_too_many_entries"
    # Zip bomb: 1 MB of zeros deflates to about 1 KB, far below the upload size, but expands past the limit.
    bomb = zip_bytes([("1.png", frame), ("2.png", b"\0" * 1_000_000)], zipfile.ZIP_DEFLATED)
    assert len(bomb) < 5_000
    with pytest.raises(LimitExceededError) as error:
        decoder.decode_archive(bomb)
    assert error.value.code == "archive_too_large"
    gz_bomb = tar_bytes([("1.png", frame), ("2.png", b"\0" * 1_000_000)], "w:gz")
    assert len(gz_bomb) < 5_000
    with pytest.raises(LimitExceededError) as error:
        decoder.decode_archive(gz_bomb)
    assert error.value.code == "archive_too_large"


def test_zip_that_understates_its_sizes_is_still_capped():
    # The central directory claims 10 bytes; the reader must not trust it.
    frame = encode_image(level_frames([10], 8, 4)[0])
    data = bytearray(zip_bytes([("1.png", frame), ("2.png", b"\0" * 50_000)]))
    real = (50_000).to_bytes(4, "little")
    fake = (10).to_bytes(4, "little")
    assert data.count(real) >= 2
    data = bytes(data).replace(real, fake)
    decoder = TrackletDecoder(HEIGHT, WIDTH, T, DecodeLimits(max_archive_bytes=20_000))
    with pytest.raises((LimitExceededError, InvalidMediaError)):
        decoder.decode_archive(data)


# ------------------------------------------------------------------------------------------ decoding pool
def test_decoding_pool_is_bounded_by_the_cores_and_decodes_exactly_what_one_thread_does(tmp_path):
    from service.decoding.decoder import available_cores

    cores = available_cores()
    serial = TrackletDecoder(HEIGHT, WIDTH, T, workers=1, test_mode="strided")
    pooled = TrackletDecoder(HEIGHT, WIDTH, T, workers=64, test_mode="strided")
    assert serial.workers == 1 and pooled.workers == cores
    assert TrackletDecoder(HEIGHT, WIDTH, T).workers == cores
    frames = tracklet_frames(seed=5, count=12, height=120, width=60)
    uploads = [NamedMedia(f"{k}.jpg", encode_image(frame, ".jpg")) for k, frame in enumerate(frames)]
    archive = tar_bytes([(f"t/{k}.png", encode_image(frame)) for k, frame in enumerate(frames)])
    video = encode_video(level_frames(LEVELS), "MJPG", ".avi")
    try:
        for decode in (lambda d: d.decode_images(uploads), lambda d: d.decode_archive(archive),
                       lambda d: d.decode_video(video)):
            one, many = decode(serial), decode(pooled)
            assert one.frame_indices == many.frame_indices and len(one.frames) >= 2 * T
            np.testing.assert_array_equal(one.frames, many.frames)
        if cores > 1:  # the work really ran on the pool's threads
            import threading

            assert any(thread.name.startswith("decode") for thread in threading.enumerate())
            assert serial._pool is None
    finally:
        pooled.close()
        serial.close()


def test_decoding_pool_reports_the_first_bad_frame_in_upload_order():
    decoder = TrackletDecoder(HEIGHT, WIDTH, T, workers=4)
    good = [encode_image(frame) for frame in level_frames(LEVELS)]
    uploads = [NamedMedia(f"{k}.png", data) for k, data in enumerate(good)]
    # Sampled positions are 1, 3, 6, 8: break 3 and 8 after their headers (sizes still readable).
    for position in (3, 8):
        uploads[position] = NamedMedia(f"{position}.png", good[position][: len(good[position]) // 2])
    try:
        for _ in range(5):  # whichever thread finishes first, frame 4 is the one named
            with pytest.raises(InvalidMediaError, match="Frame 4 \\('3.png'\\)"):
                decoder.decode_images(uploads)
    finally:
        decoder.close()
