"""The authenticated hot path: one Redis round trip, memory per session, degraded mode."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.app import create_app
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.security.sessions import hash_session_id
from tests.security.conftest import private_settings
from tests.support.identity import SignedIn, create_staff, degraded_decisions, login, new_client

# Commands a Lua script runs for itself show up in commandstats too; they are not round trips.
SCRIPT_INTERNAL = {"time", "hmget", "hset", "pexpire", "get", "set", "del"}


async def _commandstats(redis: Redis) -> dict[str, int]:
    info = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


# The published-forms cache's own connection (redis/broadcast.py): subscribed once at
# start-up, then a PING a second to know it still hears, and re-opened (redis-py's
# CLIENT SETINFO handshake, then SUBSCRIBE) when a loaded machine kept its PING reply
# late (a CI run once saw it inside the window). Not any request's commands: a request
# that opened a connection would show its own command beside the handshake. The outbox
# worker's blocking read and reclaim (outbox/worker.py), where it runs, are background too.
BACKGROUND = ("subscribe", "ping", "client|setinfo", "xreadgroup", "xautoclaim")


async def _count_round_trips(redis: Redis, request: Any) -> tuple[httpx.Response, dict[str, int]]:
    await redis.config_resetstat()
    response = await request()
    stats = await _commandstats(redis)
    for name in ("config|resetstat", "config", *BACKGROUND):
        stats.pop(name, None)
    return response, stats


async def test_an_authenticated_get_is_one_redis_round_trip(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    staff = await create_staff(private_app)
    async with new_client(private_app) as http, Redis.from_url(private_redis.url) as redis:
        await login(http, staff)
        await http.get("/api/auth/me")  # the script is loaded (first EVALSHA may NOSCRIPT)
        response, stats = await _count_round_trips(redis, lambda: http.get("/api/auth/me"))
        assert response.status_code == 200
        client_commands = {k: v for k, v in stats.items() if k not in SCRIPT_INTERNAL}
        assert client_commands == {"evalsha": 1}, stats
        # Everything else ran inside that one script.
        assert all(v <= 2 for k, v in stats.items() if k in SCRIPT_INTERNAL), stats


async def test_an_authenticated_post_with_csrf_is_one_round_trip_before_the_handler(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    staff = await create_staff(private_app)
    async with new_client(private_app) as http, Redis.from_url(private_redis.url) as redis:
        signed = await login(http, staff)
        await http.get("/api/auth/me")
        # PATCH own name: the handler itself uses no Redis, so all we see is the hot path.
        response, stats = await _count_round_trips(
            redis,
            lambda: http.patch(
                f"/api/users/{staff.id}", json={"name": "Renamed"}, headers=signed.csrf_headers
            ),
        )
        assert response.status_code == 200, response.text
        client_commands = {k: v for k, v in stats.items() if k not in SCRIPT_INTERNAL}
        assert client_commands == {"evalsha": 1}, stats
        assert stats.get("get", 0) == 2  # the CSRF key and the rate bucket, inside the script


async def test_a_request_without_cookie_makes_no_redis_call(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    async with new_client(private_app) as http, Redis.from_url(private_redis.url) as redis:
        response, stats = await _count_round_trips(redis, lambda: http.get("/api/auth/me"))
        assert response.status_code == 401
        assert stats == {}


async def test_redis_memory_per_live_session_is_at_most_300_bytes(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    staff = await create_staff(private_app)
    async with new_client(private_app) as http, Redis.from_url(private_redis.url) as redis:
        first = await login(http, staff)
        index = f"hf:sessions:{{{staff.id}}}".encode()
        index_one = await redis.memory_usage(index, samples=0)
        signed = await login(
            http, staff, totp=None
        )  # a second session of the same user: the marginal index entry
        index_two = await redis.memory_usage(index, samples=0)
        record = await redis.memory_usage(
            f"hf:session:{{{staff.id}}}:{hash_session_id(signed.cookie.split('.')[0])}".encode(),
            samples=0,
        )
        assert record is not None and index_one is not None and index_two is not None
        key = f"hf:session:{{{staff.id}}}:{hash_session_id(first.cookie.split('.')[0])}"
        assert await redis.object("encoding", key) == b"listpack"
        assert record + (index_two - index_one) <= 300, (record, index_one, index_two)


# Degraded mode ----------------------------------------------------------------------


async def _sign_in_then_kill_redis(
    app: FastAPI, private_redis: EmbeddedRedis, http: httpx.AsyncClient
) -> SignedIn:
    staff = await create_staff(app)
    signed = await login(http, staff)
    assert (await http.get("/api/auth/me")).status_code == 200
    private_redis.kill()
    return signed


async def test_redis_down_accepts_a_signed_cookie_and_checks_csrf_by_hmac(
    private_app: FastAPI, private_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    async with new_client(private_app) as http:
        signed = await _sign_in_then_kill_redis(private_app, private_redis, http)
        response = await http.get("/api/auth/me")
        assert response.status_code == 200, response.text
        assert response.json()["user"]["id"] == signed.staff.id
        assert await degraded_decisions(http, "session", "allow") >= 1
        # A forged token is refused by its HMAC; a token minted now is checked the same way.
        forged = signed.csrf_token[:-2] + ("AA" if not signed.csrf_token.endswith("AA") else "BB")
        refused = await http.patch(
            f"/api/users/{signed.staff.id}", json={"name": "X"}, headers={"X-CSRF-Token": forged}
        )
        assert refused.status_code == 403
        offline = (await http.get("/api/auth/csrf-token")).json()["csrfToken"]
        for token in (signed.csrf_token, offline):
            ok = await http.patch(
                f"/api/users/{signed.staff.id}",
                json={"name": "Y"},
                headers={"X-CSRF-Token": token},
            )
            assert ok.status_code == 200, ok.text
        assert await degraded_decisions(http, "csrf", "allow") >= 2
        diagnostics = await http.get(
            "/api/csrf/diagnostics", headers={"X-CSRF-Token": signed.csrf_token}
        )
        assert diagnostics.json()["tokenValid"] is True
        # A cookie that was never valid is still refused without Redis.
        async with new_client(private_app) as stranger:
            stranger.cookies.set("session", signed.cookie[:-3] + "abc")
            assert (await stranger.get("/api/auth/me")).status_code == 401


async def test_redis_down_refuses_a_user_disabled_meanwhile(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    admin = await create_staff(private_app)
    victim = await create_staff(private_app, organization=admin.organization_name)
    async with new_client(private_app) as admin_http, new_client(private_app) as http:
        admin_signed = await login(admin_http, admin)
        await login(http, victim)
        private_redis.kill()
        assert (await http.get("/api/auth/me")).status_code == 200
        # Disabling while Redis is down: the database's sessions_valid_after refuses the
        # cookie once the short per-process cache (5 s) has passed.
        patched = await admin_http.patch(
            f"/api/users/{victim.id}", json={"disabled": True}, headers=admin_signed.csrf_headers
        )
        assert patched.status_code == 200
        await asyncio.sleep(5.2)
        assert (await http.get("/api/auth/me")).status_code == 401
        assert (await admin_http.get("/api/auth/me")).status_code == 200
        assert await degraded_decisions(http, "session", "deny") >= 1


async def test_redis_down_refuses_a_cookie_past_its_absolute_lifetime(
    database_url: str, private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = private_settings(database_url, private_redis, tmp_path, session_max_age=2)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with new_client(application) as http:
            signed = await _sign_in_then_kill_redis(application, private_redis, http)
            assert (await http.get("/api/auth/me")).status_code == 200
            await asyncio.sleep(2.2)
            # The browser would have dropped the cookie (Max-Age); a replayed copy is refused.
            http.cookies.clear()
            late = await http.get("/api/auth/me", headers={"Cookie": f"session={signed.cookie}"})
            assert late.status_code == 401
            assert await degraded_decisions(http, "session", "deny") >= 1


async def test_redis_down_with_fallback_deny_refuses_sessions(
    database_url: str, private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = private_settings(database_url, private_redis, tmp_path, session_fallback="deny")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with new_client(application) as http:
            await _sign_in_then_kill_redis(application, private_redis, http)
            response = await http.get("/api/auth/me")
            assert response.status_code == 401
            assert await degraded_decisions(http, "session", "deny") >= 1
            # A login cannot create a session Redis never saw.
            login_attempt = await http.post(
                "/api/auth/session-login", json={"email": "a@b.test", "password": "whatever1"}
            )
            assert login_attempt.status_code == 503


async def test_redis_down_limits_the_api_bucket_per_process(
    database_url: str, private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = private_settings(database_url, private_redis, tmp_path, rate_limit_api="2/min+1")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with new_client(application) as http:
            staff = await create_staff(application)
            await login(http, staff)
            private_redis.kill()
            statuses = [(await http.get("/api/auth/me")).status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            refused = await http.get("/api/auth/me")
            assert refused.json()["code"] == "rate_limited"
            assert int(refused.headers["retry-after"]) >= 1
