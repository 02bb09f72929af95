"""Locks with Redis killed: database leases across instances, then Redis again after restart."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from healthforms.config import Settings
from healthforms.db.engine import Database
from healthforms.metrics import Metrics
from healthforms.redis.client import RedisService, RedisTarget, build_pool
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.security.locks import LockService

pytestmark = pytest.mark.chaos


@dataclass
class Instance:
    """One app instance's view: its own Redis client, database engine and metrics."""

    redis: RedisService
    db: Database
    metrics: Metrics
    locks: LockService

    def degraded(self, decision: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "healthforms_degraded_decisions_total", {"feature": "locks", "decision": decision}
        )
        return value or 0.0


@pytest.fixture
async def instances(
    private_redis: EmbeddedRedis, database_url: str, settings: Settings
) -> AsyncIterator[tuple[Instance, Instance]]:
    made: list[Instance] = []
    for _ in range(2):
        pool = build_pool(private_redis.url, timeout_s=0.5)
        redis = RedisService(
            pool, RedisTarget(private_redis.url, tls=False, embedded=True), settings.redis_prefix
        )
        db = Database.connect(database_url)
        metrics = Metrics()
        made.append(Instance(redis, db, metrics, LockService(redis, db, metrics)))
    try:
        yield made[0], made[1]
    finally:
        for instance in made:
            await instance.redis.close()
            await instance.db.dispose()


def new_key() -> str:
    return f"lock:test:{{{secrets.token_hex(6)}}}"


async def wait_for_redis(*instances: Instance, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        for instance in instances:
            while not await instance.redis.ping():
                await asyncio.sleep(0.1)


async def test_database_fallback_keeps_mutual_exclusion_then_redis_resumes(
    instances: tuple[Instance, Instance], private_redis: EmbeddedRedis, database: Database
) -> None:
    a, b = instances
    key = new_key()
    before = await a.locks.acquire(key, 5_000)
    assert before is not None and before.backend == "redis"
    assert await a.locks.release(before)

    private_redis.kill()

    first = await a.locks.acquire(key, 5_000)
    assert first is not None and first.backend == "database"
    assert first.fence > before.fence  # numbers keep growing across backends
    assert await b.locks.acquire(key, 5_000) is None
    assert await b.locks.holder(key) == first.token
    remaining = await b.locks.pttl(key)
    assert remaining is not None and 0 < remaining <= 5_000
    assert a.degraded("acquired") == 1 and b.degraded("busy") == 1
    assert await a.locks.renew(first, 8_000) is True
    remaining = await b.locks.pttl(key)
    assert remaining is not None and remaining > 5_000
    assert await b.locks.release(first) is True  # any instance may release with the lock
    second = await b.locks.acquire(key, 5_000)
    assert second is not None and second.backend == "database"
    assert second.fence > first.fence
    assert await a.locks.release(first) is False
    assert await a.locks.renew(first) is False
    assert await b.locks.release(second) is True

    # Real concurrency on the fallback: 20 tasks over the two instances; the
    # check-then-increment below loses updates if two ever overlap.
    counter = {"value": 0, "inside": 0, "overlaps": 0}

    async def critical(instance: Instance) -> None:
        async with asyncio.timeout(30):
            lock = await instance.locks.acquire(key, 5_000, wait_ms=30_000)
        assert lock is not None and lock.backend == "database"
        counter["inside"] += 1
        if counter["inside"] > 1:
            counter["overlaps"] += 1
        value = counter["value"]
        await asyncio.sleep(0.005)
        counter["value"] = value + 1
        counter["inside"] -= 1
        assert await instance.locks.release(lock)

    await asyncio.gather(*(critical(a if i % 2 else b) for i in range(20)))
    assert counter == {"value": 20, "inside": 0, "overlaps": 0}

    # Re-entrant per token on the database too.
    mine = await a.locks.acquire(key, 300, token="user-1")
    assert mine is not None
    again = await b.locks.acquire(key, 5_000, token="user-1")
    assert again is not None and again.fence == mine.fence
    assert await b.locks.acquire(key, 5_000, token="user-2") is None

    # Fencing is still checked by the database.
    async with database.sessions() as session, session.begin():
        assert await a.locks.fence_allows(session, key, mine.fence) is True
    async with database.sessions() as session, session.begin():
        assert await a.locks.fence_allows(session, key, first.fence) is False

    # Redis back (empty: no persistence). The database lease of user-1 is still
    # live, so an instance that saw the outage does not hand the key out via Redis.
    private_redis.restart()
    await wait_for_redis(a, b)
    assert await b.locks.acquire(key, 5_000, token="user-2") is None
    assert await b.locks.holder(key) == "user-1"  # read from its database lease
    remaining = await b.locks.pttl(key)
    assert remaining is not None and remaining > 0
    # The holder's next renewal moves its lease back to Redis.
    assert await a.locks.renew(mine, 5_000) is True
    assert await b.locks.holder(key) == "user-1"
    assert await a.locks.release(mine) is True
    resumed = await b.locks.acquire(key, 5_000)
    assert resumed is not None and resumed.backend == "redis"
    assert resumed.fence > mine.fence
    assert await a.locks.acquire(key, 5_000) is None


async def test_a_held_lock_survives_a_redis_outage(
    instances: tuple[Instance, Instance], private_redis: EmbeddedRedis
) -> None:
    a, b = instances
    key = new_key()
    async with a.locks.hold(key, 600) as lock:
        assert lock.backend == "redis"
        private_redis.kill()
        await asyncio.sleep(0.8)  # past the Redis lease: renewals moved it to the database
        assert a.degraded("renewed") >= 1
        assert await b.locks.acquire(key, 5_000) is None
        assert await b.locks.holder(key) == lock.token
    # Released on exit, in the database too.
    assert await b.locks.holder(key) is None
    taken = await b.locks.acquire(key, 5_000)
    assert taken is not None and taken.backend == "database" and taken.fence > lock.fence
