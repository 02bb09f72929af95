"""GET /health (operators' shape, see API.md) and GET /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import time
import weakref
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from sqlalchemy import func, select

from healthforms.clock import utcnow
from healthforms.errors import Unauthenticated
from healthforms.metrics import Metrics
from healthforms.outbox.models import OutboxMessage
from healthforms.redis.client import RedisService
from healthforms.redis.errors import TRANSPORT_ERRORS, RedisUnavailable
from healthforms.state import AppState, StateDep

router = APIRouter(tags=["health"])

# Anything but noeviction may silently drop nonces, locks and rate buckets.
SAFE_EVICTION_POLICY = "noeviction"


def package_version() -> str:
    try:
        return metadata.version("healthforms")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+source"


def _fmt2(value: float) -> str:
    return f"{value:.2f}"


def eviction_warnings(policy: str) -> list[str]:
    if policy == SAFE_EVICTION_POLICY:
        return []
    return [
        f"maxmemory-policy is {policy!r}: Redis may evict keys under memory pressure and "
        "silently drop nonces, locks and rate-limit buckets; set it to 'noeviction'"
    ]


# A new connection that answered PING is trusted for this long (so /health under load
# does not cost a connection per request); a failure is never cached.
NEW_CONNECTION_TRUST_S = 1.0
_reached_at: weakref.WeakKeyDictionary[RedisService, float] = weakref.WeakKeyDictionary()
_PROBE_ERRORS: tuple[type[BaseException], ...] = (*TRANSPORT_ERRORS, RedisError)


async def new_connection_error(redis: RedisService) -> str | None:
    """None when a brand-new connection to Redis answers PING, else a short reason.

    Pooled connections outlive what /health must notice: a removed unix socket leaves
    them answering while every new connection (a new worker, a reconnect after an
    error, the next request's) fails. So this opens one of its own.
    """
    if time.monotonic() - _reached_at.get(redis, -math.inf) < NEW_CONNECTION_TRUST_S:
        return None
    connection: Any = redis.pool.connection_class(**redis.pool.connection_kwargs)
    try:
        await connection.connect()
        await connection.send_command("PING")
        await connection.read_response()
    except _PROBE_ERRORS as exc:
        return _reason(exc)
    finally:
        await connection.disconnect()
    _reached_at[redis] = time.monotonic()
    return None


def _reason(error: BaseException) -> str:
    text = str(error).split("\n", 1)[0]
    if "://" in text:  # never a URL (it may carry a password)
        text = type(error).__name__
    return (text or type(error).__name__)[:120]


async def redis_health(
    redis: RedisService, timeout_s: float = 0.8, metrics: Metrics | None = None
) -> dict[str, Any]:
    """The `redis` block of /health, with the topology (docs/redis-topologies.md):
    `topology`, `primary` and each node's `role` and `reachable`."""
    block = await _redis_block(redis, timeout_s, metrics)
    block.update(await _topology(redis, block["status"] == "connected", timeout_s))
    return block


async def _topology(redis: RedisService, reachable: bool, timeout_s: float) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout_s):
            return await redis.topology_state(reachable)
    except TimeoutError:
        return {"topology": redis.topology, "primary": None, "nodes": []}


