"""GET /health and /metrics against real servers."""

from __future__ import annotations

import httpx


async def test_health_reports_every_key_of_the_contract(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert isinstance(body["version"], str) and body["version"]
    redis = body["redis"]
    assert redis["status"] == "connected"
    assert set(redis) >= {
        "status",
        "hit_ratio",
        "memory",
        "pool",
        "stats",
        "maxmemory_policy",
        "evicted_keys",
        "warnings",
    }
    assert set(redis["memory"]) == {
        "used_bytes",
        "used_human",
        "used_mb",
        "peak_human",
        "fragmentation_ratio",
    }
    assert isinstance(redis["memory"]["used_bytes"], int)
    assert set(redis["pool"]) == {
        "hits",
        "misses",
        "timeouts",
        "total_connections",
        "idle_connections",
        "stale_connections",
    }
    assert all(isinstance(v, int) for v in redis["pool"].values())
    assert set(redis["stats"]) == {
        "keyspace_hits",
        "keyspace_misses",
        "total_commands_processed",
        "total_connections_received",
    }
    assert float(redis["hit_ratio"]) <= 1.0
    assert body["database"]["status"] == "connected"
    assert body["database"]["backend"] in ("sqlite", "postgresql")
