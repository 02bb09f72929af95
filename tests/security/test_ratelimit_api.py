"""The `api` policy on the session hot path (shared and per process) and the `pdf` dependency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from healthforms.app import create_app
from healthforms.http.ratelimits import PdfRateLimit
from healthforms.redis.embedded import EmbeddedRedis
from tests.support.identity import create_staff, identity_settings, login, new_client


@asynccontextmanager
async def signed_in_app(
    database_url: str, redis_url: str, redis_prefix: str, data_dir: Path, **overrides: object
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(
        identity_settings(
            database_url=database_url,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            data_dir=data_dir,
            **overrides,
        )
    )

    # A stand-in for POST /api/responses/{id}/generate-pdf, which another feature owns.
    @app.post("/api/test-pdf")
    async def generate(_: PdfRateLimit) -> dict[str, str]:
        return {"ok": "yes"}

    async with app.router.lifespan_context(app):
        staff = await create_staff(app, role="editor")
        async with new_client(app) as client:
            await login(client, staff)
            yield app, client


async def test_111_rapid_authenticated_gets_first_429_after_110(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: object
) -> None:
    async with signed_in_app(database_url, redis_url, redis_prefix, tmp_path) as (app, client):
        started = time.monotonic()
        responses = [await client.get("/api/auth/me") for _ in range(110)]
        # Then until the first refusal (bounded): at 100/min a token comes back every
        # 0.6 s, so a slow machine may earn a few more while the 110 are sent.
        for _ in range(30):
            responses.append(await client.get("/api/auth/me"))
            if responses[-1].status_code == 429:
                break
        elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    assert statuses[:110] == [200] * 110
    first_429 = statuses.index(429)
    assert 110 <= first_429 <= 110 + int(elapsed / 0.6)
    assert all(s == 200 for s in statuses[:first_429])
    assert responses[0].headers["ratelimit-limit"] == "110"
    assert responses[0].headers["ratelimit-policy"] == '"api";q=110;w=60'
    assert responses[0].headers["ratelimit-remaining"] == "109"
    refused = responses[first_429]
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["retry-after"] == "1"  # 100/min: a token every 0.6 s
    metrics = app.state.hf.metrics
    assert metrics.ratelimit_rejections.labels("api")._value.get() == 1


async def test_redis_down_the_api_policy_holds_per_process(
    database_url: str, redis_prefix: str, tmp_path: Path, private_redis: EmbeddedRedis
) -> None:
    async with signed_in_app(
        database_url, private_redis.url, redis_prefix, tmp_path, rate_limit_api="10/min+0"
    ) as (app, client):
        assert (await client.get("/api/auth/me")).status_code == 200
        private_redis.kill()
        down = [await client.get("/api/auth/me") for _ in range(11)]
        # The signed cookie carries the session; the process's own bucket for the user
        # starts full and applies the same policy.
        assert [r.status_code for r in down] == [200] * 10 + [429]
        assert down[0].headers["ratelimit-remaining"] == "9"
        degraded = app.state.hf.metrics.degraded_decisions
        assert degraded.labels("ratelimit", "allowed")._value.get() == 10
        assert degraded.labels("ratelimit", "refused")._value.get() == 1

        private_redis.restart()
        redis = app.state.hf.redis
        for _ in range(100):
            if redis.available:
                break
            await asyncio.sleep(0.1)
        # Redis restarted empty: the session is gone there, so the cookie no longer
        # authenticates; what matters here is that nothing breaks and the shared path
        # answers again (401, not a degraded 200 and not a 500).
        after = await client.get("/api/auth/me")
        assert after.status_code == 401


async def test_pdf_policy_applies_in_addition_to_api(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: object
) -> None:
    async with signed_in_app(
        database_url, redis_url, redis_prefix, tmp_path, rate_limit_pdf="1/min+1"
    ) as (app, client):
        me = await client.get("/api/auth/me")
        csrf = (await client.get("/api/auth/csrf-token")).json()["csrfToken"]
        headers = {"X-CSRF-Token": csrf}
        responses = [await client.post("/api/test-pdf", headers=headers) for _ in range(3)]
    assert me.status_code == 200
    assert [r.status_code for r in responses] == [200, 200, 429]
    first = responses[0]
    assert first.headers["ratelimit-policy"] == '"api";q=110;w=60, "pdf";q=2;w=60'
    assert first.headers["ratelimit-remaining"] == "1"  # the pdf bucket is the tighter one
    refused = responses[2]
    assert refused.json()["code"] == "rate_limited"
    assert 55 <= int(refused.headers["retry-after"]) <= 60  # one token a minute
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers.get_list("ratelimit-limit") == ["2"]  # one set of headers
