"""BroadcastCache on a real Redis: two instances, invalidation over pub/sub, and what
it does while it cannot hear (a frozen or restarted server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from healthforms.redis.broadcast import BroadcastCache
from healthforms.redis.client import RedisService
from healthforms.redis.embedded import EmbeddedRedis
from tests.redis.helpers import service_for
from tests.support.servers import hung

Caches = Callable[..., AbstractAsyncContextManager[BroadcastCache[str]]]


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def caches_on(url: str, prefix: str) -> Caches:
    @asynccontextmanager
    async def running(**options: Any) -> AsyncIterator[BroadcastCache[str]]:
        redis: RedisService = service_for(url)
        redis.prefix = prefix
        redis.start_probe()
        cache: BroadcastCache[str] = BroadcastCache(redis, "test-channel", **options)
        cache.start()
        try:
            await eventually(lambda: cache.subscribed)
            yield cache
        finally:
            await cache.close()
            await redis.close()

    return running


@pytest.fixture
def caches(redis_url: str, redis_prefix: str) -> Caches:
    return caches_on(redis_url, redis_prefix)


async def test_an_invalidation_reaches_every_instance(caches: Caches) -> None:
    async with caches() as one, caches() as two:
        one.put("form-a", "v1")
        two.put("form-a", "v1")
        two.put("form-b", "v1")
        assert one.get("form-a") == two.get("form-a") == "v1"
        await one.invalidate("form-a")
        assert one.get("form-a") is None  # at once where it was changed
        await eventually(lambda: two.get("form-a") is None)  # soon everywhere else
        assert two.get("form-b") == "v1"  # and nothing else


async def test_entries_are_served_for_a_bounded_time(caches: Caches) -> None:
    async with caches(max_age_s=0.3) as cache:
        cache.put("k", "v")
        assert cache.get("k") == "v"
        await asyncio.sleep(0.4)
        assert cache.get("k") is None
        assert (cache.hits, cache.misses) == (1, 1)


async def test_another_prefix_does_not_hear_it(redis_url: str, redis_prefix: str) -> None:
    async with (
        caches_on(redis_url, redis_prefix)() as ours,
        caches_on(redis_url, redis_prefix + "other:")() as theirs,
    ):
        theirs.put("k", "v")
        await ours.invalidate("k")
        await asyncio.sleep(0.3)
        assert theirs.get("k") == "v"


async def test_while_redis_is_frozen_entries_live_a_moment_only(
    private_redis: EmbeddedRedis, redis_prefix: str
) -> None:
    """While it cannot hear invalidations, an entry is served briefly (a burst of page
    views), never for the full max age."""
    async with caches_on(private_redis.url, redis_prefix)(unsubscribed_max_age_s=0.5) as cache:
        with hung(private_redis):
            await eventually(lambda: not cache.subscribed, timeout_s=15)
            cache.put("k", "maybe stale")
            assert cache.get("k") == "maybe stale"
            await asyncio.sleep(0.6)
            assert cache.get("k") is None


async def test_hearing_again_drops_what_was_cached_meanwhile(
    private_redis: EmbeddedRedis, redis_prefix: str
) -> None:
    """An invalidation sent while we were away is lost: everything goes on return."""
    options = {"max_age_s": 60.0, "unsubscribed_max_age_s": 60.0}
    async with caches_on(private_redis.url, redis_prefix)(**options) as cache:
        with hung(private_redis):
            await eventually(lambda: not cache.subscribed, timeout_s=15)
            cache.put("k", "cached while deaf")
        await eventually(lambda: cache.subscribed, timeout_s=15)
        assert cache.get("k") is None
