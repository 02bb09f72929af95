"""CSRF: synchronizer tokens bound to one session, Fetch Metadata and Origin in front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from redis.asyncio import Redis
from sqlalchemy import select

from healthforms.app import create_app
from healthforms.audit.models import AuditEventRow
from healthforms.security.context import CurrentPrincipal, request_state
from healthforms.security.csrf import MAX_TOKENS_PER_SESSION
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


async def _rename(
    http: httpx.AsyncClient, signed: SignedIn, token: str | None, **headers: str
) -> httpx.Response:
    sent = dict(headers)
    if token is not None:
        sent["X-CSRF-Token"] = token
    return await http.patch(f"/api/users/{signed.staff.id}", json={"name": "New"}, headers=sent)


async def _csrf_keys(redis: Redis, prefix: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{prefix}csrf:*", count=500)]


async def test_unsafe_request_needs_the_token(app: FastAPI, client: httpx.AsyncClient) -> None:
    signed = await login(client, await create_staff(app))
    for token in (None, "", "nonsense", signed.csrf_token + "x", signed.csrf_token[:-1]):
        response = await _rename(client, signed, token)
        assert response.status_code == 403, token
        assert response.json() == {
            "error": "Security token missing or invalid.",
            "code": "csrf_invalid",
        }
    assert (await _rename(client, signed, signed.csrf_token)).status_code == 200


async def test_two_tokens_fetched_for_one_session_both_work(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    signed = await login(client, await create_staff(app))
    first = (await client.get("/api/auth/csrf-token")).json()["csrfToken"]
    second = (await client.get("/api/auth/csrf-token")).json()["csrfToken"]
    assert len({first, second, signed.csrf_token}) == 3
    # Fetching again never invalidates what another tab holds: all three still work,
    # in any order, more than once.
    for token in (first, signed.csrf_token, second, first):
        assert (await _rename(client, signed, token)).status_code == 200


async def test_a_fetch_loop_cannot_grow_redis_and_revokes_nothing(
    app: FastAPI, client: httpx.AsyncClient, redis_client: Redis, redis_prefix: str
) -> None:
    signed = await login(client, await create_staff(app))
    tokens = {signed.csrf_token}
    for _ in range(MAX_TOKENS_PER_SESSION * 3):
        tokens.add((await client.get("/api/auth/csrf-token")).json()["csrfToken"])
    keys = await _csrf_keys(redis_client, redis_prefix)
    assert len(keys) == MAX_TOKENS_PER_SESSION
    assert len(tokens) == MAX_TOKENS_PER_SESSION
    for token in tokens:
        assert (await _rename(client, signed, token)).status_code == 200


async def test_a_token_of_another_session_fails_even_for_the_same_user(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    a = await login(client, staff)
    async with new_client(app) as other_browser, new_client(app) as user_b_browser:
        b_same_user = await login(other_browser, staff)
        assert (await _rename(client, a, b_same_user.csrf_token)).status_code == 403
        assert (await _rename(other_browser, b_same_user, a.csrf_token)).status_code == 403
        user_b = await login(user_b_browser, await create_staff(app))
        assert (await _rename(user_b_browser, user_b, a.csrf_token)).status_code == 403
        assert (await _rename(client, a, user_b.csrf_token)).status_code == 403
        assert (await _rename(user_b_browser, user_b, user_b.csrf_token)).status_code == 200


async def test_cross_site_fetch_metadata_and_foreign_origin_are_refused_with_a_valid_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    signed = await login(client, await create_staff(app))
    token = signed.csrf_token
    refused = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "http://testserver:8080"},
        {"Origin": "https://testserver"},
        {"Origin": "null"},
        {"Origin": "null", "Sec-Fetch-Site": "same-site"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"},
    ]
    for headers in refused:
        response = await _rename(client, signed, token, **headers)
        assert response.status_code == 403, headers
        assert response.json()["code"] == "csrf_invalid"
    allowed = [
        {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "http://TESTSERVER:80"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "none"},
        # A plain form post from one of our pages (Referrer-Policy: no-referrer).
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        {},
    ]
    for headers in allowed:
        assert (await _rename(client, signed, token, **headers)).status_code == 200, headers


async def test_login_needs_no_token_but_is_subject_to_the_origin_check(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    body = {"email": staff.email, "password": staff.password}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = await client.post("/api/auth/session-login", json=body, headers=headers)
        assert response.status_code == 403
        assert response.json()["code"] == "csrf_invalid"
    ok = await client.post(
        "/api/auth/session-login", json=body, headers={"Origin": "http://testserver"}
    )
    assert ok.status_code == 200


async def test_public_url_is_the_service_origin_when_set(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> None:
    settings = identity_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        public_url="https://forms.clinic.example/",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with new_client(application) as http:
            signed = await login(http, await create_staff(application))
            token = signed.csrf_token
            own = await _rename(http, signed, token, Origin="https://forms.clinic.example")
            assert own.status_code == 200
            # The request's own host no longer counts once the public URL is configured.
            host = await _rename(http, signed, token, Origin="http://testserver")
            assert host.status_code == 403


async def test_html_form_posts_may_carry_the_token_in_the_body(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @app.post("/test-form")
    async def form_echo(request: Request, principal: CurrentPrincipal) -> dict[str, str]:
        form = await request.form()
        return {"user": principal.user_id, "note": str(form.get("note"))}

    signed = await login(client, await create_staff(app))
    urlencoded = await client.post(
        "/test-form", data={"csrf_token": signed.csrf_token, "note": "hello"}
    )
    assert urlencoded.status_code == 200, urlencoded.text
    assert urlencoded.json() == {"user": signed.staff.id, "note": "hello"}
    multipart = await client.post(
        "/test-form",
        data={"csrf_token": signed.csrf_token, "note": "multi"},
        files={"upload": ("a.txt", b"abc", "text/plain")},
    )
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["note"] == "multi"
    wrong = await client.post("/test-form", data={"csrf_token": "forged", "note": "x"})
    assert wrong.status_code == 403
    missing = await client.post("/test-form", data={"note": "x"})
    assert missing.status_code == 403


async def test_diagnostics_report_presence_validity_and_ttl(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    signed = await login(client, await create_staff(app))
    none = (await client.get("/api/csrf/diagnostics")).json()
    assert none == {"tokenPresent": False, "tokenValid": False, "ttlSeconds": 0}
    good = (
        await client.get("/api/csrf/diagnostics", headers={"X-CSRF-Token": signed.csrf_token})
    ).json()
    assert good["tokenPresent"] is True and good["tokenValid"] is True
    assert 4 * 3600 - 60 <= good["ttlSeconds"] <= 4 * 3600
    bad = (await client.get("/api/csrf/diagnostics", headers={"X-CSRF-Token": "x.y.z"})).json()
    assert bad == {"tokenPresent": True, "tokenValid": False, "ttlSeconds": 0}
    async with new_client(app) as other:
        other_signed = await login(other, signed.staff)
        foreign = (
            await client.get(
                "/api/csrf/diagnostics", headers={"X-CSRF-Token": other_signed.csrf_token}
            )
        ).json()
        assert foreign["tokenValid"] is False
    async with new_client(app) as anonymous:
        assert (await anonymous.get("/api/csrf/diagnostics")).status_code == 401


async def test_rejections_are_audited_without_the_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    signed = await login(client, await create_staff(app))
    assert (await _rename(client, signed, "forged-token")).status_code == 403
    async with app.state.hf.db.sessions() as session:
        rows = (
            (
                await session.execute(
                    select(AuditEventRow).where(
                        AuditEventRow.action == "csrf.rejected",
                        AuditEventRow.actor_id == signed.staff.id,
                    )
                )
            )
            .scalars()
            .all()
        )
    assert len(rows) == 1
    assert rows[0].outcome == "denied"
    assert "forged" not in (rows[0].resource_id or "")


async def test_existing_session_without_token_gets_one_on_request(
    app: FastAPI, client: httpx.AsyncClient, redis_client: Redis, redis_prefix: str
) -> None:
    signed = await login(client, await create_staff(app))
    # A session that lost its tokens (e.g. created before tokens existed).
    for key in await _csrf_keys(redis_client, redis_prefix):
        await redis_client.delete(key)
    assert (await _rename(client, signed, signed.csrf_token)).status_code == 403
    fresh = (await client.get("/api/auth/csrf-token")).json()["csrfToken"]
    assert (await _rename(client, signed, fresh)).status_code == 200


async def test_public_endpoints_ignore_a_staff_session_cookie(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @app.post("/api/public/test-echo")
    async def public_echo(request: Request) -> dict[str, bool]:
        return {"principal": request_state(request.scope).principal is not None}

    await login(client, await create_staff(app))
    # No CSRF token: a patient form posted from a signed-in staff browser still goes through.
    response = await client.post("/api/public/test-echo", json={})
    assert response.status_code == 200, response.text
    assert response.json() == {"principal": False}
