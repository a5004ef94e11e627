"""Image files: an allowlist of formats, each one's size read from its header before any decoding, and one
decoded image -> a model frame.

Only PNG, JPEG, GIF, BMP, WebP and TIFF reach OpenCV's decoders (identified by their leading magic bytes,
never by file name): every other format OpenCV could decode (PNM, EXR, HDR, JPEG 2000, Sun raster, PFM,
AVIF, ...) is refused before decoding. Each allowed format has a header reader here, so an image is held to
the frame-size limit before any pixel buffer is allocated; a header that cannot be read is refused too.
The header readers are hand-written because no decoder exposes "size without decoding" for all six formats
(Pillow's lazy open would, at the cost of a second decoding library with its own attack surface); each one
follows what the decoder itself does, e.g. the JPEG reader skips stray bytes before a marker exactly as
libjpeg does, so it finds the same frame header the decoder will use.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from models import model_frame_from_bgr

#: Formats that may reach a decoder, by their leading bytes (TIFF has two byte orders).
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WebP", "TIFF")
ACCEPTED_IMAGES_TEXT = "PNG, JPEG, GIF, BMP, WebP or TIFF"


def to_model_frame(image_bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    """One decoded OpenCV image (BGR) -> RGB uint8 (height, width, 3): the contract's conversion, the one
    training applies to dataset frames."""
    return model_frame_from_bgr(image_bgr, height, width)


def image_format(data: bytes) -> str | None:
    """Which allowed format the bytes are, from their magic bytes; None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


# ------------------------------------------------------------------------------------------ header readers
def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RSTn, SOI, EOI.
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The largest frame size of the SOF segments before the first scan.

    Walks the markers as libjpeg's ``next_marker`` does: bytes that are not 0xFF between segments are skipped
    (libjpeg only warns about "extraneous bytes before marker"), and runs of 0xFF are fill bytes. So a stray
    byte before the frame header does not hide it. A JPEG whose scan starts before any frame header, or whose
    frame header declares a zero size (DNL, which libjpeg does not support), has no size: None.
    """
    size: tuple[int, int] | None = None
    position = 2
    length = len(data)
    while position < length:
        if data[position] != 0xFF:
            position += 1  # extraneous byte: skipped, as libjpeg does
            continue
        while position < length and data[position] == 0xFF:
            position += 1  # fill bytes
        if position >= length:
            break
        marker = data[position]
        position += 1
        if marker == 0x00 or marker in _JPEG_STANDALONE_MARKERS:
            if marker == 0xD9:  # EOI
                break
            continue
        if position + 2 > length:
            break
        (segment_length,) = struct.unpack(">H", data[position : position + 2])
        if marker in _JPEG_SOF_MARKERS:
            if position + 7 > length:
                return None
            height, width = struct.unpack(">HH", data[position + 3 : position + 7])
            if width == 0 or height == 0:
                return None
            size = (max(width, size[0]), max(height, size[1])) if size else (width, height)
        if marker == 0xDA:  # start of scan: the decoder has its frame header by now
            return size
        position += segment_length
    return size


def _gif_size(data: bytes) -> tuple[int, int] | None:
    """The logical screen, widened to every image descriptor's extent (a frame may claim to be larger)."""
    if len(data) < 13:
        return None
    width, height = struct.unpack("<HH", data[6:10])
    flags = data[10]
    position = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    length = len(data)
    while position < length:
        block = data[position]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            position += 2
        elif block == 0x2C:  # image descriptor
            if position + 10 > length:
                break
            descriptor = data[position + 1 : position + 10]
            left, top, frame_width, frame_height, frame_flags = struct.unpack("<HHHHB", descriptor)
            width, height = max(width, left + frame_width), max(height, top + frame_height)
            position += 10
            if frame_flags & 0x80:
                position += 3 * 2 ** ((frame_flags & 7) + 1)
            position += 1  # LZW minimum code size
        else:
            break  # not a GIF block: the decoder stops here too
        while position < length and data[position] != 0:  # data sub-blocks, up to the terminator
            position += data[position] + 1
        position += 1
    return width, height


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


# Tiles are decoded into buffers of their own size: TileWidth/TileLength count as sizes too.
_TIFF_SIZE_TAGS = {256: 0, 257: 1, 322: 0, 323: 1}
_TIFF_MAX_DIRECTORIES = 64


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """The largest ImageWidth (or TileWidth) x ImageLength (or TileLength) over the directories (pages); None
    if they have no size."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    width = height = 0
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) < _TIFF_MAX_DIRECTORIES:
        seen.add(offset)
        if offset + 2 > len(data):
            break
        (count,) = struct.unpack(order + "H", data[offset : offset + 2])
        for index in range(count):
            entry = offset + 2 + 12 * index
            if entry + 12 > len(data):
                break
            tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
            if tag not in _TIFF_SIZE_TAGS:
                continue
            if kind == 3:  # SHORT
                (value,) = struct.unpack(order + "H", data[entry + 8 : entry + 10])
            elif kind == 4:  # LONG
                (value,) = struct.unpack(order + "I", data[entry + 8 : entry + 12])
            else:
                return None  # a size of another type: libtiff would refuse it as well
            if _TIFF_SIZE_TAGS[tag] == 0:
                width = max(width, value)
            else:
                height = max(height, value)
        next_field = offset + 2 + 12 * count
        if next_field + 4 > len(data):
            break
        (offset,) = struct.unpack(order + "I", data[next_field : next_field + 4])
    if not width or not height:
        return None
    return width, height


_READERS = {"PNG": _png_size, "JPEG": jpeg_size, "GIF": _gif_size, "BMP": _bmp_size, "WebP": _webp_size,
            "TIFF": _tiff_size}


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of an allowed format without decoding; None when the bytes are
    not one of them or the header cannot be read."""
    kind = image_format(data)
    if kind is None:
        return None
    try:
        return _READERS[kind](data)
    except (struct.error, IndexError):
        return None


def reduced_read_flag(kind: str, width: int, height: int, target_width: int, target_height: int) -> tuple[int, int]:
    """(imdecode flag, scale divisor): JPEG decodes at 1/2, 1/4 or 1/8 size in the codec itself (far less
    work) when the reduced image stays at least twice the model's size on both sides, so the final resize
    still averages over several decoded pixels. Other formats decode at full size."""
    if kind == "JPEG":
        for divisor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                              (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if width // divisor >= 2 * target_width and height // divisor >= 2 * target_height:
                return flag, divisor
    return cv2.IMREAD_COLOR, 1
