"""Open a gallery of either backend at a place (tests): a directory for sqlite, a collection named after it for
milvus (on the Milvus Lite server of tests/service/conftest.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from service.gallery import Gallery, SqliteGallery

__all__ = ["GalleryOpener", "collection_for"]


def collection_for(place: Path | str) -> str:
    """A collection name of its own for each gallery place (a test's directory)."""
    return "g_" + hashlib.sha256(str(place).encode()).hexdigest()[:20]


class GalleryOpener:
    """Opens the gallery of one backend at a place: a directory (sqlite) or the collection named after it
    (milvus). ``opener(place, dim, version, index_options=...)``; the same place reopens the same gallery."""

    def __init__(self, backend: str, milvus_uri: str | None = None):
        self.backend = backend
        self.milvus_uri = milvus_uri

    def __call__(self, place: Path, dim: int, version: str, **options) -> Gallery:
        if self.backend == "sqlite":
            return SqliteGallery(place, dim, version, **options)
        from service.gallery.milvus import MilvusGallery

        return MilvusGallery(self.milvus_uri, collection_for(place), dim, version,
                             index_options=options.get("index_options"), timeout_s=30.0)

    def settings(self, place: Path) -> dict[str, object]:
        """The Settings fields that point a service at this backend's gallery at ``place``."""
        if self.backend == "sqlite":
            return {"data_dir": place}
        return {"data_dir": place, "gallery_backend": "milvus", "milvus_uri": self.milvus_uri,
                "milvus_collection": collection_for(place), "milvus_timeout_s": 30.0}
