"""A session that ended stays ended: while Redis is down, and after an outage that
swallowed the Redis side of the end (issue 12, items 1 and 2).

Real servers only: a private Redis of the leg's kind that is killed or frozen (SIGSTOP),
and the leg's database. With the default HEALTHFORMS_SESSION_FALLBACK=allow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.app import create_app
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.security.principal import Role
from healthforms.security.sessions import (
    SessionCookie,
    Standings,
    UserStanding,
    hash_session_id,
)
from tests.security.conftest import private_settings
from tests.support.identity import SignedIn, create_staff, degraded_decisions, login, new_client
from tests.support.servers import hung

FORM = {"title": "Intake", "fields": [{"id": "name", "type": "text", "label": "Name"}]}


def _browser_with(app: FastAPI, signed: SignedIn) -> httpx.AsyncClient:
    """Another client holding a copy of the session cookie (what a thief would keep)."""
    http = new_client(app)
    http.cookies.set("session", signed.cookie)
    return http


async def _session_key_exists(private_redis: EmbeddedRedis, signed: SignedIn) -> bool:
    session_hash = hash_session_id(signed.cookie.split(".", 1)[0])
    async with Redis.from_url(private_redis.url) as redis:
        key = f"hf:session:{{{signed.staff.id}}}:{session_hash}"
        return bool(await redis.exists(key))


async def _wait_for_redis(http: httpx.AsyncClient, *, connected: bool) -> None:
    """Until /health says Redis is (dis)connected; fail rather than test the wrong path."""
    for _ in range(50):
        status = (await http.get("/health")).json()["redis"]["status"]
        if (status == "connected") is connected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"Redis never became {'connected' if connected else 'unavailable'}")


async def _wait_until_degraded(http: httpx.AsyncClient) -> None:
    await _wait_for_redis(http, connected=False)


async def test_a_logged_out_cookie_stays_refused_while_redis_is_down(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    staff = await create_staff(private_app)
    async with new_client(private_app) as http:
        signed = await login(http, staff)
        assert (await http.post("/api/auth/logout", headers=signed.csrf_headers)).status_code == 204
    private_redis.kill()
    async with _browser_with(private_app, signed) as thief:
        await _wait_until_degraded(thief)
        assert (await thief.get("/api/auth/me")).status_code == 401
        created = await thief.post("/api/forms", json=FORM, headers=signed.csrf_headers)
        assert created.status_code == 401, created.text


async def test_a_revoked_session_stays_refused_while_redis_is_down(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    staff = await create_staff(private_app)
    async with new_client(private_app) as phone, new_client(private_app) as desk:
        lost = await login(phone, staff)
        kept = await login(desk, staff)
        listed = (await desk.get("/api/auth/sessions")).json()["sessions"]
        (other,) = [s["id"] for s in listed if not s["current"]]
        revoked = await desk.delete(f"/api/auth/sessions/{other}", headers=kept.csrf_headers)
        assert revoked.status_code == 204
        private_redis.kill()
        await _wait_until_degraded(desk)
        assert (await desk.get("/api/auth/me")).status_code == 200  # allow: staff keep working
        async with _browser_with(private_app, lost) as thief:
            assert (await thief.get("/api/auth/me")).status_code == 401


async def test_logout_during_an_outage_stays_logged_out_when_redis_returns(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    staff = await create_staff(private_app)
    async with new_client(private_app) as http:
        signed = await login(http, staff)
        with hung(private_redis):
            await _wait_until_degraded(http)
            # Redis never hears of this logout; the database does.
            ended = await http.post("/api/auth/logout", headers=signed.csrf_headers)
            assert ended.status_code == 204
            async with _browser_with(private_app, signed) as thief:
                assert (await thief.get("/api/auth/me")).status_code == 401
    # Redis is back with the session record it had before the outage.
    assert await _session_key_exists(private_redis, signed)
    async with _browser_with(private_app, signed) as thief:
        await _wait_for_redis(thief, connected=True)
        assert (await thief.get("/api/auth/me")).status_code == 401
        created = await thief.post("/api/forms", json=FORM, headers=signed.csrf_headers)
        assert created.status_code == 401
    # ... and the end is replayed into Redis.
    assert not await _session_key_exists(private_redis, signed)


async def test_a_demotion_during_an_outage_holds_when_redis_returns(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    admin = await create_staff(private_app)
    other = await create_staff(private_app, organization=admin.organization_name)
    async with new_client(private_app) as admin_http, new_client(private_app) as other_http:
        admin_signed = await login(admin_http, admin)
        other_signed = await login(other_http, other)
        with hung(private_redis):
            await _wait_until_degraded(admin_http)
            demoted = await admin_http.patch(
                f"/api/users/{other.id}", json={"role": "viewer"}, headers=admin_signed.csrf_headers
            )
            assert demoted.status_code == 200, demoted.text
        await _wait_for_redis(other_http, connected=True)
        # The old cookie says "admin"; the database says its sessions ended.
        assert (await other_http.get("/api/auth/me")).status_code == 401
        made = await other_http.post(
            "/api/users",
            json={"email": "new@clinic.example", "name": "N", "password": "a long passphrase"},
            headers=other_signed.csrf_headers,
        )
        assert made.status_code == 401, made.text
        assert (await admin_http.get("/api/auth/me")).status_code == 200


@pytest.fixture
async def idle_2s_app(
    database_url: str, private_redis: EmbeddedRedis, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    """An app whose sessions log off after 2 s without activity."""
    settings = private_settings(database_url, private_redis, tmp_path, session_idle_timeout=2)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def test_the_idle_timeout_holds_while_redis_is_down(
    idle_2s_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    staff = await create_staff(idle_2s_app)
    async with new_client(idle_2s_app) as idle, new_client(idle_2s_app) as busy:
        await login(idle, staff)
        await login(busy, staff)
        assert (await idle.get("/api/auth/me")).status_code == 200
        private_redis.kill()
        await _wait_until_degraded(busy)
        # The busy one keeps working on the last-seen time its cookie proves ...
        for _ in range(8):
            assert (await busy.get("/api/auth/me")).status_code == 200
            await asyncio.sleep(0.35)
        # ... the idle one is signed off after 2 s, as it would be with Redis up.
        assert (await idle.get("/api/auth/me")).status_code == 401


async def test_a_forged_last_seen_cookie_buys_no_time(
    idle_2s_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    staff = await create_staff(idle_2s_app)
    async with new_client(idle_2s_app) as http:
        await login(http, staff)
        assert (await http.get("/api/auth/me")).status_code == 200
        seen = http.cookies.get("session-seen")
        assert seen is not None  # set by the session layer
        private_redis.kill()
        await _wait_until_degraded(http)
        await asyncio.sleep(2.1)
        stamp, mac = seen.split(".", 1)
        http.cookies.set("session-seen", f"{int(stamp) + 60_000}.{mac}")
        assert (await http.get("/api/auth/me")).status_code == 401


async def test_an_overloaded_redis_is_refused_with_503_not_judged_from_the_cookie(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    staff = await create_staff(private_app)
    async with new_client(private_app) as http:
        signed = await login(http, staff)
        mux = private_app.state.hf.redis.mux
        limit = mux.max_in_flight
        # More commands in flight than the pipelined connection takes: PoolExhausted.
        mux.max_in_flight = 0
        try:
            refused = await http.get("/api/auth/me")
            posted = await http.post("/api/forms", json=FORM, headers=signed.csrf_headers)
        finally:
            mux.max_in_flight = limit
        for response in (refused, posted):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert response.json()["code"] == "unavailable"
        assert await degraded_decisions(http, "session", "overloaded") == 2
        assert await degraded_decisions(http, "session", "allow") == 0
        assert (await http.get("/api/auth/me")).status_code == 200


def _cookie(user_id: str = "usr_1") -> SessionCookie:
    return SessionCookie(
        session_id="s" * 43,
        user_id=user_id,
        issued_ms=1_800_000_000_000,
        organization_id="org_1",
        role=Role.EDITOR,
        auth_method="password",
        mfa=False,
    )


async def test_one_database_read_serves_every_concurrent_request() -> None:
    reads = 0
    answer = asyncio.Event()

    async def lookup(user_id: str) -> UserStanding | None:
        nonlocal reads
        reads += 1
        await answer.wait()
        return UserStanding(disabled=False, sessions_valid_after_ms=None)

    standings = Standings(lookup, ttl_s=60)
    waiting = [
        asyncio.create_task(standings.accepts(_cookie(), when_unknown=False)) for _ in range(50)
    ]
    await asyncio.sleep(0.05)
    answer.set()
    assert await asyncio.gather(*waiting) == [True] * 50
    assert reads == 1


async def test_a_read_that_began_before_an_end_is_not_kept() -> None:
    answer = asyncio.Event()
    revoked = False

    async def lookup(user_id: str) -> UserStanding | None:
        seen_then = revoked
        await answer.wait()
        return UserStanding(
            disabled=False,
            sessions_valid_after_ms=None,
            revoked=frozenset({_cookie().session_hash}) if seen_then else frozenset(),
        )

    standings = Standings(lookup, ttl_s=60)
    early = asyncio.create_task(standings.accepts(_cookie(), when_unknown=False))
    await asyncio.sleep(0.01)
    revoked = True  # the session ends while that read is under way ...
    standings.forget("usr_1")
    answer.set()
    assert await early is True  # (that request began before the end)
    # ... and the next request does not trust the older answer.
    assert standings.cached("usr_1") == (False, None)
    assert await standings.accepts(_cookie(), when_unknown=False) is False
