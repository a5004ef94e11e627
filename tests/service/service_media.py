"""Media made on the fly for the service tests: tracklet frames, encoded images, videos and archives.

Frame ``k`` of a generated tracklet has a known mean brightness so tests can tell which source frame the
decoder picked even through lossy codecs.
"""

from __future__ import annotations

import io
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


def tracklet_frames(seed: int, count: int, height: int = 48, width: int = 24) -> list[np.ndarray]:
    """``count`` BGR uint8 frames of one synthetic 'person': a fixed random body pattern per seed that drifts
    a little from frame to frame (so different seeds embed far apart and frames differ slightly)."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8), (width, height),
                      interpolation=cv2.INTER_NEAREST)
    frames = []
    for index in range(count):
        shifted = np.roll(base, shift=index % 3, axis=1).astype(np.int16)
        frames.append(np.clip(shifted + (index % 5) * 4, 0, 255).astype(np.uint8))
    return frames


def level_frames(levels: Sequence[int], height: int = 48, width: int = 24) -> list[np.ndarray]:
    """Uniform grey BGR frames, frame k of value levels[k]: which frame was picked survives any codec."""
    return [np.full((height, width, 3), level, np.uint8) for level in levels]


def encode_image(frame: np.ndarray, extension: str = ".png") -> bytes:
    ok, buffer = cv2.imencode(extension, frame)
    assert ok, extension
    return buffer.tobytes()


def encode_video(frames: Sequence[np.ndarray], fourcc: str = "mp4v", extension: str = ".mp4", fps: int = 10) -> bytes:
    """A video file of the frames (mp4v .mp4, MJPG .avi and VP80 .mkv work with the OpenCV wheel)."""
    height, width = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / f"clip{extension}")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        assert writer.isOpened(), fourcc
        for frame in frames:
            writer.write(frame)
        writer.release()
        return Path(path).read_bytes()


def zip_bytes(entries: Sequence[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(entries: Sequence[tuple[str, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_with_member(info: tarfile.TarInfo) -> bytes:
    """A tar holding one special member (link, device, ...)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(info)
    return buffer.getvalue()


def zip_with_symlink(name: str, target: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = (0o120777 << 16)
        archive.writestr(info, target)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming a huge size, followed by a tiny (invalid) body: decoding it would
    try to allocate width x height x 3 bytes; a header check rejects it first."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat_data = zlib.compress(b"\x00" * 64)
    idat = struct.pack(">I", len(idat_data)) + b"IDAT" + idat_data + struct.pack(">I", zlib.crc32(b"IDAT" + idat_data))
    return b"\x89PNG\r\n\x1a\n" + chunk + idat


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