async def _redis_block(
    redis: RedisService, timeout_s: float, metrics: Metrics | None = None
) -> dict[str, Any]:
    """The `redis` block of API.md; never waits longer than `timeout_s`."""
    # While the breaker is open, answer at once from its state: the background probe
    # closes it when Redis is back. (Asking allows_call() here would spend the
    # half-open trial that a real request should get.)
    if not redis.available:
        return {"status": "unavailable", "error": redis.breaker.last_error or "unavailable"}
    try:
        async with asyncio.timeout(timeout_s):
            unreachable = await new_connection_error(redis)
            if unreachable is not None:
                return {"status": "unavailable", "error": unreachable}
            info = await redis.info()
    except TimeoutError as exc:
        # A server that accepts connections but does not answer (stopped, swapping):
        # open the breaker, or every /health would wait here again.
        redis.breaker.record_failure(exc)
        return {"status": "unavailable", "error": "timeout"}
    except RedisUnavailable as exc:
        return {"status": "unavailable", "error": (str(exc) or "unavailable")[:120]}
    pool = redis.pool_stats()
    lookups = pool["hits"] + pool["misses"]
    hit_ratio = pool["hits"] / lookups if lookups else 1.0
    used = int(info.get("used_memory", 0))
    policy = str(info.get("maxmemory_policy", "unknown"))
    if metrics is not None and "maxmemory_policy" in info:
        metrics.redis_eviction_policy_safe.set(int(policy == SAFE_EVICTION_POLICY))
    return {
        "status": "connected",
        "hit_ratio": _fmt2(hit_ratio),
        "memory": {
            "used_bytes": used,
            "used_human": str(info.get("used_memory_human", "")),
            "used_mb": _fmt2(used / (1024 * 1024)),
            "peak_human": str(info.get("used_memory_peak_human", "")),
            "fragmentation_ratio": _fmt2(float(info.get("mem_fragmentation_ratio", 0.0))),
        },
        "pool": pool,
        "stats": {
            "keyspace_hits": int(info.get("keyspace_hits", 0)),
            "keyspace_misses": int(info.get("keyspace_misses", 0)),
            "total_commands_processed": int(info.get("total_commands_processed", 0)),
            "total_connections_received": int(info.get("total_connections_received", 0)),
        },
        "maxmemory_policy": policy,
        "evicted_keys": int(info.get("evicted_keys", 0)),
        "warnings": eviction_warnings(policy),
    }


@router.get("/health")
async def health(state: StateDep) -> JSONResponse:
    redis_block, db_block = await asyncio.gather(
        redis_health(state.redis, metrics=state.metrics), _database_health(state)
    )
    database_up = db_block["status"] == "connected"
    if not database_up:
        status, code = "unavailable", 503
    elif redis_block["status"] != "connected":
        status, code = "degraded", 200
    else:
        status, code = "healthy", 200
    body = {
        "status": status,
        "version": package_version(),
        "redis": redis_block,
        "database": db_block,
    }
    return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})


# A successful database ping is trusted for this long, so /health under load does not
# cost a query per request; a failure is never cached, so an outage shows at once.
DB_PING_CACHE_S = 1.0


async def _database_health(state: AppState) -> dict[str, Any]:
    up = await state.db.answers(trust_s=DB_PING_CACHE_S, timeout_s=2.0)
    return {"status": "connected" if up else "unavailable", "backend": state.db.backend}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: StateDep) -> Response:
    token = state.settings.metrics_token
    if token is not None:
        supplied = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(supplied.encode(), expected.encode()):
            raise Unauthenticated("A metrics token is required.")
    await refresh_scrape_gauges(state)
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


# A scrape reads Redis' policy and the outbox backlog at most this often per process.
SCRAPE_READ_EVERY_S = 10.0
_scrape_read_at: weakref.WeakKeyDictionary[Metrics, float] = weakref.WeakKeyDictionary()


async def refresh_scrape_gauges(state: AppState, timeout_s: float = 1.0) -> None:
    """Set the gauges read from Redis and the database (metrics.py). Bounded: a Redis or
    database that does not answer leaves them as they were (healthforms_redis_up and
    /health tell that story), and never delays the scrape past `timeout_s`."""
    now = time.monotonic()
    if now - _scrape_read_at.get(state.metrics, -math.inf) < SCRAPE_READ_EVERY_S:
        return
    _scrape_read_at[state.metrics] = now
    with contextlib.suppress(Exception):
        if state.redis.available:
            async with asyncio.timeout(timeout_s):
                policy = str((await state.redis.info()).get("maxmemory_policy", ""))
            if policy:
                state.metrics.redis_eviction_policy_safe.set(int(policy == SAFE_EVICTION_POLICY))
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s), state.db.sessions() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(OutboxMessage.created_at)).where(
                        OutboxMessage.handled_at.is_(None)
                    )
                )
            ).one()
        state.metrics.outbox_backlog.set(count)
        age = 0.0 if oldest is None else (utcnow() - oldest).total_seconds()
        state.metrics.outbox_oldest_age.set(max(age, 0.0))
