"""Settings: defaults, REID_ environment variables, .env files, API key lists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings, get_settings
from service.decoding import DecodeLimits
from service.state import decode_limits


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No REID_ variable or .env of the developer's leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("REID_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults():
    settings = Settings()
    assert settings.model_path == Path("models/mgrafa.onnx")
    assert settings.data_dir == Path("gallery-data")
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.device == "auto"
    assert settings.api_key is None and settings.api_keys == ()
    assert settings.max_upload_bytes == 64 * 1024 * 1024
    assert (settings.max_batch, settings.max_wait_ms, settings.queue_size) == (8, 5.0, 64)
    assert (settings.max_frames, settings.max_frame_dimension, settings.max_archive_entries) == (2000, 4096, 2000)
    assert settings.max_archive_bytes == 128 * 1024 * 1024 and settings.max_metadata_bytes == 16 * 1024
    assert (settings.body_timeout_s, settings.max_concurrent_uploads, settings.shutdown_timeout_s) == (60.0, 32, 30.0)
    assert settings.docs_enabled is True and settings.docs_public is False and settings.gallery_backend == "sqlite"
    assert settings.media_backend == "local" and settings.s3_endpoint is None and settings.s3_bucket == "reid-media"


def test_environment_variables_with_the_reid_prefix(monkeypatch):
    values = {
        "REID_MODEL_PATH": "/m/x.onnx", "REID_DATA_DIR": "/d", "REID_DEVICE": "cuda", "REID_HOST": "0.0.0.0",
        "REID_PORT": "9001", "REID_MAX_UPLOAD_BYTES": "1234", "REID_MAX_FRAMES": "77",
        "REID_MAX_FRAME_DIMENSION": "640", "REID_MAX_ARCHIVE_ENTRIES": "9", "REID_MAX_ARCHIVE_BYTES": "4321",
        "REID_MAX_BATCH": "3", "REID_MAX_WAIT_MS": "2.5", "REID_QUEUE_SIZE": "5", "REID_DOCS_ENABLED": "false",
        "REID_LOG_LEVEL": "DEBUG", "REID_INTRA_OP_THREADS": "2", "REID_BODY_TIMEOUT_S": "7.5",
        "REID_MAX_CONCURRENT_UPLOADS": "4", "REID_MAX_METADATA_BYTES": "100", "REID_DOCS_PUBLIC": "true",
        "REID_SHUTDOWN_TIMEOUT_S": "3", "REID_DETECTOR": "/m/yolo.onnx", "REID_DETECTOR_THRESHOLD": "0.4",
        "REID_DETECTOR_PERSON_CLASS": "1", "REID_FOOTAGE_MAX_TRACKLET_S": "4.5", "REID_FOOTAGE_MIN_TRACK_FRAMES": "3",
        "REID_FOOTAGE_MIN_BOX_HEIGHT": "24", "REID_GALLERY_BACKEND": "sqlite",
        "REID_MAX_DECODED_PIXELS": "5000", "REID_HEADER_TIMEOUT_S": "2.5", "REID_MAX_CONNECTIONS": "7",
        "REID_INDEX": "hnsw", "REID_INDEX_AUTO_FLAT_BELOW": "500", "REID_INDEX_IVF_STORAGE": "fp16",
        "REID_INDEX_MIN_TRAIN_SIZE": "2000", "REID_INDEX_NPROBE": "9", "REID_INDEX_HNSW_EF_SEARCH": "33",
        "REID_INDEX_CANDIDATES": "250",
        "REID_SEARCH_THREADS": "2", "REID_RERANK_K1": "10", "REID_RERANK_K2": "3", "REID_RERANK_LAMBDA": "0.5",
        "REID_RERANK_SHORTLIST": "12", "REID_RERANK_CACHE_SIZE": "300",
        "REID_MILVUS_URI": "http://milvus:19530", "REID_MILVUS_TOKEN": "root:Milvus", "REID_MILVUS_COLLECTION": "g2",
        "REID_MILVUS_TIMEOUT_S": "4",
        "REID_JOB_QUEUE": "redis",
        "REID_REDIS_URL": "redis://redis:6379/2",
        "REID_JOB_HEARTBEAT_S": "2.5",
        "REID_FOOTAGE_WORKERS": "2", "REID_FOOTAGE_QUEUE_SIZE": "0",
        "REID_MAX_FOOTAGE_BYTES": "999", "REID_FOOTAGE_BODY_TIMEOUT_S": "60", "REID_STORE_THUMBNAILS": "false",
        "REID_STORE_FRAMES": "false",
        "REID_MEDIA_BACKEND": "s3", "REID_S3_ENDPOINT": "http://minio:9000", "REID_S3_BUCKET": "media-2",
        "REID_S3_REGION": "eu-west-1", "REID_S3_TIMEOUT_S": "3",
    }  # fmt: skip
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.model_path == Path("/m/x.onnx") and settings.data_dir == Path("/d")
    assert settings.device == "cuda" and settings.host == "0.0.0.0" and settings.port == 9001
    assert (settings.max_upload_bytes, settings.max_frames, settings.max_frame_dimension) == (1234, 77, 640)
    assert (settings.max_archive_entries, settings.max_archive_bytes) == (9, 4321)
    assert (settings.max_batch, settings.max_wait_ms, settings.queue_size) == (3, 2.5, 5)
    assert settings.docs_enabled is False and settings.log_level == "DEBUG" and settings.intra_op_threads == 2
    assert (settings.body_timeout_s, settings.max_concurrent_uploads, settings.max_metadata_bytes) == (7.5, 4, 100)
    assert settings.docs_public is True and settings.shutdown_timeout_s == 3
    assert (settings.detector, settings.detector_threshold, settings.detector_person_class) == ("/m/yolo.onnx", 0.4, 1)
    assert (settings.footage_max_tracklet_s, settings.footage_min_track_frames, settings.footage_min_box_height) == (
        4.5, 3, 24.0,
    )  # fmt: skip
    assert (settings.max_decoded_pixels, settings.header_timeout_s, settings.max_connections) == (5000, 2.5, 7)
    assert (settings.index, settings.index_auto_flat_below, settings.index_ivf_storage) == ("hnsw", 500, "fp16")
    assert (settings.index_min_train_size, settings.index_nprobe, settings.index_hnsw_ef_search) == (2000, 9, 33)
    assert settings.search_threads == 2 and settings.index_candidates == 250
    from service.gallery import index_options

    assert index_options(settings).refine_candidates == 250
    assert (settings.rerank_k1, settings.rerank_k2, settings.rerank_lambda) == (10, 3, 0.5)
    assert (settings.rerank_shortlist, settings.rerank_cache_size) == (12, 300)
    assert (settings.milvus_uri, settings.milvus_collection) == ("http://milvus:19530", "g2")
    assert settings.milvus_timeout_s == 4
    assert settings.milvus_token.get_secret_value() == "root:Milvus" and "root:Milvus" not in repr(settings)
    assert (settings.footage_workers, settings.footage_queue_size, settings.max_footage_bytes) == (2, 0, 999)
    assert settings.footage_body_timeout_s == 60 and settings.store_thumbnails is False
    assert settings.store_frames is False
    assert (settings.media_backend, settings.s3_endpoint, settings.s3_bucket) == ("s3", "http://minio:9000", "media-2")
    assert (settings.s3_region, settings.s3_timeout_s) == ("eu-west-1", 3)
    assert (settings.job_queue, settings.redis_url, settings.job_heartbeat_s) == ("redis", "redis://redis:6379/2", 2.5)
    # Every field is reachable through its REID_ variable (docker-compose relies on these names).
    assert {f"REID_{name.upper()}" for name in Settings.model_fields} - set(values) == {"REID_API_KEY"}


def test_api_keys_are_a_comma_separated_list_and_never_printed(monkeypatch):
    monkeypatch.setenv("REID_API_KEY", " old-key , new-key,,")
    settings = Settings()
    assert settings.api_keys == ("old-key", "new-key")
    assert "old-key" not in repr(settings) and "new-key" not in str(settings.model_dump())


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("REID_PORT=8123\nREID_DATA_DIR=/srv/gallery\n")
    settings = Settings()
    assert settings.port == 8123 and settings.data_dir == Path("/srv/gallery")


@pytest.mark.parametrize(("name", "value"), [("REID_DEVICE", "tpu"), ("REID_PORT", "eighty"), ("REID_MAX_BATCH", "0")])
def test_invalid_values_are_rejected(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_get_settings_is_read_once(monkeypatch):
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("REID_PORT", "8001")
        first = get_settings()
        monkeypatch.setenv("REID_PORT", "8002")
        assert get_settings() is first and first.port == 8001
    finally:
        get_settings.cache_clear()


def test_the_decoder_limits_are_the_settings_of_the_same_names():
    settings = Settings(max_frames=7, max_frame_dimension=99, max_archive_entries=5, max_archive_bytes=1234,
                        max_decoded_pixels=10**6, _env_file=None)
    limits = decode_limits(settings)
    assert isinstance(limits, DecodeLimits)
    assert (limits.max_frames, limits.max_frame_dimension, limits.max_archive_entries) == (7, 99, 5)
    assert (limits.max_archive_bytes, limits.max_decoded_pixels) == (1234, 10**6)
    assert {name: getattr(settings, name) for name in DecodeLimits.__dataclass_fields__} == limits.__dict__


def test_the_decoder_limits_default_to_the_settings_defaults():
    defaults = {name: Settings.model_fields[name].default for name in DecodeLimits.__dataclass_fields__}
    assert DecodeLimits().__dict__ == defaults
    assert defaults["max_frames"] == 2000 and defaults["max_archive_bytes"] == 128 * 1024 * 1024
