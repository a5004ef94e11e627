"""Gallery backends for the service tests: the gallery and API suites run against both SQLite+FAISS and Milvus.

The Milvus leg runs on Milvus Lite (pip's milvus-lite) started once per session as a server process on a
loopback port (`milvus_server.MilvusLiteServer`); every gallery gets its own collection. Its tests carry the
``milvus`` marker: ``pytest -m milvus tests/service`` runs only that leg, ``-m "not milvus"`` skips it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gallery_backends import GalleryOpener
from milvus_server import MilvusLiteServer
from redis_server import RedisServer, redis_server_or_skip

BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("milvus", id="milvus", marks=pytest.mark.milvus)]


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusLiteServer]:
    """One Milvus Lite server for the session's Milvus galleries."""
    folder = tmp_path_factory.mktemp("milvus-lite")
    server = MilvusLiteServer(folder / "data", folder / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session's footage-queue tests (each test empties it first: `redis_url`)."""
    executable = redis_server_or_skip()
    server = RedisServer(executable, tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(scope="module", params=BACKENDS)
def open_store(request: pytest.FixtureRequest) -> GalleryOpener:
    """The gallery opener of each backend in turn (module scope: module fixtures may use it)."""
    if request.param == "milvus":
        return GalleryOpener("milvus", request.getfixturevalue("milvus_server").uri)
    return GalleryOpener("sqlite")
