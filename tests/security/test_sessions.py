"""Redis sessions: login, cookie, expiry, logout, listing and revocation, on real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.app import create_app
from healthforms.security.sessions import hash_session_id
from tests.support.identity import (
    GENEROUS_AUTH_RATE,
    SignedIn,
    create_staff,
    identity_settings,
    login,
    new_client,
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_auth": GENEROUS_AUTH_RATE}


async def _keys(redis: Redis, prefix: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{prefix}*", count=500)]


async def test_login_sets_cookie_and_me_describes_the_session(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app, role="editor")
    signed = await login(client, staff, totp=None)
    assert signed.body["user"] == {
        "id": staff.id,
        "email": staff.email,
        "name": "Test Staff",
        "role": "editor",
        "organizationId": staff.organization_id,
    }
    assert signed.body["expiresAt"].endswith("Z")
    response = await client.get("/api/auth/me", headers={"User-Agent": "pytest"})
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["id"] == staff.id
    session = body["session"]
    assert set(session) == {"id", "createdAt", "lastSeenAt", "expiresAt", "ip", "userAgent"}
    assert session["ip"] == "203.0.113.10"
    assert session["id"] == hash_session_id(signed.cookie.split(".")[0])
    assert response.headers["ratelimit-limit"] == "110"


async def test_cookie_attributes_in_development(app: FastAPI, client: httpx.AsyncClient) -> None:
    staff = await create_staff(app)
    response = await client.post(
        "/api/auth/session-login", json={"email": staff.email, "password": staff.password}
    )
    header = response.headers["set-cookie"]
    assert header.startswith("session=")
    lowered = header.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "path=/" in lowered
    assert "secure" not in lowered


async def test_production_cookie_is_host_prefixed_and_secure(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> None:
    settings = identity_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        env="production",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        staff = await create_staff(application)
        transport = httpx.ASGITransport(app=application, client=("203.0.113.10", 1))
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            response = await http.post(
                "/api/auth/session-login", json={"email": staff.email, "password": staff.password}
            )
            assert response.status_code == 200
            header = response.headers["set-cookie"]
            assert header.startswith("__Host-session=")
            assert "secure" in header.lower()
            me = await http.get("/api/auth/me")
            assert me.status_code == 200


async def test_every_login_gets_a_new_session_id_and_a_planted_one_is_ignored(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    first = await login(client, staff)
    # Session fixation: an attacker plants a cookie (here: a real, earlier one) before the
    # victim signs in. The login must ignore it and issue a fresh id.
    planted = first.cookie
    async with new_client(app) as victim:
        victim.cookies.set("session", planted)
        second = await login(victim, staff)
        assert second.cookie != planted
        assert second.cookie.split(".")[0] != planted.split(".")[0]
    third = await login(client, staff)
    assert third.cookie.split(".")[0] != first.cookie.split(".")[0]


async def test_a_made_up_session_cookie_is_never_accepted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    signed = await login(client, staff)
    sid, user_id, issued, org, flags, _mac = signed.cookie.split(".")
    # Same shape, the attacker's own session id, but no valid HMAC.
    forged = ".".join([sid[::-1], user_id, issued, org, flags, _mac])
    async with new_client(app) as attacker:
        attacker.cookies.set("session", forged)
        assert (await attacker.get("/api/auth/me")).status_code == 401


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: "",
        lambda c: "garbage",
        lambda c: c[: len(c) // 2],
        lambda c: c[:-1],
        lambda c: c + "A",
        lambda c: c + "." + c,
        lambda c: "x" * 5000,
        lambda c: c.replace(".", "..", 1),
        lambda c: c.rsplit(".", 2)[0] + ".ep0." + c.rsplit(".", 1)[1],  # role escalation
        lambda c: "\u00e9\u00e8" * 20,
        lambda c: "%00%ff" + c,
        lambda c: '"' + c + '"x',
    ],
)
async def test_garbage_truncated_oversized_or_forged_cookies_get_401(
    app: FastAPI, client: httpx.AsyncClient, mangle: object
) -> None:
    staff = await create_staff(app)
    signed = await login(client, staff)
    value = mangle(signed.cookie)  # type: ignore[operator]
    async with new_client(app) as other:
        raw = value.encode("utf-8")
        response = await other.get("/api/auth/me", headers={"Cookie": b"session=" + raw})
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"
        post = await other.post(
            "/api/auth/logout", headers={"Cookie": b"session=" + raw, "X-CSRF-Token": "x"}
        )
        assert post.status_code in (401, 403)


async def test_without_a_cookie_me_is_401_and_no_redis_key_is_created(
    client: httpx.AsyncClient, redis_client: Redis, redis_prefix: str
) -> None:
    for path in ("/api/auth/me", "/api/auth/csrf-token", "/api/auth/sessions", "/health"):
        response = await client.get(path)
        assert response.status_code in (200, 401)
        if path.startswith("/api/"):
            assert response.json()["code"] == "unauthenticated"
    # An endpoint that needs a session is not one to guess credentials at: no auth
    # bucket either (only session-login takes the per-IP auth policy).
    assert (await client.post("/api/auth/logout")).status_code == 401
    assert await _keys(redis_client, redis_prefix) == []


async def test_session_id_never_appears_in_redis_and_every_key_has_a_ttl(
    app: FastAPI, client: httpx.AsyncClient, redis_client: Redis, redis_prefix: str
) -> None:
    staff = await create_staff(app)
    signed = await login(client, staff)
    await client.get("/api/auth/csrf-token")
    await client.get("/api/auth/me")
    await client.get("/api/auth/sessions")
    await client.post("/api/auth/session-login", json={"email": staff.email, "password": "wrong"})
    sid = signed.cookie.split(".")[0].encode()
    mac = signed.cookie.rsplit(".", 1)[1].encode()
    keys = await _keys(redis_client, redis_prefix)
    assert keys, "login wrote nothing to Redis?"
    kinds = {key[len(redis_prefix) :].split(b":", 1)[0] for key in keys}
    assert {b"session", b"sessions", b"csrf", b"csrfs", b"ratelimit", b"loginfail"} <= kinds
    for key in keys:
        assert sid not in key and mac not in key
        ttl = await redis_client.pttl(key)
        assert ttl > 0, f"{key!r} has no TTL"
        kind = await redis_client.type(key)
        blobs: list[Any]
        if kind == b"hash":
            values = list((await redis_client.hgetall(key)).items())
            blobs = [part for pair in values for part in pair]
        elif kind == b"zset":
            blobs = await redis_client.zrange(key, 0, -1)
        else:
            blobs = [await redis_client.get(key) or b""]
        for blob in blobs:
            assert sid not in blob and mac not in blob
    # And no email in Redis either (no PHI, not even the login failure counter).
    dump = b"".join(keys)
    assert staff.email.encode() not in dump


async def test_idle_timeout_ends_a_session_and_requests_keep_it_alive(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> None:
    settings = identity_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        session_idle_timeout=3,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        staff = await create_staff(application)
        async with new_client(application) as http:
            await login(http, staff)
            for _ in range(5):  # 5 x 0.8 s > 3 s idle: alive only because each request touches it
                await asyncio.sleep(0.8)
                assert (await http.get("/api/auth/me")).status_code == 200
            await asyncio.sleep(3.3)
            response = await http.get("/api/auth/me")
            assert response.status_code == 401


async def test_absolute_lifetime_ends_a_busy_session(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> None:
    settings = identity_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        session_max_age=3,
        session_idle_timeout=60,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        staff = await create_staff(application)
        async with new_client(application) as http:
            signed = await login(http, staff)
            started = asyncio.get_running_loop().time()
            http.cookies.clear()
            # Sent by hand: the client would drop the cookie itself at its Max-Age, and the
            # point is that the server refuses it even when it is replayed.
            cookie = {"Cookie": f"session={signed.cookie}"}
            first = await http.get("/api/auth/me", headers=cookie)
            assert first.status_code == 200
            assert first.json()["session"]["expiresAt"] <= signed.body["expiresAt"]
            # Busy: a request every 0.4 s keeps the idle timer far away, yet the session
            # ends at its absolute lifetime.
            while asyncio.get_running_loop().time() - started < 3.6:
                await asyncio.sleep(0.4)
                last = await http.get("/api/auth/me", headers=cookie)
            assert last.status_code == 401


async def test_logout_ends_the_session_clears_the_cookie_and_deletes_its_tokens(
    app: FastAPI, client: httpx.AsyncClient, redis_client: Redis, redis_prefix: str
) -> None:
    staff = await create_staff(app)
    signed = await login(client, staff)
    other = (await client.get("/api/auth/csrf-token")).json()["csrfToken"]
    assert len(await _keys(redis_client, f"{redis_prefix}csrf:")) == 2
    response = await client.post("/api/auth/logout", headers=signed.csrf_headers)
    assert response.status_code == 204
    assert (
        'session=""' in response.headers["set-cookie"]
        or "Max-Age=0" in response.headers["set-cookie"]
    )
    assert await _keys(redis_client, f"{redis_prefix}csrf") == []
    assert await _keys(redis_client, f"{redis_prefix}session:") == []
    # The old cookie (kept by an attacker) is dead, and so are both tokens.
    async with new_client(app) as replay:
        replay.cookies.set("session", signed.cookie)
        assert (await replay.get("/api/auth/me")).status_code == 401
        for token in (signed.csrf_token, other):
            response = await replay.post("/api/auth/logout", headers={"X-CSRF-Token": token})
            assert response.status_code in (401, 403)


async def test_logout_all_ends_every_session_of_the_user(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    bystander = await create_staff(app, organization=staff.organization_name)
    first = await login(client, staff)
    async with new_client(app) as second_browser, new_client(app) as bystander_browser:
        await login(second_browser, staff)
        await login(bystander_browser, bystander)
        response = await client.post("/api/auth/logout-all", headers=first.csrf_headers)
        assert response.status_code == 204
        assert (await second_browser.get("/api/auth/me")).status_code == 401
        assert (await bystander_browser.get("/api/auth/me")).status_code == 200
    client.cookies.set("session", first.cookie)
    assert (await client.get("/api/auth/me")).status_code == 401


async def test_sessions_list_and_revoke_own_sessions_only(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    stranger = await create_staff(app)  # another organisation
    signed = await login(client, staff)
    async with new_client(app, ip="198.51.100.7") as laptop, new_client(app) as foreign:
        await login(laptop, staff)
        await login(foreign, stranger)
        listed = (await client.get("/api/auth/sessions")).json()["sessions"]
        assert len(listed) == 2
        assert {s["ip"] for s in listed} == {"203.0.113.10", "198.51.100.7"}
        assert sum(s["current"] for s in listed) == 1
        for entry in listed:
            assert set(entry) == {"id", "createdAt", "lastSeenAt", "ip", "userAgent", "current"}
        other_id = next(s["id"] for s in listed if not s["current"])
        foreign_id = (await foreign.get("/api/auth/me")).json()["session"]["id"]

        # Another organisation's session id is not found, and stays alive.
        response = await client.delete(
            f"/api/auth/sessions/{foreign_id}", headers=signed.csrf_headers
        )
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
        assert (await foreign.get("/api/auth/me")).status_code == 200
        for bogus in ("nope", "A" * 22, "../../etc"):
            response = await client.delete(
                f"/api/auth/sessions/{bogus}", headers=signed.csrf_headers
            )
            assert response.status_code == 404

        response = await client.delete(
            f"/api/auth/sessions/{other_id}", headers=signed.csrf_headers
        )
        assert response.status_code == 204
        assert (await laptop.get("/api/auth/me")).status_code == 401
        assert len((await client.get("/api/auth/sessions")).json()["sessions"]) == 1


async def _signed_in(app: FastAPI) -> tuple[httpx.AsyncClient, SignedIn]:
    http = new_client(app)
    staff = await create_staff(app)
    return http, await login(http, staff)


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, SignedIn]]:
    http, signed = await _signed_in(app)
    async with http:
        yield http, signed


async def test_api_bucket_limits_a_user_with_429_and_retry_after(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> None:
    settings = identity_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        rate_limit_api="3/min+1",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        staff = await create_staff(application)
        async with new_client(application) as http:
            await login(http, staff)
            statuses = [(await http.get("/api/auth/me")).status_code for _ in range(6)]
            assert statuses[:4] == [200, 200, 200, 200]
            assert statuses[4:] == [429, 429]
            refused = await http.get("/api/auth/me")
            assert refused.json()["code"] == "rate_limited"
            assert 1 <= int(refused.headers["retry-after"]) <= 20
            assert refused.headers["ratelimit-remaining"] == "0"
        assert await redis_client.pttl(f"{redis_prefix}ratelimit:{{{staff.id}}}:api") > 0


async def test_a_login_loop_cannot_grow_one_users_sessions_without_bound(
    app: FastAPI, redis_client: Redis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from healthforms.security import sessions

    monkeypatch.setattr(sessions, "MAX_SESSIONS_PER_USER", 3)
    staff = await create_staff(app)
    browsers = []
    for _ in range(5):
        http = new_client(app)
        browsers.append((http, await login(http, staff)))
    try:
        assert len(await _keys(redis_client, f"{redis_prefix}session:")) == 3
        assert len(await _keys(redis_client, f"{redis_prefix}csrf:")) == 3
        assert len(await _keys(redis_client, f"{redis_prefix}csrfs:")) == 3
        statuses = [(await http.get("/api/auth/me")).status_code for http, _ in browsers]
        assert statuses == [401, 401, 200, 200, 200]  # the oldest were evicted
    finally:
        for http, _ in browsers:
            await http.aclose()
