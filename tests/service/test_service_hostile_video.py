"""Hostile videos at the decoder: FFmpeg kept to the upload itself (container allowlist, demuxer and protocol
whitelists), frame sizes read from every frame's header before decoding, unsampled frames never converted,
a pixel budget, damaged videos as 4xx."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import cv2
import pytest
from service_media import encode_video, level_frames

from service.decoding import DecodeLimits, TrackletDecoder
from service.decoding import video as decoding_video
from service.errors import InvalidMediaError, LimitExceededError

HEIGHT, WIDTH, T = 32, 16, 4
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def decoder() -> TrackletDecoder:
    return TrackletDecoder(HEIGHT, WIDTH, T, DecodeLimits(max_frames=50, max_frame_dimension=200,
                                                          max_archive_entries=20, max_archive_bytes=200_000))


@pytest.fixture
def server_file(tmp_path, monkeypatch) -> str:
    """A real video on the 'server's disk', named relative to the working directory (FFmpeg's concat
    demuxer in safe mode accepts relative names, which is how the attack reached files)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.avi").write_bytes(encode_video(level_frames([10, 20, 30, 40]), "MJPG", ".avi"))
    return "secret.avi"


# ------------------------------------------------------------------------------------ video: no file reads
def playlists(name: str) -> dict[str, bytes]:
    return {
        "concat": f"ffconcat version 1.0\nfile {name}\n".encode(),
        "concat-plain": f"file '{name}'\n".encode(),
        "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{name}\n#EXT-X-ENDLIST\n".encode(),
        "hls-file-url": f"#EXTM3U\n#EXTINF:10,\nfile:{name}\n#EXT-X-ENDLIST\n".encode(),
        "sdp": f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nm=video 9 RTP/AVP 26\na=x:{name}\n".encode(),
        "ffmetadata": f";FFMETADATA1\ntitle={name}\n".encode(),
        # Container magic bytes in front of a playlist: the magic passes, the demuxer whitelist does not.
        "mp4-magic-then-concat": b"\x00\x00\x00\x14ftypisom\x00\x00\x02\x00isom"
        + f"\nffconcat version 1.0\nfile {name}\n".encode(),
        "mkv-magic-then-hls": b"\x1a\x45\xdf\xa3" + f"\n#EXTM3U\n#EXTINF:10,\n{name}\n#EXT-X-ENDLIST\n".encode(),
    }


def test_playlists_naming_an_existing_or_a_missing_file_are_refused_alike(decoder, server_file):
    # The attack works against plain OpenCV (so the test data is real): the playlist decodes the server file.
    stream = io.BytesIO(playlists(server_file)["concat"])  # OpenCV keeps no reference to it
    plain = cv2.VideoCapture(stream, cv2.CAP_FFMPEG, [])
    assert plain.isOpened() and plain.grab()
    plain.release()
    for kind in playlists(server_file):
        errors = []
        for name in (server_file, "missing.avi"):
            with pytest.raises(InvalidMediaError) as error:
                decoder.decode_video(playlists(name)[kind])
            errors.append((error.value.status_code, error.value.code, error.value.message))
        assert errors[0] == errors[1], kind  # nothing tells whether the file exists
        assert errors[0][0] == 422


def test_the_ffmpeg_whitelists_are_applied_behind_the_in_memory_reader(server_file):
    """Even when a playlist got past the magic bytes, FFmpeg may use no demuxer but the sniffed one and no
    protocol (file, http, ...) behind the in-memory reader."""
    stream = io.BytesIO(playlists(server_file)["concat"])
    for demuxer in ("avi", "mov", "matroska", "mpegts"):
        stream.seek(0)
        capture = decoding_video.new_capture(stream, demuxer, raw=False, allow_files=False)
        assert not capture.isOpened(), demuxer
        capture.release()
    # The demuxer allowed, but the concat child needs the file protocol: refused as well.
    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
    stream.seek(0)
    capture = decoding_video.new_capture(stream, "concat", raw=False, allow_files=False)
    assert not capture.isOpened()
    capture.release()
    # And the options do not stay behind for other code in the process.
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ


@pytest.mark.parametrize(
    ("data", "container"),
    [
        (b"\x00\x00\x00\x18ftypmp42", "mov"),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x08mdat", "mov"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "matroska"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "avi"),
        ((b"\x47" + b"\x00" * 187) * 3, "mpegts"),
    ],
)
def test_container_allowlist_by_magic_bytes(data, container):
    assert decoding_video.video_container(data) == container


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00\x01\xba\x44", b"FLV\x01\x05", b"OggS\x00\x02", b"\x00\x00\x00\x01\x67\x42", b"#EXTM3U\n", b"GIF89a"],
    ids=["mpeg-ps", "flv", "ogg", "h264-raw", "m3u8", "gif"],
)
def test_other_containers_and_raw_streams_are_refused_before_ffmpeg(decoder, data, monkeypatch):
    def no_ffmpeg(*args, **kwargs):
        raise AssertionError("FFmpeg must not see this upload")

    monkeypatch.setattr(decoding_video.cv2, "VideoCapture", no_ffmpeg)
    with pytest.raises(InvalidMediaError) as error:
        decoder.decode_video(data * 40)
    assert error.value.code == "invalid_media" and "not a supported container" in error.value.message


