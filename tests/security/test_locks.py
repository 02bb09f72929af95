"""LockService against the leg's real Redis and database: leases, renewal, fencing, fairness."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from redis.asyncio import Redis

from healthforms.db.engine import Database
from healthforms.metrics import Metrics
from healthforms.redis.client import RedisService, RedisTarget, build_pool
from healthforms.security.locks import (
    ACQUIRE_SCRIPT,
    FORM_EDIT_LOCK_KEY,
    FORM_EDIT_LOCK_TTL_MS,
    PDF_LOCK_KEY,
    PDF_LOCK_TTL_MS,
    WAITER_LEASE_MS,
    LockBusy,
    LockService,
    LockUnavailable,
    fence_key,
)
from healthforms.state import StateDep


def new_key(kind: str = "test") -> str:
    return f"lock:{kind}:{{{secrets.token_hex(6)}}}"


def conflicts(metrics: Metrics, kind: str) -> float:
    value = metrics.registry.get_sample_value("healthforms_lock_conflicts_total", {"kind": kind})
    return value or 0.0


async def test_acquire_gives_one_holder_until_release(locks: LockService) -> None:
    key = new_key()
    first = await locks.acquire(key, 5_000)
    assert first is not None and first.backend == "redis" and first.key == key
    assert await locks.acquire(key, 5_000) is None
    assert await locks.holder(key) == first.token
    remaining = await locks.pttl(key)
    assert remaining is not None and 0 < remaining <= 5_000
    assert await locks.release(first) is True
    assert await locks.holder(key) is None
    assert await locks.pttl(key) is None
    assert await locks.release(first) is False
    second = await locks.acquire(key, 5_000)
    assert second is not None and second.token != first.token


async def test_reenter_renews_only_its_own_lock_in_one_round_trip(
    locks: LockService, redis_service: RedisService
) -> None:
    key = new_key("form-edit")
    await redis_service.pipelined(lambda m: m.execute("PING"))  # connected already
    writes = redis_service.mux.counters.writes
    assert await locks.reenter(key, 5_000, "usr_me") == (None, None)
    assert redis_service.mux.counters.writes == writes + 1
    assert await locks.holder(key) is None  # a free lock is not taken
    mine = await locks.acquire(key, 300, token="usr_me")
    assert mine is not None
    held, holder = await locks.reenter(key, 5_000, "usr_me")
    assert holder == "usr_me" and held is not None
    assert held.fence == mine.fence  # re-entered: the same fencing number
    remaining = await locks.pttl(key)
    assert remaining is not None and remaining > 300  # the lease was renewed
    assert await locks.reenter(key, 5_000, "usr_other") == (None, "usr_me")
    assert await locks.release(held) is True


async def test_expired_holder_cannot_release_or_renew_newer_lock(
    locks: LockService, redis_client: Redis, redis_prefix: str
) -> None:
    key = new_key("pdf-gen")
    first = await locks.acquire(key, 50)
    assert first is not None
    await asyncio.sleep(0.1)
    second = await locks.acquire(key, 5_000)
    assert second is not None
    assert await locks.release(first) is False
    assert await locks.renew(first, 10_000) is False
    assert await redis_client.get(redis_prefix + key) == second.token.encode()
    remaining = await redis_client.pttl(redis_prefix + key)
    assert 0 < remaining <= 5_000
    assert second.fence > first.fence


async def test_renew_extends_the_lease(locks: LockService) -> None:
    key = new_key()
    lock = await locks.acquire(key, 200)
    assert lock is not None
    assert await locks.renew(lock, 10_000) is True
    remaining = await locks.pttl(key)
    assert remaining is not None and remaining > 5_000
    await asyncio.sleep(0.3)  # past the first lease
    assert await locks.holder(key) == lock.token
    assert await locks.renew(lock) is True  # default: the lock's own ttl
    remaining = await locks.pttl(key)
    assert remaining is not None and remaining <= 200


async def test_renew_of_a_lapsed_lease_fails(locks: LockService) -> None:
    key = new_key()
    lock = await locks.acquire(key, 50)
    assert lock is not None
    await asyncio.sleep(0.1)
    assert await locks.renew(lock, 5_000) is False
    assert await locks.holder(key) is None


async def test_same_token_reenters_with_its_fence_and_others_are_refused(
    locks: LockService, metrics: Metrics
) -> None:
    key = FORM_EDIT_LOCK_KEY.format(form_id=secrets.token_hex(6))
    assert key.startswith("lock:form-edit:{") and key.endswith("}")
    first = await locks.acquire(key, 300, token="user-1", kind="form-edit")
    assert first is not None and first.token == "user-1"
    again = await locks.acquire(key, FORM_EDIT_LOCK_TTL_MS, token="user-1", kind="form-edit")
    assert again is not None
    assert again.fence == first.fence
    remaining = await locks.pttl(key)
    assert remaining is not None and remaining > 300  # the lease was renewed
    before = conflicts(metrics, "form-edit")
    assert await locks.acquire(key, 5_000, token="user-2", kind="form-edit") is None
    assert conflicts(metrics, "form-edit") == before + 1
    assert await locks.holder(key) == "user-1"
    assert await locks.release(again) is True
    taken = await locks.acquire(key, 5_000, token="user-2", kind="form-edit")
    assert taken is not None and taken.fence > first.fence


async def test_every_key_has_a_ttl(
    locks: LockService, redis_client: Redis, redis_prefix: str
) -> None:
    key = new_key()
    lock = await locks.acquire(key, 5_000)
    assert lock is not None
    waiter = asyncio.create_task(locks.acquire(key, 5_000, wait_ms=2_000))
    await asyncio.sleep(0.1)
    keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}*")]
    names = {k.decode().removeprefix(redis_prefix) for k in keys}
    assert {key, fence_key(key), key + ":queue", key + ":alive"} <= names
    for k in keys:
        assert await redis_client.pttl(k) > 0, k
    fence_ttl = await redis_client.pttl(redis_prefix + fence_key(key))
    assert fence_ttl > 29 * 24 * 3600 * 1000
    await locks.release(lock)
    got = await waiter
    assert got is not None
    await locks.release(got)


async def test_fencing_refuses_a_stale_holder_after_a_newer_write(
    locks: LockService, database: Database
) -> None:
    key = PDF_LOCK_KEY.format(response_id=secrets.token_hex(6))
    stale = await locks.acquire(key, 50, kind="pdf")
    assert stale is not None
    await asyncio.sleep(0.1)  # its lease lapses under a "slow job"
    newer = await locks.acquire(key, 5_000, kind="pdf")
    assert newer is not None and newer.fence > stale.fence
    async with database.sessions() as session, session.begin():
        assert await locks.fence_allows(session, key, newer.fence) is True
    async with database.sessions() as session, session.begin():
        assert await locks.fence_allows(session, key, stale.fence) is False
    # The holder may write again with its own number.
    async with database.sessions() as session, session.begin():
        assert await locks.fence_allows(session, key, newer.fence) is True


async def test_fencing_numbers_keep_growing_after_redis_loses_its_data(
    private_redis: object, settings: object, database: Database, metrics: Metrics
) -> None:
    from healthforms.redis.client import build_redis
    from healthforms.redis.embedded import EmbeddedRedis

    assert isinstance(private_redis, EmbeddedRedis)
    redis = build_redis(settings, private_redis.url, embedded=False)  # type: ignore[arg-type]
    try:
        service = LockService(redis, database, metrics)
        key = new_key()
        first = await service.acquire(key, 5_000)
        assert first is not None
        await service.release(first)
        await redis.client.flushall()
        second = await service.acquire(key, 5_000)
        assert second is not None and second.fence > first.fence
    finally:
        await redis.close()


async def test_hold_renews_during_a_slow_job(locks: LockService, redis_client: Redis) -> None:
    key = new_key()
    stolen: list[object] = []
    worst_stall_s = 0.0

    async def rival() -> None:
        while True:
            lock = await locks.acquire(key, 5_000)
            if lock is not None:
                stolen.append(lock)
                return
            await asyncio.sleep(0.02)

    async def watchdog() -> None:
        # How late this loop and the Redis server answer: a stall longer than the
        # lease's slack (2/3 of 300 ms) is the machine, not the renewal code.
        nonlocal worst_stall_s
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(0.01)
            await redis_client.ping()
            worst_stall_s = max(worst_stall_s, loop.time() - started - 0.01)

    monitor = asyncio.create_task(watchdog())
    try:
        async with locks.hold(key, 300) as lock:
            contender = asyncio.create_task(rival())
            await asyncio.sleep(1.0)  # more than three leases
            still_held = await locks.holder(key) == lock.token
    finally:
        monitor.cancel()
    if not still_held and worst_stall_s > 0.15:
        pytest.skip(f"machine stalled {worst_stall_s:.2f}s, longer than the lease slack")
    assert still_held
    assert not stolen
    # Released on exit: the rival gets it.
    await asyncio.wait_for(contender, 2.0)
    assert len(stolen) == 1


async def test_hold_releases_on_exception(locks: LockService) -> None:
    key = new_key()
    with pytest.raises(RuntimeError, match="job failed"):
        async with locks.hold(key, 5_000):
            assert await locks.holder(key) is not None
            raise RuntimeError("job failed")
    assert await locks.holder(key) is None


async def test_hold_releases_and_stops_renewing_on_cancellation(locks: LockService) -> None:
    key = new_key()
    entered = asyncio.Event()

    async def job() -> None:
        async with locks.hold(key, 300):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(job())
    async with asyncio.timeout(10):
        await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await locks.holder(key) is None
    # No renewal task outlives the body: a new holder keeps its short lease.
    lock = await locks.acquire(key, 5_000)
    assert lock is not None
    await asyncio.sleep(0.3)
    assert await locks.holder(key) == lock.token
    lingering = [t for t in asyncio.all_tasks() if t.get_name().startswith("lock-renew:")]
    assert lingering == []


async def test_second_pdf_generation_gets_lock_busy_while_one_runs(
    locks: LockService, metrics: Metrics
) -> None:
    key = PDF_LOCK_KEY.format(response_id=secrets.token_hex(6))
    started = asyncio.Event()
    generated: list[int] = []

    async def generate_pdf() -> None:
        async with locks.hold(key, PDF_LOCK_TTL_MS, kind="pdf") as lock:
            started.set()
            await asyncio.sleep(0.3)  # stand-in for rendering
            generated.append(lock.fence)

    first = asyncio.create_task(generate_pdf())
    async with asyncio.timeout(10):
        await started.wait()
    holder = await locks.holder(key)
    with pytest.raises(LockBusy) as busy:
        async with locks.hold(key, PDF_LOCK_TTL_MS, kind="pdf"):
            generated.append(-1)
    assert busy.value.holder == holder is not None
    assert conflicts(metrics, "pdf") == 1
    await first
    assert len(generated) == 1 and generated[0] > 0
    # Finished: a later request may take the lock again.
    async with locks.hold(key, PDF_LOCK_TTL_MS, kind="pdf"):
        pass


async def test_waiters_are_served_fairly_under_contention(locks: LockService) -> None:
    key = new_key()
    tasks = 8
    rounds_each = 5
    order: list[int] = []
    waited_grants: list[int] = []
    holding: list[int] = []

    async def worker(index: int) -> None:
        for _ in range(rounds_each):
            asked_at = len(order)
            lock = await locks.acquire(key, 5_000, wait_ms=20_000)
            assert lock is not None, f"worker {index} starved"
            # How many grants went to others between asking and getting it.
            waited_grants.append(len(order) - asked_at)
            holding.append(index)
            assert len(holding) == 1, "two holders at once"
            order.append(index)
            await asyncio.sleep(0.002)
            holding.remove(index)
            assert await locks.release(lock)
            # Straight back in line: a greedy loop like this starves others on an
            # unfair lock, since the releaser is always first to ask again.

    await asyncio.gather(*(worker(i) for i in range(tasks)))
    assert Counter(order) == dict.fromkeys(range(tasks), rounds_each)
    # FIFO: at most everyone else once ahead (plus slack for requests in flight).
    assert max(waited_grants) <= 2 * tasks, waited_grants
    # The releaser never takes the lock twice in a row while others wait.
    repeats = sum(1 for a, b in zip(order, order[1:], strict=False) if a == b)
    assert repeats == 0, order


async def test_waiter_gives_up_after_wait_and_leaves_the_queue(
    locks: LockService, redis_client: Redis, redis_prefix: str
) -> None:
    key = new_key()
    lock = await locks.acquire(key, 5_000)
    assert lock is not None
    assert await locks.acquire(key, 5_000, wait_ms=100) is None
    assert await redis_client.zcard(redis_prefix + key + ":queue") == 0
    await locks.release(lock)
    # Nobody waits: a plain acquire takes the free lock at once.
    assert await locks.acquire(key, 5_000) is not None


async def test_app_registers_the_lock_service(app: FastAPI, client: httpx.AsyncClient) -> None:
    service = app.state.hf.locks
    assert isinstance(service, LockService)
    lock = await service.acquire(new_key(), 1_000)
    assert lock is not None
    assert await service.release(lock) is True


async def test_lock_service_dependency_resolves(app: FastAPI) -> None:
    router = APIRouter()

    @router.get("/_test/locks")
    async def probe(state: StateDep) -> dict[str, bool]:
        return {"same": state.locks is app.state.hf.locks}

    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/_test/locks")
    assert response.json() == {"same": True}


async def test_an_exhausted_pool_refuses_instead_of_falling_back(
    redis_url: str, redis_prefix: str, redis_client: Redis, database: Database, metrics: Metrics
) -> None:
    # Redis may hold the lock while no connection is free: the database must not decide.
    pool = build_pool(redis_url, max_connections=1, pool_wait_s=0.05)
    redis = RedisService(pool, RedisTarget(redis_url, False, False), prefix=redis_prefix)
    service = LockService(redis, database, metrics)
    key = new_key()
    try:
        holder = await service.acquire(key, 5_000)
        assert holder is not None

        # The only pooled connection sits in a blocking call for a while, and the scripts'
        # pipelined connection has no room for another command.
        async def block() -> None:
            await redis.client.blpop([redis_prefix + "idle"], timeout=0.3)

        blocker = asyncio.create_task(block())
        await asyncio.sleep(0.05)
        redis.mux.max_in_flight = 0
        with pytest.raises(LockUnavailable):
            await service.acquire(key, 5_000)
        with pytest.raises(LockUnavailable):
            await service.renew(holder)
        redis.mux.max_in_flight = 5000
        with pytest.raises(LockUnavailable):
            await service.holder(key)
        await blocker
        assert (
            metrics.registry.get_sample_value(
                "healthforms_degraded_decisions_total", {"feature": "locks", "decision": "acquired"}
            )
            is None
        )
        assert await service.holder(key) == holder.token
        assert await service.release(holder) is True
    finally:
        await redis.close()


async def test_shared_queue_is_fair_between_instances(
    redis_url: str, redis_prefix: str, redis_client: Redis, database: Database
) -> None:
    # Separate services (as separate processes would be): only the Redis queue orders them.
    services: list[tuple[RedisService, LockService]] = []
    for _ in range(5):
        redis = RedisService(
            build_pool(redis_url), RedisTarget(redis_url, False, False), prefix=redis_prefix
        )
        services.append((redis, LockService(redis, database, Metrics())))
    key = new_key()
    order: list[int] = []
    waited: list[int] = []
    rounds_each = 4
    try:

        async def worker(index: int, service: LockService) -> None:
            for _ in range(rounds_each):
                asked_at = len(order)
                lock = await service.acquire(key, 5_000, wait_ms=20_000)
                assert lock is not None, f"instance {index} starved"
                waited.append(len(order) - asked_at)
                order.append(index)
                await asyncio.sleep(0.005)
                assert await service.release(lock)

        await asyncio.gather(*(worker(i, s) for i, (_, s) in enumerate(services)))
    finally:
        for redis, _ in services:
            await redis.close()
    assert Counter(order) == dict.fromkeys(range(len(services)), rounds_each)
    assert max(waited) <= 2 * len(services), (waited, order)


async def test_a_waiter_that_vanished_does_not_block_the_queue(
    locks: LockService, redis_service: RedisService
) -> None:
    key = new_key()
    holder = await locks.acquire(key, 5_000)
    assert holder is not None
    # A waiter joins the queue once and is never heard of again (its process died).
    keys = [
        redis_service.key(key),
        redis_service.key(fence_key(key)),
        redis_service.key(key) + ":queue",
        redis_service.key(key) + ":alive",
    ]
    reply = await ACQUIRE_SCRIPT(
        redis_service.client, keys=keys, args=["ghost", 5_000, 60_000, 1, WAITER_LEASE_MS]
    )
    assert int(reply[0]) == 0
    assert await locks.release(holder)
    # While its place is still live, the free lock is kept for it...
    assert await locks.acquire(key, 5_000) is None
    # ...and once its waiter lease ran out (nobody polls for it), the next caller gets it.
    lock = await locks.acquire(key, 5_000, wait_ms=WAITER_LEASE_MS * 3)
    assert lock is not None
