"""Hostile images and archives at the decoder: formats and sizes checked before decoding, archive header
bombs, decoder errors as 4xx, work bounded by sampling and a pixel budget. Videos: test_service_hostile_video.py."""

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
from service_media import encode_image, level_frames, mutations, tar_bytes, zip_bytes

from service.decoding import DecodeLimits, NamedMedia, TrackletDecoder, image_header_size, read_archive
from service.decoding import images as decoding_images
from service.errors import InvalidMediaError, LimitExceededError

HEIGHT, WIDTH, T = 32, 16, 4
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def decoder() -> TrackletDecoder:
    return TrackletDecoder(HEIGHT, WIDTH, T, DecodeLimits(max_frames=50, max_frame_dimension=200,
                                                          max_archive_entries=20, max_archive_bytes=200_000))


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
    """A header declaring 1 GiB over 256 MiB of real (compressed) zeros, with a 32 MiB limit: refused from the
    header itself, and the child's peak memory grows by far less than the header declares or the zeros hold."""
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
            read_archive(data, DecodeLimits(max_archive_bytes=32 << 20))
            print("accepted")
        except LimitExceededError as error:
            print(error.code if "extended header" in error.message else "refused late: " + error.message)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bomb.tar.gz")], capture_output=True,
                            text=True, timeout=120, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    code, grown_mib = result.stdout.split()[-2:]
    assert code == "archive_too_large"
    assert int(grown_mib) < 20


def test_budget_reader_bounds_even_a_header_within_the_limit():
    """A long-name header within the limit but over the data actually there: read through the budget reader,
    never more than the limit (8 MiB here), and refused as corrupt."""
    bomb = header_bomb("gnu", 6 << 20, 64 << 20)  # 6 MiB name, then 64 MiB of zeros (no valid next header)
    with pytest.raises((InvalidMediaError, LimitExceededError)):
        read_archive(bomb, DecodeLimits(max_archive_bytes=8 << 20))


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
