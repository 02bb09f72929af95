"""Hot routes: answered by the session layer, exactly as the FastAPI route would answer.

Each request is made twice, once with the hot route registered and once without it
(so FastAPI's route answers), and the two answers must agree: status, body, headers.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from healthforms.http import hot_routes
from tests.support.identity import SignedIn, create_staff, login

# Headers that differ between any two requests.
_VOLATILE = {"x-request-id", "ratelimit-remaining", "ratelimit-reset", "ratelimit"}


def _comparable(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in _VOLATILE}
    return response.status_code, response.json(), headers


async def _signed_in(client: httpx.AsyncClient, app: FastAPI) -> SignedIn:
    """Signed in, with the session layer's last-seen cookie already set (it is renewed
    at most every minute, so neither of the two compared answers carries it)."""
    signed = await login(client, await create_staff(app))
    assert (await client.get("/api/auth/me")).status_code == 200
    assert client.cookies.get("session-seen")
    return signed


async def _both_ways(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, path: str, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response]:
    hot = await client.get(path, **kwargs)
    with monkeypatch.context() as patched:
        patched.setattr(hot_routes.HOT_ROUTES, "_routes", {})
        framework = await client.get(path, **kwargs)
    return hot, framework


def test_the_hot_routes_are_registered() -> None:
    for path in ("/api/auth/me", "/api/auth/csrf-token", "/api/csrf/diagnostics"):
        assert hot_routes.HOT_ROUTES.get("GET", path) is not None, path
    assert hot_routes.HOT_ROUTES.get("POST", "/api/auth/me") is None


async def test_diagnostics_answer_the_same_both_ways(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = await _signed_in(client, app)
    for headers in ({}, {"X-CSRF-Token": signed.csrf_token}, {"X-CSRF-Token": "x.y.z"}):
        hot, framework = await _both_ways(
            client, monkeypatch, "/api/csrf/diagnostics", headers=headers
        )
        assert hot.status_code == 200
        hot_status, hot_body, hot_headers = _comparable(hot)
        fw_status, fw_body, fw_headers = _comparable(framework)
        # ttlSeconds may tick over a second between the two requests.
        assert abs(hot_body.pop("ttlSeconds") - fw_body.pop("ttlSeconds")) <= 1
        assert (hot_status, hot_body, hot_headers) == (fw_status, fw_body, fw_headers)


async def test_me_and_csrf_token_answer_alike_both_ways(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _signed_in(client, app)
    hot, framework = await _both_ways(client, monkeypatch, "/api/auth/me")
    assert hot.status_code == framework.status_code == 200
    assert hot.json()["user"] == framework.json()["user"]
    assert hot.json()["session"]["id"] == framework.json()["session"]["id"]
    assert _comparable(hot)[2] == _comparable(framework)[2]
    hot, framework = await _both_ways(client, monkeypatch, "/api/auth/csrf-token")
    assert hot.status_code == framework.status_code == 200
    assert set(hot.json()) == set(framework.json()) == {"csrfToken"}
    assert _comparable(hot)[2] == _comparable(framework)[2]


async def test_a_disabled_user_gets_the_routes_401_from_the_hot_path(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    await login(client, staff)
    state = app.state.hf
    from sqlalchemy import update

    from healthforms.identity.models import User

    async with state.db.sessions() as session:
        # Disabled behind the session's back (no session ended): the handler's own
        # check must still refuse, as the FastAPI route did.
        await session.execute(update(User).where(User.id == staff.id).values(disabled=True))
        await session.commit()
    refused = await client.get("/api/auth/me")
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthenticated"
    assert refused.headers["cache-control"] == "no-store"


async def test_hot_answers_are_logged_and_counted_under_their_route(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await login(client, await create_staff(app))
    for _ in range(3):
        assert (await client.get("/api/csrf/diagnostics")).status_code == 200
    metrics = (await client.get("/metrics")).text
    line = next(
        ln
        for ln in metrics.splitlines()
        if ln.startswith("healthforms_http_requests_total")
        and 'route="/api/csrf/diagnostics"' in ln
        and 'status="200"' in ln
    )
    assert float(line.split()[-1]) >= 3
