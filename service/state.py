"""What the lifespan loads: the model, the embedding queue, the gallery and the decoder, as one object."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

from models.rerank import RerankParameters
from service.batching import MicroBatcher
from service.config import Settings
from service.decoding import DecodeLimits, TrackletDecoder
from service.embedder import OnnxEmbedder
from service.errors import StartupError, StorageUnavailableError
from service.footage.service import FootageService, open_footage
from service.gallery import Gallery, open_gallery
from service.media import MediaStore, open_backend
from service.metrics import ServiceMetrics
from service.search.batching import SearchBatcher
from service.search.searcher import ObservedGallery, Searcher, single_threaded_blas

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """Everything a request needs besides its own input."""

    settings: Settings
    embedder: OnnxEmbedder
    batcher: MicroBatcher
    gallery: Gallery
    decoder: TrackletDecoder
    metrics: ServiceMetrics
    searcher: Searcher
    footage: FootageService
    media: MediaStore

    def close(self) -> None:
        """Stops the footage jobs (running ones end as failed, queued ones wait for the next start), then the
        embedder after its queued work and the decoding pool, then flushes and closes the gallery."""
        self.footage.close()
        self.batcher.stop()
        self.decoder.close()
        if self.searcher.batcher is not None:
            self.searcher.batcher.stop()
        size = gallery_size_or_nan(self.gallery)
        self.gallery.close()
        log.info("shut down: embedder stopped, gallery of %s flushed and closed", size)


def gallery_size_or_nan(gallery: Gallery) -> float:
    """The gallery's size, or NaN while its storage cannot answer (a remote gallery that went away): /metrics
    and shutdown keep working then; /readyz says why."""
    try:
        return gallery.count()
    except StorageUnavailableError:
        return float("nan")


def unfinished_jobs_or_nan(footage: FootageService) -> float:
    """Footage jobs queued or running, or NaN while their store cannot answer (Redis away): /metrics keeps
    working then; the footage routes say why."""
    try:
        return footage.store.count_unfinished()
    except StorageUnavailableError:
        return float("nan")


def decode_limits(settings: Settings) -> DecodeLimits:
    """The decoder's limits, read from the settings of the same names (declared once, in `Settings`)."""
    return DecodeLimits(**{limit.name: getattr(settings, limit.name) for limit in dataclasses.fields(DecodeLimits)})
def open_media(settings: Settings, gallery: Gallery) -> MediaStore:
    """The media store (thumbnails, frames, overlays, footage; REID_MEDIA_BACKEND); media a crash left without a
    record is swept in the background (only media older than this process, so enrolls that start meanwhile are
    untouched; see `service.media`)."""
    media = MediaStore(open_backend(settings), settings.store_thumbnails, settings.store_frames)
    started = time.time()

    def claimed(tracklet_id: str) -> bool:
        try:
            record = gallery.get(tracklet_id)
        except Exception:  # the gallery is unreadable (or closing): keep the file, the next start sweeps it
            return True
        return record is not None and record.has_thumbnail

    def has_record(tracklet_id: str) -> bool:
        try:
            return gallery.get(tracklet_id) is not None
        except Exception:  # unreadable gallery: keep the files, as for thumbnails
            return True

    threading.Thread(target=media.remove_orphans, args=(claimed, started, has_record), name="media-sweep",
                     daemon=True).start()  # fmt: skip
    return media


def load_state(settings: Settings, metrics: ServiceMetrics | None = None) -> ServiceState:
    """Loads the model and opens the gallery; raises StartupError with a one-line reason on failure."""
    metrics = metrics or ServiceMetrics()
    embedder = OnnxEmbedder(settings.model_path, settings.device, settings.intra_op_threads)
    card = embedder.card
    if card.test_time.mode == "all":
        # One clip of a tracklet-dependent length cannot share a batch with others of another length.
        raise StartupError(f"{settings.model_path}: test-time mode 'all' is offline only; re-export with another")
    if card.test_time.max_clips is None:
        # Every frame of an upload would be its own clips: up to max_frames / T batch items for one request,
        # more than the batcher's queue holds, so long uploads would be refused however often retried.
        raise StartupError(
            f"{settings.model_path}: the card's test_time.max_clips is null (no cap, offline only); the service "
            "needs a bounded cost per upload: re-export with `python -m training.export --checkpoint CKPT "
            "--max-clips 4 ...`"
        )
    if "test_time" not in card.model_fields_set:
        log.warning(
            "%s: the model card has no test_time section (exported before it existed): serving it as one clip of "
            "chunk centres, the sampling of that time; re-export to record the mode explicitly", settings.model_path
        )
    # Observed: every write keeps the re-ranking neighbour cache up to date, whichever route made it.
    gallery = ObservedGallery(open_gallery(settings, card.dim, card.model_version))
    try:
        decoder = TrackletDecoder(
            card.height,
            card.width,
            card.num_frames,
            decode_limits(settings),
            test_mode=card.test_time.mode,
            max_clips=card.test_time.max_clips,
        )
        batcher = MicroBatcher(
            embedder.embed,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000.0,
            queue_size=settings.queue_size,
            on_batch=metrics.observe_batch,
        )
        batcher.start()
        single_threaded_blas()
        searcher = Searcher(
            gallery,
            RerankParameters(settings.rerank_k1, settings.rerank_k2, settings.rerank_lambda, settings.rerank_shortlist),
            settings.rerank_cache_size,
            # Late-bound: the batcher calls whatever search the gallery has at the time.
            SearchBatcher(lambda *query: gallery.search(*query), on_batch=metrics.observe_search_batch),
        )
        gallery.neighbours = searcher.neighbours
        searcher.batcher.start()
        media = open_media(settings, gallery)
        footage = open_footage(settings, embedder, batcher, gallery, media)
    except BaseException:
        with contextlib.suppress(Exception):
            gallery.close()
        raise
    metrics.add_gauge("reid_gallery_size", "Tracklets enrolled in the gallery (NaN while it is unreachable).",
                      lambda: gallery_size_or_nan(gallery))
    metrics.add_gauge("reid_embed_queue_depth", "Tracklets waiting for the embedder.", lambda: batcher.queue_depth)
    metrics.add_gauge("reid_footage_jobs_unfinished", "Footage jobs queued or running (NaN while their store is "
                      "unreachable).", lambda: unfinished_jobs_or_nan(footage))
    metrics.add_info(
        "reid_model_info", "The loaded model and where it runs (value is always 1).",
        {"model_version": card.model_version, "device": embedder.device, "index_device": gallery.index_device},
    )
    log.info(
        "ready: model %s on %s (providers %s), gallery of %d on %s",
        card.model_version, embedder.device, ",".join(embedder.providers), gallery.count(), gallery.index_device,
    )
    return ServiceState(settings, embedder, batcher, gallery, decoder, metrics, searcher, footage, media)