# -------------------------------------------------------------------------------------------- video frames
def mjpeg_avi_with_lying_frames(width: int, height: int, count: int = 6) -> bytes:
    """An MJPEG .avi of small frames whose JPEG frame headers (SOF) are then rewritten to width x height:
    the container still says 24x48, each frame would decode at the large size."""
    video = bytearray(encode_video(level_frames([10 * (k + 1) for k in range(count)], 48, 24), "MJPG", ".avi"))
    start, patched = 0, 0
    while (position := video.find(b"\xff\xc0", start)) >= 0:
        video[position + 5 : position + 9] = struct.pack(">HH", height, width)
        start, patched = position + 9, patched + 1
    assert patched == count
    return bytes(video)


def test_mjpeg_frames_larger_than_the_container_says_are_refused_before_decoding(decoder):
    avi = mjpeg_avi_with_lying_frames(16000, 16000)
    stream = io.BytesIO(avi)  # OpenCV keeps no reference to it
    capture = cv2.VideoCapture(stream, cv2.CAP_FFMPEG, [])
    assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 24  # the container does lie
    capture.release()
    with pytest.raises(LimitExceededError, match="16000x16000") as error:
        decoder.decode_video(avi)
    assert error.value.code == "frame_too_large"


def test_mjpeg_frame_headers_are_read_in_a_child_without_decoding_them():
    """The refusal costs no decoding: the child's peak memory stays far below one 16000x16000 frame
    (768 MB as BGR, 384 MB as YUV)."""
    script = textwrap.dedent(
        """
        import resource, sys
        sys.path.insert(0, "tests/service")
        from test_service_hostile_video import mjpeg_avi_with_lying_frames
        from service.decoding import TrackletDecoder
        from service.errors import LimitExceededError
        avi = mjpeg_avi_with_lying_frames(16000, 16000)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            TrackletDecoder(32, 16, 4).decode_video(avi)
        except LimitExceededError:
            pass
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) < 100  # MiB


def test_video_pixel_budget_refuses_before_decoding():
    video = encode_video(level_frames([10] * 20, 48, 24), "MJPG", ".avi")
    # Sampling 4 of 20 frames decodes up to frame 18: 18 x 48 x 24 = 20736 pixels; a budget below refuses.
    small = TrackletDecoder(HEIGHT, WIDTH, T, DecodeLimits(max_decoded_pixels=20_000))
    with pytest.raises(LimitExceededError) as error:
        small.decode_video(video)
    assert error.value.code == "too_many_pixels"
    enough = TrackletDecoder(HEIGHT, WIDTH, T, DecodeLimits(max_decoded_pixels=21_000))
    assert enough.decode_video(video).frames_decoded == 20


def test_unsampled_video_frames_are_grabbed_never_retrieved(monkeypatch):
    retrieved = []
    real_open = decoding_video.open_capture

    class Spy:
        def __init__(self, capture):
            self.capture = capture

        def __getattr__(self, name):
            return getattr(self.capture, name)

        def retrieve(self):
            retrieved.append(True)
            return self.capture.retrieve()

    @contextmanager
    def spying_open(data, spill, raw=False):
        with real_open(data, spill, raw) as capture:
            yield capture if raw else Spy(capture)

    monkeypatch.setattr("service.decoding.decoder.open_capture", spying_open)
    result = TrackletDecoder(HEIGHT, WIDTH, T).decode_video(encode_video(level_frames([10] * 40), "MJPG", ".avi"))
    assert result.frames_decoded == 40 and len(retrieved) == 4


def test_vp8_key_frames_larger_than_the_container_says_are_refused_before_decoding(decoder):
    video = bytearray(encode_video(level_frames([10 * (k + 1) for k in range(6)], 48, 24), "VP80", ".mkv"))
    start = video.find(b"\x9d\x01\x2a")  # the key frame's start code, then 14-bit width and height
    assert start > 0
    video[start + 3 : start + 7] = struct.pack("<HH", 16000, 16000)
    with pytest.raises(LimitExceededError, match="Frame 1 of the video is 16000x16000"):
        decoder.decode_video(bytes(video))


def test_corrupted_videos_are_always_the_clients_error_and_never_crash():
    """In a child process, so that a crash inside FFmpeg would show as a failure rather than end the run."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, "tests/service")
        from service_media import encode_video, level_frames
        from service_media import mutations
        from service.decoding import TrackletDecoder
        from service.errors import ServiceError
        decoder = TrackletDecoder(32, 16, 4)
        frames = level_frames([10, 60, 110, 160, 210, 250])
        for seed, (fourcc, extension) in enumerate([("mp4v", ".mp4"), ("MJPG", ".avi"), ("VP80", ".mkv")]):
            for mutated in mutations(encode_video(frames, fourcc, extension), 30, seed):
                try:
                    decoder.decode_video(mutated)
                except ServiceError as error:
                    assert 400 <= error.status_code < 500, error
        print("survived")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0 and "survived" in result.stdout, result.stderr[-2000:]
