"""Thumbnail files: a failing disk is the storage error of the gallery's own writes (507 / 503), never a 500,
and leaves no file behind."""

from __future__ import annotations

import errno

import numpy as np
import pytest

import service.media.backends as backends_module
from service.errors import StorageFullError, StorageUnavailableError
from service.media import MediaStore


@pytest.mark.parametrize(("code", "expected"), [(errno.ENOSPC, StorageFullError), (errno.EIO, StorageUnavailableError)])
def test_a_failing_disk_is_a_storage_error_and_leaves_nothing(tmp_path, monkeypatch, code, expected):
    store = MediaStore(tmp_path)
    image = np.full((40, 20, 3), 90, np.uint8)
    assert store.write("kept", image) and store.read("kept")[:2] == b"\xff\xd8"

    def failing_fsync(descriptor: int) -> None:
        raise OSError(code, "simulated")

    monkeypatch.setattr(backends_module.os, "fsync", failing_fsync)
    with pytest.raises(expected):
        store.write("refused", image)
    assert sorted(path.name for path in (tmp_path / "thumbnails").iterdir()) == ["kept.jpg"]
