"""The retention purge job (retention/job.py): of the processes that ask for a round one
runs it, Redis away skips the round until it answers, a failed purge gives the round
back, the service runs the job on its own, and a shutdown mid-purge leaves every batch
whole."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.audit.store import verify_chains
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.metrics import Metrics
from healthforms.redis.client import RedisService, RedisTarget, build_pool, redact_url
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.retention.job import PurgeJob, RoundOutcome
from tests.conftest import make_settings
from tests.retention.helpers import (
    accept_purge_events,
    clinic_form,
    days_old,
    detail,
    left_of,
    purge_events,
    refuse_purge_events,
)
from tests.support.apps import running_app

HOUR = 3600.0
RAN, SKIPPED = RoundOutcome.RAN, RoundOutcome.SKIPPED
GONE = {"responses": set[str](), "pdfs": set[str](), "notes": set[str]()}


def redis_service(url: str, prefix: str) -> RedisService:
    """A process's Redis handle (its own pool and breaker) on `url`, under `prefix`."""
    return RedisService(
        build_pool(url, timeout_s=0.5),
        RedisTarget(url=redact_url(url), tls=False, embedded=False),
        prefix=prefix,
    )


@asynccontextmanager
async def process(
    database_url: str, redis_url: str, prefix: str, ring: KeyRing, clock: Callable[[], float]
) -> AsyncIterator[PurgeJob]:
    """The job as one process of the service holds it: its own engine and Redis pool."""
    db = Database.connect(database_url)
    redis = redis_service(redis_url, prefix)
    try:
        yield PurgeJob(db, redis, ring, Metrics(), HOUR, clock=clock)
    finally:
        await redis.close()
        await db.dispose()


async def wait_until(condition: Callable[[], object], what: str, limit_s: float = 60.0) -> None:
    """Poll until `condition()` holds; fail after `limit_s` (a bound, not a measurement)."""
    deadline = time.monotonic() + limit_s
    while not await _holds(condition):
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.05)


async def _holds(condition: Callable[[], object]) -> bool:
    value = condition()
    if asyncio.iscoroutine(value):
        value = await value
    return bool(value)


async def test_of_two_processes_asking_for_a_round_one_runs_it(
    own_db: Database,
    ring: KeyRing,
    fresh_database_url: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: Redis,
) -> None:
    form = await clinic_form(own_db, 30)
    ids = await days_old(own_db, ring, form, 31, 32, 33)
    now = [1_000 * HOUR + 5.0]  # the clocks of both processes, in round 1000

    async with (
        process(fresh_database_url, redis_url, redis_prefix, ring, lambda: now[0]) as first,
        process(fresh_database_url, redis_url, redis_prefix, ring, lambda: now[0]) as second,
    ):
        outcomes = await asyncio.gather(first.run_round(), second.run_round())
        assert sorted(outcomes) == sorted([RAN, SKIPPED])
        # Asked again within the round (a timer woken early), neither runs it again.
        assert await asyncio.gather(first.run_round(), second.run_round()) == outcomes
        key = f"{redis_prefix}purge:round:3600:1000"
        ran_here = first if outcomes[0] is RAN else second
        assert await redis_client.get(key) == ran_here.token.encode()
        assert 0 < await redis_client.pttl(key) <= 2 * HOUR * 1000  # every key has a TTL

        now[0] += HOUR  # the next round: again one of them runs it
        assert sorted(await asyncio.gather(first.run_round(), second.run_round())) == sorted(
            [RAN, SKIPPED]
        )
        assert first.rounds.keys() == second.rounds.keys() == {1000, 1001}
        for number in (1000, 1001):
            assert {first.rounds[number], second.rounds[number]} == {RAN, SKIPPED}

    assert await left_of(own_db, ids) == GONE
    (event,) = await purge_events(own_db, form.form_id)
    assert detail(event)["responseIds"] == sorted(ids)


async def test_without_redis_the_round_is_skipped_until_redis_answers(
    own_db: Database,
    ring: KeyRing,
    fresh_database_url: str,
    private_redis: EmbeddedRedis,
    redis_prefix: str,
) -> None:
    form = await clinic_form(own_db, 30)
    ids = await days_old(own_db, ring, form, 31)
    async with process(
        fresh_database_url, private_redis.url, redis_prefix, ring, lambda: 7 * HOUR
    ) as job:
        private_redis.stop()
        assert await job.run_round() is RoundOutcome.REDIS_UNAVAILABLE
        assert await left_of(own_db, ids) == {k: set(ids) for k in GONE}
        assert job.retry_s == 300.0  # asked again five minutes later, within the round

        private_redis.restart()
        job.redis.start_probe()  # the service's reconnect loop closes the breaker
        await wait_until(lambda: job.redis.available, "the breaker to close")
        assert await job.run_round() is RAN
    assert await left_of(own_db, ids) == GONE


