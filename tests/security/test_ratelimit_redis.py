"""The limiter against a real Redis: GCRA semantics, TTLs, SCRIPT FLUSH, Redis down and back."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from fractions import Fraction

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from healthforms.config import RateSpec
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.security.ratelimit import (
    RATELIMIT_SCRIPT,
    LocalBuckets,
    RateLimiter,
    emission_us,
    script_args,
)
from tests.security.conftest import AppFactory


def _limiter(app: FastAPI) -> RateLimiter:
    limiter: RateLimiter = app.state.hf.limiter
    return limiter


async def test_burst_then_refusal_with_the_wait_for_one_token(app_factory: AppFactory) -> None:
    async with app_factory() as app:
        limiter = _limiter(app)
        verdicts = [await limiter.check_one("auth", "198.51.100.1") for _ in range(8)]
    assert [v.allowed for v in verdicts] == [True] * 7 + [False]
    assert [v.decisions[0].remaining for v in verdicts] == [6, 5, 4, 3, 2, 1, 0, 0]
    refused = verdicts[7].decisions[0]
    assert 11_000 < refused.retry_after_ms <= 12_000
    assert refused.retry_after_s == 12
    assert not any(v.degraded for v in verdicts)


async def test_bucket_key_lives_until_the_bucket_is_full_again(
    app_factory: AppFactory, redis_client: Redis, redis_prefix: str
) -> None:
    async with app_factory() as app:
        limiter = _limiter(app)
        for _ in range(3):
            await limiter.check_one("auth", "198.51.100.2")
    key = f"{redis_prefix}ratelimit:{{198.51.100.2}}:auth"
    ttl_ms = await redis_client.pttl(key)
    # Three tokens of 12 s each are missing: full again in 36 s.
    assert 34_000 < ttl_ms <= 36_000


async def test_bucket_refills_at_the_policy_rate(app_factory: AppFactory) -> None:
    async with app_factory(rate_limit_auth="5/s+2") as app:
        limiter = _limiter(app)
        taken = await asyncio.gather(*(limiter.check_one("auth", "198.51.100.3") for _ in range(8)))
        assert sorted(v.allowed for v in taken) == [False] + [True] * 7
        refusal = next(v for v in taken if not v.allowed)
        assert 0 < refusal.decisions[0].retry_after_ms <= 200
        await asyncio.sleep(0.45)  # 2.25 tokens come back at 5/s
        # Taken at once, so the refill while they run stays far below the 0.75 token
        # that a third one would need.
        after = await asyncio.gather(*(limiter.check_one("auth", "198.51.100.3") for _ in range(3)))
        assert sorted(v.allowed for v in after) == [False, True, True]


async def test_several_policies_take_all_or_nothing(app_factory: AppFactory) -> None:
    async with app_factory(rate_limit_pdf="1/min+1") as app:
        limiter = _limiter(app)
        checks = [("api", "user-1", 1), ("pdf", "user-1", 1)]
        first = [await limiter.check(checks) for _ in range(3)]
        assert [v.allowed for v in first] == [True, True, False]
        api, pdf = first[2].decisions
        # The pdf bucket refused, so the api bucket was not charged for that request.
        assert pdf.refused_here and not api.refused_here
        assert api.remaining == 108
        assert (await limiter.check_one("api", "user-1")).decisions[0].remaining == 107


async def test_a_cost_larger_than_the_bucket_is_refused(app_factory: AppFactory) -> None:
    async with app_factory() as app:
        verdict = await _limiter(app).check_one("auth", "198.51.100.4", cost=8)
    assert not verdict.allowed
    assert verdict.decisions[0].retry_after_ms == -1
    assert verdict.decisions[0].remaining == 7


async def test_script_flush_mid_run_changes_nothing(
    app_factory: AppFactory, private_redis: EmbeddedRedis
) -> None:
    async with app_factory(redis_url=private_redis.url) as app:
        limiter = _limiter(app)
        direct = Redis.from_url(private_redis.url)
        try:
            remaining = []
            for i in range(8):
                if i in (2, 5):
                    await direct.script_flush()
                verdict = await limiter.check_one("auth", "198.51.100.5")
                remaining.append((verdict.allowed, verdict.decisions[0].remaining))
        finally:
            await direct.aclose()
        assert remaining == [(True, n) for n in (6, 5, 4, 3, 2, 1, 0)] + [(False, 0)]
        assert (
            app.state.hf.metrics.degraded_decisions.labels("ratelimit", "allowed")._value.get() == 0
        )


async def test_redis_down_limits_per_process_and_shared_buckets_resume(
    app_factory: AppFactory, private_redis: EmbeddedRedis
) -> None:
    async with app_factory(redis_url=private_redis.url) as app:
        limiter = _limiter(app)
        for _ in range(3):
            assert (await limiter.check_one("auth", "198.51.100.6")).allowed
        private_redis.kill()
        down = [await limiter.check_one("auth", "198.51.100.6") for _ in range(8)]
        # The process starts its own bucket: the algorithm and limits are the same.
        assert [v.allowed for v in down] == [True] * 7 + [False]
        assert all(v.degraded for v in down)
        degraded = app.state.hf.metrics.degraded_decisions
        assert degraded.labels("ratelimit", "allowed")._value.get() == 7
        assert degraded.labels("ratelimit", "refused")._value.get() == 1
        private_redis.restart()
        redis = app.state.hf.redis
        for _ in range(100):
            if redis.available:
                break
            await asyncio.sleep(0.1)
        assert redis.available
        # A restarted (empty) Redis: the shared bucket starts again, not the local one.
        back = [await limiter.check_one("auth", "198.51.100.6") for _ in range(8)]
        assert [v.allowed for v in back] == [True] * 7 + [False]
        assert not any(v.degraded for v in back)


# The property: Lua, the local fallback and a plain token-bucket model agree ---------------


class TokenBucketModel:
    """A continuous token bucket in exact fractions: the textbook form GCRA is equivalent to."""

    def __init__(self, emission: int, capacity: int, start: int) -> None:
        self.emission = emission
        self.capacity = capacity
        self.tokens = Fraction(capacity)
        self.last = start

    def peek(self, now: int, cost: int) -> tuple[int, int, int, int, Fraction]:
        tokens = min(
            Fraction(self.capacity), self.tokens + Fraction(now - self.last, self.emission)
        )
        if cost <= self.capacity and tokens >= cost:
            after = tokens - cost
            reset_us = (self.capacity - after) * self.emission
            return 1, int(after), 0, _ceil_ms(reset_us), after
        retry = -1 if cost > self.capacity else _ceil_ms((cost - tokens) * self.emission)
        return 0, int(tokens), retry, _ceil_ms((self.capacity - tokens) * self.emission), tokens

    def commit(self, now: int, tokens: Fraction) -> None:
        self.tokens, self.last = tokens, now


def _ceil_ms(us: Fraction | int) -> int:
    return int(-(-Fraction(us) // 1000))


def _model_step(models: list[TokenBucketModel], now: int, costs: list[int]) -> list[int]:
    peeks = [m.peek(now, c) for m, c in zip(models, costs, strict=True)]
    all_allowed = all(p[0] == 1 for p in peeks)
    reply: list[int] = []
    for model, cost, (allowed, remaining, retry, reset, tokens) in zip(
        models, costs, peeks, strict=True
    ):
        if all_allowed:
            model.commit(now, tokens)
        elif allowed:
            # Had room but another bucket refused: report the untouched bucket.
            allowed, remaining, retry = 0, int(tokens + cost), 0
            reset = _ceil_ms((model.capacity - tokens - cost) * model.emission)
        reply += [allowed, remaining, retry, reset]
    return reply


# Emission intervals of 10 s and more keep every key's TTL far beyond the test's real
# duration, so only the injected clock matters.
specs = st.builds(
    RateSpec,
    rate=st.integers(1, 6),
    period_s=st.sampled_from([60.0, 3600.0]),
    burst=st.integers(0, 8),
)
arrivals = st.lists(
    st.tuples(
        st.integers(0, 40_000_000),  # microseconds since the previous request
        st.integers(1, 4),  # cost for the first policy
        st.integers(1, 3),  # cost for the second
        st.booleans(),  # whether the request also needs the second policy
    ),
    min_size=1,
    max_size=40,
)


@pytest.fixture
def loop_and_redis(redis_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Redis, str]]:
    loop = asyncio.new_event_loop()
    client = Redis.from_url(redis_url)
    prefix = f"hft:{secrets.token_hex(5)}:prop:"
    try:
        yield loop, client, prefix
    finally:

        async def cleanup() -> None:
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
            await client.aclose()

        loop.run_until_complete(cleanup())
        loop.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=specs, second=specs, steps=arrivals, start=st.integers(0, 10**12))
def test_lua_limiter_agrees_with_python_models(
    loop_and_redis: tuple[asyncio.AbstractEventLoop, Redis, str],
    first: RateSpec,
    second: RateSpec,
    steps: list[tuple[int, int, int, bool]],
    start: int,
) -> None:
    loop, client, prefix = loop_and_redis
    base = 1_700_000_000_000_000 + start  # a realistic Redis clock, in microseconds
    run = secrets.token_hex(6)
    keys = [f"{prefix}ratelimit:{{{run}}}:a", f"{prefix}ratelimit:{{{run}}}:b"]
    local = LocalBuckets()
    models = [
        TokenBucketModel(emission_us(first), first.capacity, base),
        TokenBucketModel(emission_us(second), second.capacity, base),
    ]
    now = base
    for delta, cost_a, cost_b, both in steps:
        now += delta
        n = 2 if both else 1
        argv: list[int] = script_args(first, cost_a)
        if both:
            argv += script_args(second, cost_b)
        lua = loop.run_until_complete(RATELIMIT_SCRIPT(client, keys[:n], [*argv, now]))
        requests = [(keys[i], argv[3 * i], argv[3 * i + 1], argv[3 * i + 2]) for i in range(n)]
        from_local = local.take(requests, now_us=now)
        from_model = _model_step(models[:n], now, [cost_a, cost_b][:n])
        assert list(lua) == from_local == from_model, (now - base, n, cost_a, cost_b)
