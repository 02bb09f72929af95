"""GET /health and /metrics against real servers: shape, degraded mode, database down."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from healthforms.config import Settings
from healthforms.health.routes import DB_PING_CACHE_S, NEW_CONNECTION_TRUST_S, package_version
from healthforms.redis.embedded import EmbeddedRedis
from tests.conftest import make_settings
from tests.support import legs
from tests.support.apps import asgi_client, running_app

POOL_KEYS = {
    "hits",
    "misses",
    "timeouts",
    "total_connections",
    "idle_connections",
    "stale_connections",
}
MEMORY_KEYS = {"used_bytes", "used_human", "used_mb", "peak_human", "fragmentation_ratio"}
STATS_KEYS = {
    "keyspace_hits",
    "keyspace_misses",
    "total_commands_processed",
    "total_connections_received",
}
DECIMAL_2 = re.compile(r"^\d+\.\d{2}$")
# Added by the topologies (docs/redis-topologies.md) to both shapes of the redis block.
TOPOLOGY_KEYS = {"topology", "primary", "nodes"}


def assert_standalone_topology(redis: dict[str, object], *, reachable: bool) -> None:
    assert redis["topology"] == "standalone"
    assert isinstance(redis["primary"], str) and redis["primary"]
    assert redis["nodes"] == [
        {"address": redis["primary"], "role": "primary", "reachable": reachable}
    ]


def _settings_on(settings: Settings, redis_url: str, **overrides: object) -> Settings:
    values = {
        "database_url": settings.database_url,
        "redis_url": redis_url,
        "redis_prefix": settings.redis_prefix,
        "data_dir": settings.data_dir,
        **overrides,
    }
    return make_settings(**values)  # type: ignore[arg-type]


async def test_health_reports_every_key_of_the_contract_with_its_type(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"status", "version", "redis", "database"}
    assert body["status"] == "healthy"
    assert body["version"] == package_version()
    redis = body["redis"]
    assert set(redis) == {
        "status",
        "hit_ratio",
        "memory",
        "pool",
        "stats",
        "maxmemory_policy",
        "evicted_keys",
        "warnings",
        *TOPOLOGY_KEYS,
    }
    assert redis["status"] == "connected"
    assert_standalone_topology(redis, reachable=True)
    assert isinstance(redis["hit_ratio"], str) and DECIMAL_2.match(redis["hit_ratio"])
    assert 0.0 <= float(redis["hit_ratio"]) <= 1.0
    memory = redis["memory"]
    assert set(memory) == MEMORY_KEYS
    assert isinstance(memory["used_bytes"], int) and memory["used_bytes"] > 0
    assert isinstance(memory["used_human"], str) and memory["used_human"]
    assert isinstance(memory["peak_human"], str) and memory["peak_human"]
    assert DECIMAL_2.match(memory["used_mb"])
    assert abs(float(memory["used_mb"]) - memory["used_bytes"] / 1048576) < 0.01
    assert DECIMAL_2.match(memory["fragmentation_ratio"])
    assert set(redis["pool"]) == POOL_KEYS
    assert all(type(v) is int and v >= 0 for v in redis["pool"].values())
    assert redis["pool"]["total_connections"] >= 1
    assert set(redis["stats"]) == STATS_KEYS
    assert all(type(v) is int and v >= 0 for v in redis["stats"].values())
    assert redis["stats"]["total_commands_processed"] > 0
    assert redis["maxmemory_policy"] == "noeviction" or redis["warnings"]
    assert type(redis["evicted_keys"]) is int
    assert isinstance(redis["warnings"], list)
    expected_backend = "postgresql" if legs.database_is_postgres() else "sqlite"
    assert body["database"] == {"status": "connected", "backend": expected_backend}
    assert response.headers["cache-control"] == "no-store"


async def test_noeviction_server_has_no_warnings(
    private_redis: EmbeddedRedis, settings: Settings
) -> None:
    async with (
        running_app(_settings_on(settings, private_redis.url)) as app,
        asgi_client(app) as http,
    ):
        redis = (await http.get("/health")).json()["redis"]
    assert redis["maxmemory_policy"] == "noeviction"
    assert redis["warnings"] == []
    assert redis["evicted_keys"] == 0


async def test_evicting_policy_is_warned_about(tmp_path: Path, settings: Settings) -> None:
    with EmbeddedRedis.start(
        tmp_path / "lru",
        binary=legs.private_server_binary(),
        appendonly=False,
        extra_args=["--maxmemory-policy", "allkeys-lru", "--maxmemory", "64mb"],
    ) as server:
        async with running_app(_settings_on(settings, server.url)) as app, asgi_client(app) as http:
            response = await http.get("/health")
    assert response.status_code == 200
    redis = response.json()["redis"]
    assert redis["maxmemory_policy"] == "allkeys-lru"
    assert len(redis["warnings"]) == 1
    assert "allkeys-lru" in redis["warnings"][0] and "noeviction" in redis["warnings"][0]


async def _get_timed(http: httpx.AsyncClient) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await http.get("/health")
    return response, time.perf_counter() - started


async def _poll_until(http: httpx.AsyncClient, status: str, deadline_s: float) -> httpx.Response:
    deadline = time.monotonic() + deadline_s
    while True:
        response = await http.get("/health")
        if response.json()["status"] == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


@pytest.mark.chaos
async def test_killed_redis_degrades_fast_and_recovers_without_app_restart(
    private_redis: EmbeddedRedis, settings: Settings
) -> None:
    # A 2 s socket timeout: any answer well under it came from the breaker, not a wait.
    app_settings = _settings_on(settings, private_redis.url, redis_timeout_s=2.0)
    async with running_app(app_settings) as app, asgi_client(app) as http:
        assert (await http.get("/health")).json()["status"] == "healthy"
        private_redis.kill()

        # The INFO cache may answer "connected" for up to a second after the kill.
        first = await _poll_until(http, "degraded", deadline_s=5.0)
        assert first.status_code == 200
        body = first.json()
        assert body["status"] == "degraded"
        assert body["redis"]["status"] == "unavailable"
        assert isinstance(body["redis"]["error"], str) and body["redis"]["error"]
        assert set(body["redis"]) == {"status", "error", *TOPOLOGY_KEYS}
        assert_standalone_topology(body["redis"], reachable=False)
        assert body["database"]["status"] == "connected"

        # Breaker open: the next answer does not even touch the pool.
        state = app.state.hf
        before = state.redis.pool.stats()
        second, elapsed = await _get_timed(http)
        assert second.status_code == 200 and second.json()["status"] == "degraded"
        assert elapsed < 1.0
        after = state.redis.pool.stats()
        assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])

        private_redis.restart()
        healthy = await _poll_until(http, "healthy", deadline_s=10.0)
        assert healthy.json()["status"] == "healthy"
        assert healthy.json()["redis"]["status"] == "connected"


@pytest.mark.chaos
async def test_hung_redis_opens_the_breaker_instead_of_waiting_on_every_request(
    private_redis: EmbeddedRedis, settings: Settings
) -> None:
    app_settings = _settings_on(settings, private_redis.url, redis_timeout_s=3.0)
    async with running_app(app_settings) as app, asgi_client(app) as http:
        assert (await http.get("/health")).json()["status"] == "healthy"
        await asyncio.sleep(1.1)  # let the INFO cache expire
        os.kill(private_redis.process.pid, signal.SIGSTOP)
        try:
            first, _ = await _get_timed(http)
            assert first.status_code == 200
            assert first.json()["status"] == "degraded"
            state = app.state.hf
            before = state.redis.pool.stats()
            second, elapsed = await _get_timed(http)
            assert second.json()["status"] == "degraded"
            # Without the breaker this would wait on the hung server again.
            assert elapsed < 1.0
            assert not state.redis.available
            after = state.redis.pool.stats()
            assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)
        healthy = await _poll_until(http, "healthy", deadline_s=10.0)
        assert healthy.json()["status"] == "healthy"


@pytest.mark.chaos
async def test_a_removed_socket_is_reported_down_though_pooled_connections_answer(
    settings: Settings,
) -> None:
    # What `healthforms check` used to do to a running embedded server: its socket
    # vanished, pooled connections kept answering, every new one failed, and /health
    # said "healthy" from those pooled connections.
    folder = Path(tempfile.mkdtemp(prefix="hf-", dir="/tmp"))
    try:
        with EmbeddedRedis.start(
            folder / "redis",
            binary=legs.private_server_binary(),
            use_unix_socket=True,
            appendonly=False,
        ) as server:
            assert server.unix_socket is not None
            async with (
                running_app(_settings_on(settings, server.url)) as app,
                asgi_client(app) as http,
            ):
                assert (await http.get("/health")).json()["status"] == "healthy"
                server.unix_socket.unlink()
                assert await app.state.hf.redis.ping()  # a pooled connection still answers
                # Past the INFO cache and the trust in the last new connection.
                await asyncio.sleep(max(1.0, NEW_CONNECTION_TRUST_S) + 0.1)
                response = await http.get("/health")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["redis"]["status"] == "unavailable"
    assert set(body["redis"]) == {"status", "error", *TOPOLOGY_KEYS}
    assert "No such file" in body["redis"]["error"]
    assert body["database"]["status"] == "connected"


@pytest.mark.chaos
async def test_unreachable_database_answers_503(
    settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    if legs.database_is_postgres():
        from healthforms.redis.embedded import free_port

        db_url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    else:
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'dir' / 'hf.db'}"
    app_settings = _settings_on(settings, redis_url, database_url=db_url)
    async with running_app(app_settings) as app, asgi_client(app) as http:
        response = await http.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["database"]["status"] == "unavailable"
    assert body["status"] == "unavailable"
    assert body["redis"]["status"] == "connected"


@pytest.mark.chaos
async def test_sqlite_file_removed_while_running_answers_503(
    settings: Settings, redis_url: str, fresh_database_url: str
) -> None:
    if legs.database_is_postgres():
        pytest.skip("SQLite-specific: the database file vanishes under a running app")
    folder = Path(fresh_database_url.split("///", 1)[1]).parent
    app_settings = _settings_on(settings, redis_url, database_url=fresh_database_url)
    async with running_app(app_settings) as app, asgi_client(app) as http:
        assert (await http.get("/health")).status_code == 200  # pooled connection open
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        # A good ping is trusted for DB_PING_CACHE_S; the next check after it must see the loss.
        await asyncio.sleep(DB_PING_CACHE_S + 0.05)
        response = await http.get("/health")
    assert response.status_code == 503
    assert response.json()["database"]["status"] == "unavailable"


async def test_metrics_exposes_the_contract_families(client: httpx.AsyncClient) -> None:
    await client.get("/health")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for family in (
        "healthforms_http_requests_total",
        "healthforms_http_request_duration_seconds",
        "healthforms_ratelimit_rejections_total",
        "healthforms_lock_conflicts_total",
        "healthforms_redis_up",
        "healthforms_redis_pool_connections",
        "healthforms_degraded_decisions_total",
    ):
        assert f"# TYPE {family}" in text, family
    assert 'route="/health"' in text
    assert "healthforms_redis_up 1.0" in text


async def test_metrics_token_is_required_when_configured(
    settings: Settings, redis_url: str, redis_client: Redis
) -> None:
    app_settings = _settings_on(settings, redis_url, metrics_token="s3cret-token")
    async with running_app(app_settings) as app, asgi_client(app) as http:
        refused = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        allowed = await http.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
    assert wrong.status_code == 401
    assert allowed.status_code == 200
