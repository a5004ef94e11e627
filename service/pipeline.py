"""The steps between the routes and the parts: read an upload, decode and embed it, enroll, query.

Routes validate their fields and call one function here; only these functions know the parts (decoder,
batcher, gallery) and the order they run in, and they time each stage for the Server-Timing header and
/metrics. Footage jobs store their tracklets through `store_record`, the write path POST /tracklets
uses, so every record is stored one way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from models.contract import sample_frame_indices
from models.overlay import overlay_frames
from service.decoding import DecodedTracklet, NamedMedia, TrackletDecoder
from service.errors import ConflictError, InvalidRequestError, NotFoundError, ServiceError
from service.gallery import Gallery, TrackletFilter, TrackletRecord
from service.media import MediaStore, add_with_media, encode_png
from service.metrics import ServiceMetrics
from service.schemas import Match, QueryOut
from service.search.searcher import Hit
from service.state import ServiceState

log = logging.getLogger(__name__)


class MediaKind(str, Enum):
    """The ways to send a tracklet; each is the multipart field of that name."""

    VIDEO = "video"
    FRAMES = "frames"
    ARCHIVE = "archive"


@dataclass(frozen=True)
class MediaUpload:
    """The one media field a request sent: its kind and its files' bytes."""

    kind: MediaKind
    files: list[NamedMedia]


@dataclass(frozen=True)
class EmbeddedUpload:
    """An upload's embedding and what went into it."""

    embedding: np.ndarray
    frames_decoded: int
    frames_used: int
    thumbnail: np.ndarray | None = None
    """The middle of the sampled frames (RGB): the tracklet's thumbnail."""
    frames: np.ndarray | None = None
    """The (T, H, W, 3) RGB frames the model embedded (kept with REID_STORE_FRAMES)."""


@dataclass
class StageTimer:
    """Seconds spent per pipeline stage within one request, from the request's start."""

    metrics: ServiceMetrics | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if self.metrics is not None:
                self.metrics.observe_stage(name, elapsed)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def server_timing(self) -> str:
        """The Server-Timing header value, durations in milliseconds."""
        return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in self.seconds.items())


# -- uploads -------------------------------------------------------------------------------------------------
def _is_sent(upload: UploadFile | None) -> bool:
    # Browsers send an empty, nameless part for a file input left blank: that is "not sent".
    return upload is not None and not (not upload.filename and upload.size == 0)


async def read_upload(
    video: UploadFile | None, frames: list[UploadFile] | None, archive: UploadFile | None
) -> MediaUpload | None:
    """The single media field sent, read into memory (already bounded by the upload limit); None if none.

    Raises InvalidRequestError when more than one media field was sent.
    """
    sent = {
        kind: [upload for upload in uploads if _is_sent(upload)]
        for kind, uploads in ((MediaKind.VIDEO, [video]), (MediaKind.FRAMES, frames or []),
                              (MediaKind.ARCHIVE, [archive]))
    }
    kinds = [kind for kind, uploads in sent.items() if uploads]
    if len(kinds) > 1:
        named = " and ".join(kind.value for kind in kinds)
        raise InvalidRequestError(f"Send exactly one media field (video, frames or archive), not {named}.")
    if not kinds:
        return None
    (kind,) = kinds
    files = []
    for index, upload in enumerate(sent[kind]):
        fallback_name = f"frame-{index}" if kind is MediaKind.FRAMES else kind.value
        files.append(NamedMedia(upload.filename or fallback_name, await upload.read()))
    return MediaUpload(kind, files)


def decode_upload(decoder: TrackletDecoder, media: MediaUpload) -> DecodedTracklet:
    """Blocking (run it in a worker thread): decode and sample. The one place that dispatches on the kind."""
    if media.kind is MediaKind.VIDEO:
        return decoder.decode_video(media.files[0].data)
    if media.kind is MediaKind.ARCHIVE:
        return decoder.decode_archive(media.files[0].data)
    return decoder.decode_images(media.files)


