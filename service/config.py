"""Service settings, read from ``REID_*`` environment variables and an optional ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything the service can be told from outside; one field per ``REID_`` variable."""

    model_config = SettingsConfigDict(env_prefix="REID_", env_file=".env", extra="ignore")

    model_path: Path = Field(
        Path("models/mgrafa.onnx"),
        description="ONNX file of the exported model; its model card is the .json file beside it.",
    )
    data_dir: Path = Field(Path("gallery-data"), description="Directory of the gallery (SQLite database).")
    gallery_backend: str = Field(
        "sqlite",
        description="Where the gallery lives: sqlite (SQLite records and a FAISS index in REID_DATA_DIR; one "
        "process), or milvus (a Milvus collection that several API replicas share: REID_MILVUS_*). An unknown "
        "name stops the service at start-up.",
    )
    milvus_uri: str = Field(
        "http://localhost:19530",
        description="REID_GALLERY_BACKEND=milvus: the Milvus address (http://host:19530), or the path of a Milvus "
        "Lite file (ending in .db) for one process without a server.",
    )
    milvus_token: SecretStr | None = Field(
        None, description="Milvus credentials: user:password, or an API key (Zilliz Cloud). Unset: none."
    )
    milvus_collection: str = Field(
        "reid_gallery", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$",
        description="The Milvus collection of the gallery (created on first start). Another model's embeddings "
        "need another collection.",
    )
    milvus_timeout_s: float = Field(
        10.0, gt=0,
        description="Deadline of each Milvus call; past it (or when Milvus is unreachable) a request is 503 with "
        "the reason, and nothing is half-written.",
    )
    index: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        "auto",
        description="Vector index (FAISS for sqlite; the Milvus index of the same kind for milvus: FLAT, "
        "IVF_SQ8/IVF_FLAT, HNSW, auto chosen by size at start-up): flat (exact), ivf (IVF with REID_INDEX_IVF_STORAGE "
        "vectors, trained on the gallery's own embeddings and retrained as it grows; exact flat below "
        "REID_INDEX_MIN_TRAIN_SIZE), hnsw (HNSW graph over 8-bit vectors), auto (flat below "
        "REID_INDEX_AUTO_FLAT_BELOW tracklets, ivf above). Approximate kinds re-order their candidates by exact "
        "distance. Rebuilt from SQLite when changed.",
    )
    index_auto_flat_below: int = Field(
        50_000, ge=0,
        description="REID_INDEX=auto: flat (exact) below this many tracklets, ivf from it on (bench/bench_gallery.md: "
        "one flat query reads the whole gallery, 125-144 ms at 100,000 x 2048 on two shared cores).",
    )
    index_ivf_storage: Literal["pq", "sq8", "fp16", "flat"] = Field(
        "sq8", description="IVF vector storage: pq (4 bits per 4 dimensions, an eighth of a byte per "
        "dimension, SIMD scan, its 1000 best ranked by 8-bit codes kept in memory, one more byte per dimension; dim a "
        "multiple of 8), sq8 "
        "(1 byte per dimension), fp16 (2), flat (4, exact distances). Candidates are re-ordered by their exact "
        "distances."
    )
    index_min_train_size: int = Field(
        20_000, ge=1000, description="Fewest tracklets an ivf or hnsw index is trained on; below, it is flat (exact)."
    )
    index_nprobe: int = Field(
        512, ge=1, description="IVF lists searched per query (more: higher recall, slower). With ~4 sqrt(n) lists, "
        "512 is an eighth of the 4096 lists of a 1M gallery: recall@10 0.990 there in bench/bench_gallery.md "
        "(256: 0.969); smaller galleries have fewer lists, so 512 searches a larger share of them."
    )
    index_candidates: int = Field(
        30, ge=1, le=10_000,
        description="sqlite backend, approximate kinds: fewest candidates the index is asked for, re-ordered by their "
        "exact distances (read from SQLite); at least twice top_k. More: higher recall, slower.",
    )
    index_hnsw_ef_search: int = Field(
        128, ge=1, description="HNSW candidate list size per query (more: higher recall, slower)."
    )
    rerank_k1: int = Field(20, ge=1, le=100, description="rerank=true: k of the k-reciprocal neighbourhoods (k1).")
    rerank_k2: int = Field(6, ge=1, le=100, description="rerank=true: neighbours of the local query expansion (k2).")
    rerank_lambda: float = Field(
        0.3, ge=0, le=1, description="rerank=true: weight of the original distance beside the Jaccard distance."
    )
    rerank_shortlist: int = Field(
        30, ge=1, le=1000,
        description="rerank=true: the query's nearest tracklets whose own neighbours join the re-ranked shortlist.",
    )
    rerank_cache_size: int = Field(
        20_000, ge=100,
        description="Neighbour lists cached for re-ranking (each with its embedding, and as many neighbours' "
        "embeddings: about 8 x dim bytes per list).",
    )
    search_threads: int = Field(
        1, ge=0,
        description="OpenMP threads of one FAISS search call (0: every core). One avoids OpenMP spin-waiting "
        "against other processes on a small machine; concurrent queries are batched into one call instead.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="Accepted API keys, comma-separated (several at once so keys rotate without downtime). "
        "Unset or empty: no authentication.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when onnxruntime (and faiss) can use it, else CPU."
    )
    host: str = Field("127.0.0.1", description="Bind address of `python -m service`.")
    port: int = Field(8000, ge=0, le=65535, description="Port of `python -m service`.")

    max_upload_bytes: int = Field(
        64 * MiB, ge=1, description="Largest request body, counted while streaming; beyond it: 413."
    )
    body_timeout_s: float = Field(
        60.0, gt=0,
        description="Seconds a client has to send a whole request body, from its first byte; a slower upload "
        "(e.g. one byte per second) is cut off with 408 and the connection closed.",
    )
    header_timeout_s: float = Field(
        10.0, gt=0,
        description="Seconds a client has to send a request's headers, from the connection's start or the end of "
        "its previous response; a slower client (e.g. one header byte per second) is disconnected. Needs the "
        "service's HTTP protocol: `python -m service` uses it; with uvicorn, pass "
        "`--http service.http_protocol:GuardedH11Protocol`.",
    )
    max_connections: int = Field(
        1000, ge=1,
        description="Most client connections open at once; a connection beyond it gets 503 and is closed at once "
        "(same protocol as REID_HEADER_TIMEOUT_S).",
    )
    max_concurrent_uploads: int = Field(
        32, ge=1,
        description="Most enroll/query requests in progress at once (receiving, decoding, embedding); beyond it, "
        "or while the embedding queue is full, 503 with Retry-After before the body is read. Bounds memory to "
        "about this many times REID_MAX_UPLOAD_BYTES.",
    )
    max_metadata_bytes: int = Field(
        16 * 1024, ge=2, description="Largest `metadata` field (a JSON object), in bytes of UTF-8; beyond it: 422."
    )
    max_frames: int = Field(2000, ge=1, description="Most frames one tracklet may hold (decoded frames).")
    max_frame_dimension: int = Field(4096, ge=1, description="Largest frame width or height, in pixels.")
    max_archive_entries: int = Field(2000, ge=1, description="Most entries in an uploaded .zip/.tar.")
    max_archive_bytes: int = Field(
        128 * MiB, ge=1,
        description="Most bytes read out of an uploaded .zip/.tar, headers included, counted as it decompresses "
        "(zip-bomb and header-bomb guard).",
    )
    max_decoded_pixels: int = Field(
        4 * 1024**3, ge=1,
        description="Most pixels decoded for one upload, all frames together (only sampled images are decoded; "
        "a video is decoded up to its last sampled frame); beyond it: 413 before decoding.",
    )

    max_batch: int = Field(8, ge=1, description="Most tracklets embedded in one onnxruntime call.")
    max_wait_ms: float = Field(
        5.0, ge=0, description="How long the embedder waits for more tracklets before running a batch."
    )
    queue_size: int = Field(64, ge=1, description="Tracklets waiting for the embedder; beyond it: 503.")

    footage_workers: int = Field(
        1, ge=1,
        description="Footage jobs (POST /footage) that run at once, each on its own thread at a lower CPU "
        "priority than requests (REID_JOB_QUEUE=local; with redis each `python -m service.worker` runs one).",
    )
    footage_queue_size: int = Field(
        8, ge=0,
        description="Footage jobs that may wait for a worker (with REID_JOB_QUEUE=redis: across all replicas); "
        "beyond it POST /footage is 503 with Retry-After, before the upload is read.",
    )
    job_queue: Literal["local", "redis"] = Field(
        "local",
        description="Where footage jobs wait and run: local (threads of this process, the job table in SQLite in "
        "REID_DATA_DIR; no Redis), or redis (RQ on REID_REDIS_URL: any API replica accepts, lists and cancels "
        "jobs, `python -m service.worker` processes run them; needs a shared gallery, REID_GALLERY_BACKEND=milvus "
        "on a Milvus server).",
    )
    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="REID_JOB_QUEUE=redis: the Redis holding the footage queue and the jobs' state "
        "(redis://[:password@]host:port/db, rediss:// for TLS).",
    )
    job_heartbeat_s: float = Field(
        10.0, gt=0, le=600,
        description="REID_JOB_QUEUE=redis: how often a worker renews its hold on the job it runs; a job whose "
        "worker missed 3 renewals (killed, crashed, cut off) is failed with the reason, what it enrolled kept.",
    )
    max_footage_bytes: int = Field(
        4 * 1024 * MiB, ge=1,
        description="Largest POST /footage body, counted while streaming to the spool folder in REID_DATA_DIR "
        "(never held in memory); beyond it: 413.",
    )
    footage_body_timeout_s: float = Field(
        3600.0, gt=0, description="Seconds a client has to send a whole POST /footage body (408 after)."
    )
    store_thumbnails: bool = Field(
        True,
        description="Keep a small JPEG of each tracklet's best crop beside its record (GET "
        "/tracklets/{id}/thumbnail). These are pictures of people: turn it off where that is not wanted.",
    )
    store_frames: bool = Field(
        True,
        description="Keep the T frames each tracklet was embedded from, as small JPEGs at the model's input size "
        "(GET /tracklets/{id}/frames; the web page's tracklet view and attention overlays use them). These are "
        "pictures of people: turn it off where that is not wanted.",
    )

    media_backend: Literal["local", "s3"] = Field(
        "local",
        description="Where thumbnails, frames, attention overlays and spooled footage live: local (files in "
        "REID_DATA_DIR; one host) or s3 (an S3-compatible bucket, REID_S3_*, that every API replica and footage "
        "worker shares; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).",
    )
    s3_endpoint: str | None = Field(
        None,
        description="REID_MEDIA_BACKEND=s3: the S3 endpoint URL (http://minio:9000, "
        "https://s3.eu-west-1.amazonaws.com); required with s3.",
    )
    s3_bucket: str = Field(
        "reid-media", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="REID_MEDIA_BACKEND=s3: the bucket of the media (created at start-up when missing).",
    )
    s3_region: str = Field("us-east-1", description="REID_MEDIA_BACKEND=s3: the bucket's region (MinIO: any).")
    s3_timeout_s: float = Field(
        10.0, gt=0,
        description="REID_MEDIA_BACKEND=s3: connect and read deadline of each S3 call (tried twice); past it a "
        "request is 503 with the reason, and no record is left without its media.",
    )

    docs_enabled: bool = Field(True, description="Serve /docs, /redoc and /openapi.json.")
    docs_public: bool = Field(
        False,
        description="Serve the docs without an API key (they hold no gallery data). By default, with REID_API_KEY "
        "set, they need a key like every route but /healthz.",
    )
    shutdown_timeout_s: float = Field(
        30.0, ge=0,
        description="On SIGTERM, how long requests in progress may take to finish before they are cancelled; "
        "then the gallery is flushed and the process exits 0.",
    )
    log_level: str = Field("INFO", description="Python logging level name.")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 = its default.")

    detector: str = Field(
        "background",
        description="Person detector of footage jobs: `background` (MOG2 background subtraction, weight-free, "
        "fixed cameras), `background-knn`, or the path of an ONNX person detector (YOLO-family outputs, see "
        "service/footage/onnx_detector.py), run on REID_DEVICE.",
    )
    detector_threshold: float = Field(0.25, ge=0, le=1, description="ONNX detectors: lowest person score kept.")
    detector_person_class: int = Field(0, ge=0, description="ONNX detectors: class index of 'person' (COCO: 0).")
    footage_max_tracklet_s: float = Field(
        10.0, gt=0, description="A long track is cut into a tracklet every this many seconds."
    )
    footage_min_track_frames: int = Field(
        8, ge=1, description="Tracklets observed in fewer frames are dropped (not enrolled or queried)."
    )
    footage_min_box_height: float = Field(
        40.0, ge=0, description="Tracklets whose median box is shorter (pixels) are dropped."
    )

    @property
    def api_keys(self) -> tuple[str, ...]:
        """The accepted keys (empty: authentication off)."""
        if self.api_key is None:
            return ()
        return tuple(key.strip() for key in self.api_key.get_secret_value().split(",") if key.strip())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once; tests build their own `Settings` instead."""
    return Settings()