async def test_a_failed_purge_gives_the_round_back(
    own_db: Database,
    ring: KeyRing,
    fresh_database_url: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: Redis,
) -> None:
    form = await clinic_form(own_db, 30)
    ids = await days_old(own_db, ring, form, 31, 40)
    await refuse_purge_events(own_db)

    def clock() -> float:
        return 42 * HOUR

    async with (
        process(fresh_database_url, redis_url, redis_prefix, ring, clock) as first,
        process(fresh_database_url, redis_url, redis_prefix, ring, clock) as second,
    ):
        assert await first.run_round() is RoundOutcome.FAILED
        assert await redis_client.get(f"{redis_prefix}purge:round:3600:42") is None
        assert await left_of(own_db, ids) == {k: set(ids) for k in GONE}

        await accept_purge_events(own_db)
        # Any process may take the round again: here the other one.
        assert await second.run_round() is RAN
        assert await first.run_round() is SKIPPED
    assert await left_of(own_db, ids) == GONE
    assert len(await purge_events(own_db, form.form_id)) == 1


def job_of(app: FastAPI) -> PurgeJob:
    job = app.state.purge_job
    assert isinstance(job, PurgeJob)
    return job


async def test_the_service_runs_the_job_and_one_of_two_instances_purges_each_round(
    own_db: Database,
    ring: KeyRing,
    fresh_database_url: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: Redis,
    tmp_path: Path,
) -> None:
    form = await clinic_form(own_db, 30)
    ids = await days_old(own_db, ring, form, *(31 + i for i in range(12)))
    settings = make_settings(
        database_url=fresh_database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        purge_interval_s=0.5,
    )
    async with running_app(settings) as one, running_app(settings) as two:
        jobs = (job_of(one), job_of(two))

        def shared_rounds() -> set[int]:
            return set(jobs[0].rounds) & set(jobs[1].rounds)

        await wait_until(lambda: len(shared_rounds()) >= 3, "three rounds both decided")
    for job in jobs:
        assert not job.running  # stopped with its app
    decided = [sorted(job.rounds[number] for job in jobs) for number in shared_rounds()]
    # Never both: one ran each round, the other skipped it (a round that Redis did not
    # answer in time under load is asked for again, and still run at most once).
    assert all(outcomes.count(RAN) <= 1 for outcomes in decided), decided
    assert sorted([RAN, SKIPPED]) in decided
    assert await left_of(own_db, ids) == GONE
    named = [i for e in await purge_events(own_db, form.form_id) for i in detail(e)["responseIds"]]
    assert sorted(named) == sorted(ids)


async def test_shutdown_mid_purge_leaves_every_batch_whole(
    own_db: Database,
    ring: KeyRing,
    fresh_database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """The job stops between batches: whatever was deleted is named by an event, and
    whatever an event names was deleted, however far the purge got."""
    form = await clinic_form(own_db, 30)
    ids = await days_old(own_db, ring, form, *(31 + i % 50 for i in range(150)))
    db = Database.connect(fresh_database_url)
    redis = redis_service(redis_url, redis_prefix)
    job = PurgeJob(db, redis, ring, Metrics(), 0.2, batch=1)
    try:
        job.start()
        await wait_until(lambda: purge_events(own_db, form.form_id), "the first batch", limit_s=60)
        await job.stop()
        assert not job.running
    finally:
        await redis.close()
        await db.dispose()
    left = await left_of(own_db, ids)
    named = [i for e in await purge_events(own_db, form.form_id) for i in detail(e)["responseIds"]]
    assert len(named) == len(set(named))
    assert set(named) == set(ids) - left["responses"]
    assert left["pdfs"] == left["notes"] == left["responses"]
    assert (await verify_chains(own_db, ring)).intact


async def test_an_interval_of_zero_leaves_the_job_off(
    fresh_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=fresh_database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        purge_interval_s=0,
    )
    async with running_app(settings) as app:
        assert not job_of(app).running
        assert job_of(app).rounds == {}
