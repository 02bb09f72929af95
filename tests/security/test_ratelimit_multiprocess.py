"""Three `healthforms serve` processes on one Redis and one database: limits hold across them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from healthforms.redis.embedded import EmbeddedRedis
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.servers import ServerProcess, running_servers

pytestmark = [pytest.mark.multiprocess]

LOGIN = "/api/auth/session-login"
CREDENTIALS = {"email": "nobody@example.org", "password": "wrong-password"}


@pytest.fixture
def servers(
    private_redis: EmbeddedRedis, database_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[list[ServerProcess]]:
    env = {
        "REDIS_URL": private_redis.url,
        "DATABASE_URL": database_url,
        "HEALTHFORMS_REDIS_PREFIX": redis_prefix,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_ENV": "development",
        "HEALTHFORMS_DATA_DIR": str(tmp_path / "data"),
        "HEALTHFORMS_LOG_LEVEL": "warning",
    }
    with running_servers(3, env, tmp_path / "logs") as started:
        yield started


async def attempts_at_once(servers: list[ServerProcess], count: int) -> list[httpx.Response]:
    """`count` login attempts sent together, spread round-robin over the servers."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(servers[i % len(servers)].base_url + LOGIN, json=CREDENTIALS)
                    for i in range(count)
                )
            )
        )


def passed(responses: list[httpx.Response]) -> int:
    assert all(r.status_code != 500 for r in responses), [r.status_code for r in responses]
    return sum(1 for r in responses if r.status_code != 429)


def wait_for_redis(servers: list[ServerProcess], up: bool, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    want = "connected" if up else "unavailable"
    while time.monotonic() < deadline:
        states = [
            httpx.get(s.base_url + "/health", timeout=2.0).json()["redis"]["status"]
            for s in servers
        ]
        if all(state == want for state in states):
            return
        time.sleep(0.2)
    raise AssertionError(f"servers did not see redis {want}: {states}")


async def test_thirty_logins_over_three_processes_let_exactly_seven_through(
    servers: list[ServerProcess],
) -> None:
    responses = await attempts_at_once(servers, 30)
    assert passed(responses) == 7
    refused = [r for r in responses if r.status_code == 429]
    assert all(1 <= int(r.headers["retry-after"]) <= 12 for r in refused)
    # Every process refused some: the bucket is shared, not per process.
    refused_ports = {httpx.URL(str(r.request.url)).port for r in refused}
    assert refused_ports == {s.port for s in servers}
    logs = "".join(s.log_text() for s in servers)
    assert "SECURITY: Rate limit exceeded" in logs
    assert "identifier_hash" in logs
    assert '"127.0.0.1"' not in logs  # the identifier is hashed, never logged as is


@pytest.mark.chaos
async def test_redis_killed_limits_per_process_and_restarted_shares_again(
    servers: list[ServerProcess], private_redis: EmbeddedRedis
) -> None:
    assert passed(await attempts_at_once(servers, 30)) == 7

    private_redis.kill()
    # Each process now limits on its own, with the same algorithm: 7 each, no 500.
    async with httpx.AsyncClient(timeout=10.0) as client:
        for server in servers:
            alone = [await client.post(server.base_url + LOGIN, json=CREDENTIALS) for _ in range(9)]
            assert passed(alone) == 7, server.port
            assert all("ratelimit-remaining" in r.headers for r in alone)
    wait_for_redis(servers, up=False)
    metrics = httpx.get(servers[0].base_url + "/metrics", timeout=5.0).text
    assert (
        'healthforms_degraded_decisions_total{decision="allowed",feature="ratelimit"} 7.0'
        in metrics
    )

    private_redis.restart()  # empty: appendonly is off for private servers
    wait_for_redis(servers, up=True)
    # Shared again without restarting the app: one bucket for all three.
    assert passed(await attempts_at_once(servers, 30)) == 7
