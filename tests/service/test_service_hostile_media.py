"""Hostile media at the decoder: FFmpeg kept to the upload itself, archive header bombs, image formats and
sizes checked before decoding, decoder errors as 4xx, work bounded by sampling and a pixel budget."""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from service_media import encode_image, encode_video, level_frames, tar_bytes, zip_bytes

from service.decoding import DecodeLimits, NamedMedia, TrackletDecoder, image_header_size
from service.decoding import images as decoding_images
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
        capture = decoding_video._new_capture(stream, demuxer, raw=False, allow_files=False)
        assert not capture.isOpened(), demuxer
        capture.release()
    # The demuxer allowed, but the concat child needs the file protocol: refused as well.
    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
    stream.seek(0)
    capture = decoding_video._new_capture(stream, "concat", raw=False, allow_files=False)
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
        from test_service_hostile_media import mjpeg_avi_with_lying_frames
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

    from contextlib import contextmanager

    @contextmanager
    def spying_open(data, spill, raw=False):
        with real_open(data, spill, raw) as capture:
            yield capture if raw else Spy(capture)

    monkeypatch.setattr("service.decoding.decoder.open_capture", spying_open)
    result = TrackletDecoder(HEIGHT, WIDTH, T).decode_video(encode_video(level_frames([10] * 40), "MJPG", ".avi"))
    assert result.frames_decoded == 40 and len(retrieved) == 4


# -------------------------------------------------------------------------------------------------- images
def jpeg_with_stray_byte(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF is rewritten to width x height, with one stray byte before the SOF marker
    (libjpeg skips it with a warning and decodes at the SOF's size)."""
    data = bytearray(encode_image(np.full((16, 16, 3), 99, np.uint8), ".jpg"))
    position = data.find(b"\xff\xc0")
    data[position + 5 : position + 9] = struct.pack(">HH", height, width)
    return bytes(data[:position] + b"\x00" + data[position:])


def tiff_header(width: int, height: int, little: bool = True) -> bytes:
    """A minimal TIFF (one IFD, width/length as LONG) followed by a few bytes: a header-only bomb."""
    order = "<" if little else ">"
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 8 + 4), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack(order + "H", len(entries)) + b"".join(
        struct.pack(order + "HHII", tag, kind, count, value) if kind == 4 else
        struct.pack(order + "HHIHH", tag, kind, count, value, 0) for tag, kind, count, value in entries
    ) + struct.pack(order + "I", 0)
    return (b"II*\x00" if little else b"MM\x00*") + struct.pack(order + "I", 8) + ifd + b"\x00" * 16


def test_jpeg_stray_byte_does_not_hide_the_frame_size(decoder, monkeypatch):
    bomb = jpeg_with_stray_byte(20000, 20000)
    assert image_header_size(bomb) == (20000, 20000)
    monkeypatch.setattr(decoding_images.cv2, "imdecode", lambda *a: pytest.fail("decoded a bomb"))
    with pytest.raises(LimitExceededError, match="20000x20000"):
        decoder.decode_images([NamedMedia("stray.jpg", bomb)])


def test_jpeg_stray_byte_within_limits_still_decodes(decoder):
    image = jpeg_with_stray_byte(16, 16)
    assert image_header_size(image) == (16, 16)
    assert decoder.decode_images([NamedMedia("ok.jpg", image)]).frames.shape == (T, HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("little", [True, False])
def test_tiff_bomb_is_refused_from_its_header(decoder, little, monkeypatch):
    bomb = tiff_header(20000, 20000, little)
    assert image_header_size(bomb) == (20000, 20000)
    monkeypatch.setattr(decoding_images.cv2, "imdecode", lambda *a: pytest.fail("decoded a bomb"))
    with pytest.raises(LimitExceededError, match="20000x20000"):
        decoder.decode_images([NamedMedia("bomb.tif", bomb)])


def test_gif_frame_larger_than_its_screen_counts(decoder):
    screen = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 30000, 30000, 0) + b"\x02\x02\x44\x01\x00"
    gif = screen + frame + b"\x3b"
    assert image_header_size(gif) == (30000, 30000)
    with pytest.raises(LimitExceededError):
        decoder.decode_images([NamedMedia("wide.gif", gif)])


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("grey.pgm", b"P5\n60000 60000\n255\n" + b"\x00" * 64),
        ("colour.ppm", b"P6\n16 16\n255\n" + b"\x00" * 768),
        ("image.exr", b"\x76\x2f\x31\x01" + b"\x00" * 64),
        ("image.hdr", b"#?RADIANCE\n" + b"\x00" * 64),
        ("image.jp2", b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 64),
        ("image.ras", b"\x59\xa6\x6a\x95" + b"\x00" * 64),
        ("bigtiff.tif", b"II+\x00" + b"\x00" * 64),
        ("notes.txt", b"just text"),
    ],
)
def test_formats_outside_the_allowlist_are_refused_before_decoding(decoder, name, data, monkeypatch):
    monkeypatch.setattr(decoding_images.cv2, "imdecode", lambda *a: pytest.fail("decoded a refused format"))
    with pytest.raises(InvalidMediaError) as error:
        decoder.decode_images([NamedMedia(name, data)])
    assert error.value.code == "invalid_media" and error.value.status_code == 422
    assert "not an image in an accepted format" in error.value.message


