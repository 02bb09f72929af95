"""The bounded Redis pool: callers queue for a free connection, and give up after the timeout."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from healthforms.redis.client import CountingBlockingPool, build_pool
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.redis.errors import PoolExhausted


def small_pool(url: str, size: int, wait_s: float) -> CountingBlockingPool:
    return build_pool(url, max_connections=size, pool_wait_s=wait_s, timeout_s=2.0)


async def test_never_more_connections_than_the_bound(redis_url: str) -> None:
    pool = small_pool(redis_url, 3, 5.0)
    client = Redis(connection_pool=pool)
    try:
        # 30 concurrent blocking calls on 3 connections: all complete, queued in turn.
        results = await asyncio.gather(*(client.execute_command("ECHO", str(i)) for i in range(30)))  # type: ignore[no-untyped-call]
        assert [int(r) for r in results] == list(range(30))
        stats = pool.stats()
        assert stats["total_connections"] <= 3
        assert stats["misses"] <= 3
        assert stats["hits"] + stats["misses"] == 30
    finally:
        await client.aclose()
        await pool.disconnect()


async def test_a_caller_gives_up_after_the_wait_and_is_counted(
    private_redis: EmbeddedRedis,
) -> None:
    pool = small_pool(private_redis.url, 1, 0.2)
    holder = Redis(connection_pool=pool)
    try:
        # A blocking pop on an empty list holds the only connection for a second.
        slow = asyncio.create_task(holder.execute_command("BLPOP", "empty-list", "1"))  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.1)
        with pytest.raises(PoolExhausted):
            await holder.ping()
        assert pool.stats()["timeouts"] == 1
        await slow
        assert await holder.ping()  # free again
    finally:
        await holder.aclose()
        await pool.disconnect()


async def test_waiters_are_served_first_come_first_served(redis_url: str) -> None:
    pool = small_pool(redis_url, 1, 5.0)
    order: list[int] = []
    held = await pool.get_connection()

    async def wait_then_use(n: int) -> None:
        connection = await pool.get_connection()
        order.append(n)
        await pool.release(connection)

    tasks = [asyncio.create_task(wait_then_use(n)) for n in range(5)]
    await asyncio.sleep(0.05)
    assert order == []
    await pool.release(held)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    await pool.disconnect()


async def test_a_cancelled_waiter_does_not_strand_the_others(redis_url: str) -> None:
    pool = small_pool(redis_url, 1, 5.0)
    held = await pool.get_connection()
    first = asyncio.create_task(pool.get_connection())
    second = asyncio.create_task(pool.get_connection())
    await asyncio.sleep(0.05)
    await pool.release(held)  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs: the wake must pass on
    connection = await asyncio.wait_for(second, 2.0)
    await pool.release(connection)
    with pytest.raises(asyncio.CancelledError):
        await first
    await pool.disconnect()
