"""What legitimate users send is accepted: every image flavour and container the hostile-input checks could
wrongly refuse is enrolled through the real app, and decodes to the right picture."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_media import encode_image, encode_video, level_frames, tar_bytes, zip_bytes

from service.app import create_app
from service.config import Settings
from service.decoding import NamedMedia, TrackletDecoder

GREY = 120


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    settings = Settings(model_path=tiny_model, data_dir=tmp_path_factory.mktemp("legit"), device="cpu",
                        intra_op_threads=1, max_wait_ms=1, _env_file=None)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def pillow_bytes(image: Image.Image, format_name: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format_name, **options)
    return buffer.getvalue()


def images() -> dict[str, bytes]:
    """One uniform grey frame (value GREY after decoding) in each flavour users send."""
    bgr = np.full((48, 24, 3), GREY, np.uint8)
    return {
        "grey.png": encode_image(np.full((48, 24), GREY, np.uint8)),
        "rgba.png": encode_image(np.dstack([bgr, np.full((48, 24), 255, np.uint8)])),
        "16bit.png": encode_image(np.full((48, 24, 3), GREY * 257, np.uint16)),
        "16bit-grey.png": encode_image(np.full((48, 24), GREY * 257, np.uint16)),
        "16bit.tiff": encode_image(np.full((48, 24, 3), GREY * 257, np.uint16), ".tiff"),
        "plain.tiff": encode_image(bgr, ".tiff"),
        "pillow.tiff": pillow_bytes(Image.new("RGB", (24, 48), (GREY,) * 3), "TIFF", compression="tiff_lzw"),
        "cmyk.jpg": pillow_bytes(Image.new("CMYK", (24, 48), (0, 0, 0, 255 - GREY)), "JPEG", quality=95),
        "progressive.jpg": pillow_bytes(Image.new("RGB", (24, 48), (GREY,) * 3), "JPEG", progressive=True,
                                        quality=95),
        "photo.jpg": encode_image(bgr, ".jpg"),
        "lossy.webp": encode_image(bgr, ".webp"),
        "lossless.webp": pillow_bytes(Image.new("RGBA", (24, 48), (GREY, GREY, GREY, 255)), "WEBP", lossless=True),
        "frame.gif": pillow_bytes(Image.new("L", (24, 48), GREY), "GIF"),
        "frame.bmp": encode_image(bgr, ".bmp"),
        "grey.bmp": pillow_bytes(Image.new("L", (24, 48), GREY), "BMP"),
    }


def test_every_image_flavour_decodes_to_its_picture():
    decoder = TrackletDecoder(32, 16, 4)
    for name, data in images().items():
        frames = decoder.decode_images([NamedMedia(name, data)]).frames
        assert abs(float(frames.mean()) - GREY) < 4, name


@pytest.mark.parametrize("name", sorted(images()))
def test_every_image_flavour_is_enrolled(client, name):
    data = images()[name]
    response = client.post("/tracklets", files=[("frames", (name, data, "application/octet-stream"))] * 3)
    assert response.status_code == 201, (name, response.text)


@pytest.mark.parametrize(("fourcc", "extension"), [("mp4v", ".mp4"), ("MJPG", ".avi"), ("XVID", ".avi"),
                                                   ("VP80", ".mkv"), ("VP80", ".webm")])
def test_videos_are_enrolled(client, fourcc, extension):
    video = encode_video(level_frames([GREY] * 12), fourcc, extension)
    response = client.post("/tracklets", files=[("video", (f"clip{extension}", video, "video/x"))])
    assert response.status_code == 201, (fourcc, extension, response.text)
    assert response.json()["frames_decoded"] == 12


@pytest.mark.parametrize("mode", ["zip", "w", "w:gz", "w:bz2", "w:xz"])
def test_archives_of_mixed_formats_are_enrolled(client, mode):
    entries = [(f"{k:02d}-{name}", data) for k, (name, data) in enumerate(images().items())]
    archive = zip_bytes(entries) if mode == "zip" else tar_bytes(entries, mode)
    response = client.post("/tracklets", files=[("archive", ("frames.bin", archive, "application/octet-stream"))])
    assert response.status_code == 201, (mode, response.text)
    assert response.json()["frames_decoded"] == len(entries)
