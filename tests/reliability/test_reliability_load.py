"""Load in CI: the code of bench/bench_load.py for ~12 s with 16 clients (zero 5xx, zero lost enrolls, flat
memory), and backpressure: past the admission limit the service answers 503 + Retry-After at once,
before reading the body, and every request retried after it gets through."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from live_server import live_server
from test_service_server import frames_upload

from bench.bench_load import API_KEY as LOAD_KEY
from bench.bench_load import LoadConfig, run_load

pytestmark = pytest.mark.slow

#: RSS growth allowed over the run: the gallery's own growth (a few thousand 512-float rows, < 10 MiB) plus
#: allocator slack; a leak of one upload per request (~10 kB x thousands) would pass it within a minute.
RSS_GROWTH_BOUND_MIB = 64


def test_bounded_mixed_load_has_no_5xx_loses_nothing_and_stays_flat(tiny_model, tmp_path):
    config = LoadConfig(clients=16, duration_s=12.0, max_requests=5000, frames_per_tracklet=4, frame_height=64,
                        frame_width=32, warmup_requests=32)
    with live_server(tiny_model, tmp_path / "gallery", tmp_path / "server.log", REID_API_KEY=LOAD_KEY,
                     REID_LOG_LEVEL="WARNING") as server:
        result = asyncio.run(run_load(server.url, server.pid, config))
    print(f"load: {result.requests} requests in {result.wall_s:.1f} s ({result.requests_per_s:.1f}/s), "
          f"statuses {result.statuses}, per operation {result.per_operation}, RSS {result.rss_mib}")
    assert result.server_errors == 0 and result.transport_errors == 0, result.statuses
    assert set(result.statuses) <= {"200", "201", "204"}, result.statuses
    assert result.lost_enrolls == [] and result.deleted_but_present == []
    assert result.acknowledged_enrolls >= 20 and result.requests >= 100
    assert set(result.per_operation) == {"enroll", "query_media", "query_id", "read", "delete"}
    assert result.rss_mib["end"] - result.rss_mib["start"] < RSS_GROWTH_BOUND_MIB, result.rss_mib


async def _burst(url: str, count: int) -> list[tuple[int, float, str | None]]:
    """``count`` concurrent enrolls; (status, seconds, Retry-After) each."""
    async with httpx.AsyncClient(base_url=url, timeout=60.0, headers={"X-API-Key": "server-test-key"},
                                 limits=httpx.Limits(max_connections=count)) as client:
        async def one(index: int):
            started = time.perf_counter()
            response = await client.post("/tracklets", files=frames_upload(index, 4),
                                         data={"tracklet_id": f"burst{index}"})
            return response.status_code, time.perf_counter() - started, response.headers.get("retry-after")
        return await asyncio.gather(*(one(index) for index in range(count)))


def test_past_the_admission_limit_uploads_get_503_retry_after_at_once(tiny_model, tmp_path):
    with live_server(tiny_model, tmp_path / "gallery", tmp_path / "server.log", REID_MAX_CONCURRENT_UPLOADS="2",
                     REID_MAX_BATCH="1") as server:
        answers = asyncio.run(_burst(server.url, 12))
        refused = [answer for answer in answers if answer[0] == 503]
        accepted = [answer for answer in answers if answer[0] == 201]
        assert len(refused) + len(accepted) == 12, answers
        assert refused and accepted, answers
        assert all(retry_after == "1" for _, _, retry_after in refused)
        # Refused before the body was parsed or anything decoded: much faster than an accepted enroll.
        assert max(seconds for _, seconds, _ in refused) < max(seconds for _, seconds, _ in accepted)
        # A client that honours Retry-After gets everything in; nothing refused was half-stored.
        with server.client() as client:
            stored = {item["id"] for item in client.get("/tracklets").json()["items"]}
            assert stored == {f"burst{index}" for index, answer in enumerate(answers) if answer[0] == 201}
            refusals = len(refused)
            for index, answer in enumerate(answers):
                while answer[0] == 503:
                    time.sleep(int(answer[2]) * 0.2)
                    response = client.post("/tracklets", files=frames_upload(index, 4),
                                           data={"tracklet_id": f"burst{index}"})
                    answer = (response.status_code, 0.0, response.headers.get("retry-after"))
                    refusals += answer[0] == 503
                assert answer[0] == 201
            assert client.get("/readyz").json()["gallery_size"] == 12
        busy_lines = [line for line in server.log().splitlines() if " 503 " in line and "failed: busy" in line]
        assert len(busy_lines) == refusals  # one log line per refusal, retries included