def test_an_opencv_exception_is_the_clients_error(decoder, monkeypatch):
    def raising_imdecode(*args):
        raise cv2.error("OpenCV(5.0) imgcodecs: image is too large")

    monkeypatch.setattr(decoding_images.cv2, "imdecode", raising_imdecode)
    with pytest.raises(InvalidMediaError):
        decoder.decode_images([NamedMedia("a.png", encode_image(np.zeros((8, 8, 3), np.uint8)))])


def test_opencv_pixel_limit_is_set_from_the_frame_limit_before_cv2_loads():
    """And OpenCV really applies it: with a 300-pixel limit, a 400x400 PNG no longer decodes in cv2 itself."""
    script = textwrap.dedent(
        """
        import os, service, cv2, numpy as np
        print(os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"])
        for side in (300, 400):
            png = cv2.imencode(".png", np.zeros((side, side, 3), np.uint8))[1]
            try:
                decoded = cv2.imdecode(png, cv2.IMREAD_COLOR)
            except cv2.error:
                decoded = None
            print(side, decoded is not None)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "REID_MAX_FRAME_DIMENSION": "300"}
    env.pop("OPENCV_IO_MAX_IMAGE_PIXELS", None)
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
                            cwd=REPO_ROOT, check=True).stdout.split("\n")
    assert output[:3] == [str(300 * 300), "300 True", "400 False"]


def test_only_sampled_images_are_decoded_and_big_jpegs_decode_reduced(decoder, monkeypatch):
    calls = []
    real = cv2.imdecode

    def counting_imdecode(buffer, flag):
        calls.append(flag)
        return real(buffer, flag)

    monkeypatch.setattr(decoding_images.cv2, "imdecode", counting_imdecode)
    png = encode_image(np.full((20, 10, 3), 50, np.uint8))
    decoder.decode_images([NamedMedia(f"{k}.png", png) for k in range(40)])
    assert len(calls) == T  # 40 headers read, 4 frames decoded
    calls.clear()
    big = encode_image(np.full((320, 256, 3), 50, np.uint8), ".jpg")  # a quarter is still twice 32x16
    result = TrackletDecoder(HEIGHT, WIDTH, T).decode_images([NamedMedia("big.jpg", big)])
    assert calls == [cv2.IMREAD_REDUCED_COLOR_4]
    assert abs(float(result.frames.mean()) - 50) < 3


def test_image_pixel_budget(monkeypatch):
    png = encode_image(np.full((100, 100, 3), 50, np.uint8))
    decoder = TrackletDecoder(HEIGHT, WIDTH, T, DecodeLimits(max_decoded_pixels=3 * 100 * 100))
    with pytest.raises(LimitExceededError) as error:
        decoder.decode_images([NamedMedia(f"{k}.png", png) for k in range(4)])
    assert error.value.code == "too_many_pixels"
    assert decoder.decode_images([NamedMedia(f"{k}.png", png) for k in range(3)]).frames_decoded == 3


# ------------------------------------------------------------------------------------------------ archives
def header_bomb(kind: str, declared: int, actual: int) -> bytes:
    """A .tar.gz whose first header is a GNU long name or a PAX header declaring ``declared`` bytes, followed
    by ``actual`` zero bytes (they compress to almost nothing)."""
    info = tarfile.TarInfo("././@LongLink" if kind == "gnu" else "pax")
    info.type = tarfile.GNUTYPE_LONGNAME if kind == "gnu" else tarfile.XHDTYPE
    info.size = declared
    header = info.tobuf(format=tarfile.GNU_FORMAT if kind == "gnu" else tarfile.USTAR_FORMAT)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=1) as stream:
        stream.write(header)
        zeros = b"\x00" * (1 << 20)
        for _ in range(actual >> 20):
            stream.write(zeros)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["gnu", "pax"])
def test_tar_header_bomb_is_refused_with_memory_bounded_by_the_limit(kind, tmp_path):
    """A header declaring 1 GiB over 256 MiB of real (compressed) zeros, with an 8 MiB limit: refused, and the
    child's peak memory grows by far less than what the header declares or the zeros hold."""
    bomb = header_bomb(kind, 1 << 30, 256 << 20)
    assert len(bomb) < 2_000_000
    (tmp_path / "bomb.tar.gz").write_bytes(bomb)
    script = textwrap.dedent(
        """
        import resource, sys
        from pathlib import Path
        from service.decoding import DecodeLimits, read_archive
        from service.errors import LimitExceededError
        data = Path(sys.argv[1]).read_bytes()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            read_archive(data, DecodeLimits(max_archive_bytes=8 << 20))
            print("accepted")
        except LimitExceededError as error:
            print(error.code)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bomb.tar.gz")], capture_output=True,
                            text=True, timeout=120, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    code, grown_mib = result.stdout.split()[-2:]
    assert code == "archive_too_large"
    assert int(grown_mib) < 40


def test_budget_reader_stops_any_read_at_the_limit():
    from service.decoding.archives import BudgetReader

    reader = BudgetReader(io.BytesIO(b"\x00" * 10_000), DecodeLimits(max_archive_bytes=4096))
    assert len(reader.read(4000)) == 4000
    with pytest.raises(LimitExceededError):
        reader.read(1 << 30)  # a huge request reads only up to the limit + 1 before refusing
    assert reader.consumed == 4097


def test_tar_headers_count_against_the_budget():
    # 30 entries of 100 bytes: 3000 bytes of content, but 30 x (512 header + 512 padded data) = 30 KiB read.
    entries = [(f"{k}.png", b"\x01" * 100) for k in range(30)]
    with pytest.raises(LimitExceededError):
        TrackletDecoder(HEIGHT, WIDTH, T, DecodeLimits(max_archive_bytes=20_000)).decode_archive(tar_bytes(entries))


def zip_with_lying_end_record(entries: int, declared: int) -> bytes:
    data = bytearray(zip_bytes([(f"{k}.png", b"x") for k in range(entries)]))
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", declared, declared)
    return bytes(data)


def test_zip_whose_end_record_understates_its_entries_is_refused_fast(decoder, monkeypatch):
    def no_zipfile(*args, **kwargs):
        raise AssertionError("zipfile must not parse a directory this large")

    many, few = zip_with_lying_end_record(5000, 1), zip_with_lying_end_record(3, 1)
    monkeypatch.setattr(zipfile, "ZipFile", no_zipfile)
    with pytest.raises(LimitExceededError) as error:
        decoder.decode_archive(many)
    assert error.value.code == "archive_too_many_entries"
    with pytest.raises(InvalidMediaError, match="declares 1 entries but its central directory holds 3"):
        decoder.decode_archive(few)


def test_a_tar_holding_a_zip_is_not_expanded(decoder):
    inner = zip_bytes([(f"{k}.png", encode_image(frame)) for k, frame in enumerate(level_frames([10, 20]))])
    with pytest.raises(InvalidMediaError, match="inner.zip"):
        decoder.decode_archive(tar_bytes([("inner.zip", inner)]))
    # A .tar.gz of a bare zip is not a tar: refused, not read as the zip.
    with pytest.raises(InvalidMediaError):
        decoder.decode_archive(gzip.compress(inner))


def test_vp8_key_frames_larger_than_the_container_says_are_refused_before_decoding(decoder):
    video = bytearray(encode_video(level_frames([10 * (k + 1) for k in range(6)], 48, 24), "VP80", ".mkv"))
    start = video.find(b"\x9d\x01\x2a")  # the key frame's start code, then 14-bit width and height
    assert start > 0
    video[start + 3 : start + 7] = struct.pack("<HH", 16000, 16000)
    with pytest.raises(LimitExceededError, match="Frame 1 of the video is 16000x16000"):
        decoder.decode_video(bytes(video))


def test_tiff_tiles_count_as_sizes():
    tiled = bytearray(tiff_header(100, 100))
    # Rewrite the StripByteCounts entry (tag 279) into a TileWidth (322) of 30000.
    entry = tiled.find(struct.pack("<HH", 279, 4))
    tiled[entry : entry + 12] = struct.pack("<HHII", 322, 4, 1, 30000)
    assert image_header_size(bytes(tiled)) == (30000, 100)


def test_sparse_tar_members_are_refused(decoder):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo("frame.png")
        info.type = tarfile.GNUTYPE_SPARSE
        archive.addfile(info)
    with pytest.raises(InvalidMediaError, match="sparse"):
        decoder.decode_archive(buffer.getvalue())


# ------------------------------------------------------------------------------------- mutated inputs
def mutations(data: bytes, count: int, seed: int) -> list[bytes]:
    """``count`` copies of the bytes with a few random bytes changed, some also cut short."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mutated = bytearray(data)
        for position in rng.integers(0, len(mutated), size=int(rng.choice([1, 3, 10]))):
            mutated[position] = int(rng.integers(0, 256))
        out.append(bytes(mutated[: int(rng.integers(len(mutated) // 2, len(mutated)))] if rng.random() < 0.2
                         else mutated))
    return out


def test_corrupted_images_and_archives_are_always_the_clients_error():
    """Damaged files of every accepted kind: whatever the decoding library raises becomes a 4xx error."""
    from service.errors import ServiceError

    decoder = TrackletDecoder(HEIGHT, WIDTH, T)
    frame = level_frames([90], 24, 16)[0]
    members = [(f"{k}.png", encode_image(frame)) for k in range(4)]
    samples = {extension: encode_image(frame, extension) for extension in (".png", ".jpg", ".tiff", ".gif", ".webp",
                                                                           ".bmp")}
    archives = {"zip": zip_bytes(members, zipfile.ZIP_DEFLATED), "tar.gz": tar_bytes(members, "w:gz"),
                "tar.bz2": tar_bytes(members, "w:bz2"), "tar.xz": tar_bytes(members, "w:xz")}
    for seed, (name, data) in enumerate([*samples.items(), *archives.items()]):
        for mutated in mutations(data, 40, seed):
            try:
                if name in archives:
                    decoder.decode_archive(mutated)
                else:
                    decoder.decode_images([NamedMedia(f"frame{name}", mutated)])
            except ServiceError as error:
                assert 400 <= error.status_code < 500, (name, error)


def test_corrupted_videos_are_always_the_clients_error_and_never_crash():
    """In a child process, so that a crash inside FFmpeg would show as a failure rather than end the run."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, "tests/service")
        from service_media import encode_video, level_frames
        from test_service_hostile_media import mutations
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