async def embed_upload(state: ServiceState, media: MediaUpload, timer: StageTimer) -> EmbeddedUpload:
    """Decodes the upload (in a worker thread) and embeds it through the shared batcher: each clip of the
    model card's test-time mode is one batch item, and the tracklet's embedding is their mean, exactly as
    offline evaluation averages clip features (training.test_time)."""
    with timer.stage("decode"):
        decoded = await run_in_threadpool(decode_upload, state.decoder, media)
    with timer.stage("embed"):
        clips = await asyncio.gather(*(state.batcher.embed(clip) for clip in decoded.clips))
        embedding = np.mean(np.stack(clips), axis=0, dtype=np.float64).astype(np.float32)
    middle = decoded.middle_frame
    # The frames kept for the web page: the middle clip the model embedded (all of them with one clip).
    kept = decoded.clips[len(decoded.clips) // 2]
    return EmbeddedUpload(embedding, decoded.frames_decoded, decoded.frames_used, middle, kept)


# -- enroll --------------------------------------------------------------------------------------------------
def store_record(gallery: Gallery, record: TrackletRecord, embedding: np.ndarray, replace: bool = False,
                 media: MediaStore | None = None, thumbnail: np.ndarray | None = None,
                 frames: np.ndarray | None = None) -> TrackletRecord:
    """Blocking: stores one record and its embedding durably; the record as stored (version and time set).
    With ``thumbnail`` (RGB) and ``frames`` ((T, H, W, 3) RGB), their JPEGs are written first and the record
    says has_thumbnail (see `service.media` for the layout and the order of the writes)."""
    if media is None or (thumbnail is None and frames is None):
        return gallery.add(record, embedding, replace)
    return add_with_media(gallery, media, record, embedding, thumbnail, frames, replace)


async def enroll(
    state: ServiceState, media: MediaUpload, record: TrackletRecord, replace: bool, timer: StageTimer
) -> TrackletRecord:
    """Embeds the upload and stores ``record`` (its frame counts filled in) with that embedding."""
    if not replace and await run_in_threadpool(state.gallery.get, record.id):
        # Checked again inside the gallery's transaction; this early answer only saves decoding and embedding.
        raise ConflictError(f"A tracklet with id '{record.id}' is already enrolled; send replace=true to overwrite it.")
    embedded = await embed_upload(state, media, timer)
    record = record.model_copy(update={"frames_decoded": embedded.frames_decoded,
                                       "frames_used": embedded.frames_used})
    with timer.stage("store"):
        return await run_in_threadpool(
            store_record, state.gallery, record, embedded.embedding, replace, state.media, embedded.thumbnail,
            embedded.frames,
        )


def delete_record(gallery: Gallery, media: MediaStore, tracklet_id: str) -> bool:
    """Blocking: removes a record (out of every search when this returns), then its media (thumbnail, frames,
    overlays); False if none.

    The media goes after the record: a crash in between, or a media store that fails then, leaves media no
    record claims and no route serves, swept at the next start; the delete itself has happened (204).
    """
    if not gallery.delete(tracklet_id):
        return False
    try:
        media.delete(tracklet_id)
    except ServiceError as error:
        log.warning("tracklet %s deleted; its media stays until the next start's sweep: %s", tracklet_id,
                    error.message)
    return True


# -- query ---------------------------------------------------------------------------------------------------
def excluding_camera(tracklet_filter: TrackletFilter | None, camera_id: str) -> TrackletFilter:
    """``tracklet_filter`` that also leaves out ``camera_id`` (exclude_same_camera)."""
    base = tracklet_filter or TrackletFilter()
    excluded = list(dict.fromkeys([*(base.exclude_cameras or []), camera_id]))
    return base.model_copy(update={"exclude_cameras": excluded})


async def query(
    state: ServiceState,
    timer: StageTimer,
    *,
    media: MediaUpload | None,
    tracklet_id: str | None,
    top_k: int,
    exclude_same_camera: bool,
    camera_id: str | None,
    tracklet_filter: TrackletFilter | None = None,
    group_by_person: bool = False,
    rerank: bool = False,
    exclude_query: bool = False,
) -> QueryOut:
    """Ranks the gallery for the query: media (embedded, not stored) or an enrolled tracklet's embedding.

    Only tracklets passing ``tracklet_filter`` (and, with ``exclude_same_camera``, not of the query's camera)
    are ranked; ``group_by_person`` answers one tracklet per person; ``rerank`` re-ranks k-reciprocally;
    ``exclude_query`` leaves the query tracklet out of its own answer (`search_without`).
    """
    if media is not None and tracklet_id is not None:
        raise InvalidRequestError("Send either media (video, frames or archive) or tracklet_id as the query, not both.")
    if media is None and tracklet_id is None:
        raise InvalidRequestError("Send the query as one of video, frames or archive, or as an enrolled tracklet_id.")
    if exclude_query and tracklet_id is None:
        raise InvalidRequestError("exclude_query leaves the query tracklet out: it needs tracklet_id.")
    if exclude_query and group_by_person and rerank:
        raise InvalidRequestError("exclude_query cannot be combined with both group_by=person and rerank=true; "
                                  "drop one of the three.")
    embedded: EmbeddedUpload | None = None
    if tracklet_id is not None:
        record = await run_in_threadpool(state.gallery.get, tracklet_id)
        embedding = await run_in_threadpool(state.gallery.get_embedding, tracklet_id)
        if record is None or embedding is None:
            raise NotFoundError(f"No tracklet with id '{tracklet_id}' is enrolled.")
        if camera_id is None:
            camera_id = record.camera_id
    else:
        embedded = await embed_upload(state, media, timer)
        embedding = embedded.embedding
    if exclude_same_camera and camera_id is None:
        raise InvalidRequestError("exclude_same_camera needs the query's camera: send camera_id.")
    if exclude_same_camera:
        tracklet_filter = excluding_camera(tracklet_filter, camera_id)
    with timer.stage("search"):
        if exclude_query:
            hits = await run_in_threadpool(
                search_without, state, tracklet_id, embedding, top_k, tracklet_filter, group_by_person, rerank
            )
        else:
            hits = await run_in_threadpool(
                state.searcher.search, embedding, top_k, tracklet_filter, group_by_person, rerank
            )
        gallery_size = await run_in_threadpool(state.gallery.count)
    return QueryOut(
        matches=[
            Match(rank=rank, id=hit.record.id, person_id=hit.record.person_id, camera_id=hit.record.camera_id,
                  distance=hit.distance, metadata=hit.record.metadata, start_time=hit.record.start_time,
                  end_time=hit.record.end_time, rerank_distance=hit.rerank_distance,
                  person_matches=hit.person_matches)
            for rank, hit in enumerate(hits, start=1)
        ],
        top_k=top_k,
        group_by="person" if group_by_person else None,
        reranked=rerank,
        query_tracklet_id=tracklet_id,
        query_camera_id=camera_id,
        frames_decoded=embedded.frames_decoded if embedded else None,
        frames_used=embedded.frames_used if embedded else None,
        gallery_size=gallery_size,
        took_ms=timer.elapsed_ms(),
        model_version=state.embedder.card.model_version,
    )


def search_without(state: ServiceState, tracklet_id: str, embedding: np.ndarray, top_k: int,
                   tracklet_filter: TrackletFilter | None, group_by_person: bool, rerank: bool) -> list[Hit]:
    """Blocking: the answer for an enrolled tracklet's embedding with that tracklet left out, exactly: one
    more match is asked for and the query dropped. Grouped by person (without re-ranking), a person whose
    best tracklet was the query is represented by their next best one, found by a search restricted to them."""
    hits = state.searcher.search(embedding, top_k + 1, tracklet_filter, group_by_person, rerank)
    kept = [hit for hit in hits if hit.record.id != tracklet_id]
    if group_by_person and len(kept) < len(hits):
        (own,) = [hit for hit in hits if hit.record.id == tracklet_id]
        if own.record.person_id is not None and (own.person_matches or 0) > 1:
            restricted = (tracklet_filter or TrackletFilter()).model_copy(update={"person_id": own.record.person_id})
            others = [hit for hit in state.searcher.search(embedding, 2, restricted) if hit.record.id != tracklet_id]
            kept.append(dataclasses.replace(others[0], person_matches=own.person_matches - 1))
            kept.sort(key=lambda hit: hit.distance)
    return kept[:top_k]


# -- media ---------------------------------------------------------------------------------------------------
def attention_png(state: ServiceState, tracklet_id: str, granularity: int) -> bytes:
    """Blocking: granularity ``granularity`` (1-based)'s attention over the tracklet's stored frames, as one
    PNG row of overlays (`models.overlay`, the paper's Figure 3); rendered once, then read from the cache.

    NotFoundError when the tracklet, its frames or that granularity do not exist."""
    names = state.embedder.attention_names
    if not 1 <= granularity <= len(names):
        raise NotFoundError(f"The model has {len(names)} attention granularities, not a granularity {granularity}.")
    if state.gallery.get(tracklet_id) is None:
        raise NotFoundError(f"No tracklet with id '{tracklet_id}' is enrolled.")
    cached = state.media.read_attention(tracklet_id, granularity)
    if cached is not None:
        return cached
    frames = state.media.load_frames(tracklet_id)
    if frames is None or frames.shape[1:] != state.embedder.input_shape[1:]:
        raise NotFoundError(f"Tracklet '{tracklet_id}' has no stored frames to show its attention over.")
    clip = frames[sample_frame_indices(len(frames), state.embedder.card.num_frames)]
    attention = state.embedder.attention(clip)[granularity - 1]
    overlays = overlay_frames(clip, attention)
    gap = np.full((overlays.shape[1], 2, 3), 255, np.uint8)
    row = np.concatenate([part for overlay in overlays for part in (overlay, gap)][:-1], axis=1)
    png = encode_png(row)
    state.media.write_attention(tracklet_id, granularity, png)
    return png
