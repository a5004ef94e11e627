"""The gallery: tracklet records and their embeddings, behind the `Gallery` interface.

`open_gallery(settings, dim, model_version)` opens the backend named by REID_GALLERY_BACKEND:
``sqlite`` (the default: `SqliteGallery`, SQLite records plus a FAISS index in REID_DATA_DIR) or ``milvus``
(`service.gallery.milvus.MilvusGallery`, a Milvus collection shared by several replicas; pymilvus is
imported only then).
"""

from __future__ import annotations

from collections.abc import Callable

from service.config import Settings
from service.errors import StartupError
from service.gallery.base import Gallery, Match, TrackletFilter, TrackletRecord
from service.gallery.index import faiss_gpu_count
from service.gallery.index_kinds import IndexKind, IndexOptions
from service.gallery.local import SqliteGallery

__all__ = ["BACKENDS", "Gallery", "Match", "SqliteGallery", "TrackletFilter", "TrackletRecord", "open_gallery"]


def index_options(settings: Settings) -> IndexOptions:
    """The FAISS index options of the REID_INDEX* settings."""
    return IndexOptions(
        kind=IndexKind(settings.index),
        auto_flat_below=settings.index_auto_flat_below,
        ivf_storage=settings.index_ivf_storage,
        ivf_nprobe=settings.index_nprobe,
        min_train_size=settings.index_min_train_size,
        refine_candidates=settings.index_candidates,
        hnsw_ef_search=settings.index_hnsw_ef_search,
        threads=settings.search_threads,
    )


def _open_sqlite(settings: Settings, dim: int, model_version: str) -> Gallery:
    use_gpu = settings.device != "cpu" and faiss_gpu_count() > 0
    return SqliteGallery(settings.data_dir, dim, model_version, use_gpu=use_gpu, index_options=index_options(settings))


def _open_milvus(settings: Settings, dim: int, model_version: str) -> Gallery:
    try:
        from service.gallery.milvus import MilvusGallery
    except ImportError as error:
        raise StartupError(f"REID_GALLERY_BACKEND=milvus needs pymilvus (pip install pymilvus): {error}") from None
    token = settings.milvus_token.get_secret_value() if settings.milvus_token is not None else None
    return MilvusGallery(settings.milvus_uri, settings.milvus_collection, dim, model_version, token=token,
                         index_options=index_options(settings), timeout_s=settings.milvus_timeout_s)


#: REID_GALLERY_BACKEND value -> opener; a new backend adds one entry.
BACKENDS: dict[str, Callable[[Settings, int, str], Gallery]] = {"sqlite": _open_sqlite, "milvus": _open_milvus}


def open_gallery(settings: Settings, dim: int, model_version: str) -> Gallery:
    """The gallery of REID_GALLERY_BACKEND for a model of this ``dim`` and ``model_version``.

    Raises StartupError for an unknown backend, or whatever the backend cannot open (a one-line reason).
    """
    opener = BACKENDS.get(settings.gallery_backend)
    if opener is None:
        raise StartupError(
            f"REID_GALLERY_BACKEND={settings.gallery_backend!r} is not a gallery backend; "
            f"choose one of: {', '.join(sorted(BACKENDS))}"
        )
    return opener(settings, dim, model_version)
