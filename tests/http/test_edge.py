"""The edge every request crosses: errors as JSON, limits, request ids, headers, logs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from healthforms.app import create_app
from healthforms.config import Settings
from healthforms.http.edge import CSP
from healthforms.redis.embedded import EmbeddedRedis
from tests.conftest import TEST_ENCRYPTION_KEY, make_settings
from tests.support import legs
from tests.support.apps import asgi_client, running_app
from tests.support.servers import start_server

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class Payload(BaseModel):
    name: str = Field(max_length=20)
    count: int = Field(ge=0)


def _test_router() -> APIRouter:
    """Routes that exist only in these tests' app instances."""
    router = APIRouter()

    @router.post("/api/test/echo")
    async def echo(payload: Payload) -> dict[str, object]:
        return {"name": payload.name, "count": payload.count}

    @router.get("/api/test/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("secret internals: /etc/passwd SELECT * FROM users")

    @router.get("/api/test/cached")
    async def cached() -> dict[str, str]:
        return {"ok": "yes"}

    return router


async def _edge_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings)
    app.include_router(_test_router())
    async with running_app(settings, app) as started, asgi_client(started) as http:
        yield http


@pytest.fixture
async def http(settings: Settings, redis_client: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _edge_app(settings):
        yield client


@pytest.fixture
async def production_http(
    settings: Settings, redis_client: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    prod = make_settings(
        database_url=settings.database_url or "",
        redis_url=settings.explicit_redis_url() or "",
        redis_prefix=settings.redis_prefix,
        data_dir=settings.data_dir,
        env="production",
    )
    async for client in _edge_app(prod):
        yield client


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    return body  # type: ignore[no-any-return]


async def test_oversized_body_with_content_length_is_413(http: httpx.AsyncClient) -> None:
    body = b'{"name": "' + b"a" * (1024 * 1024 + 10) + b'", "count": 1}'
    response = await http.post(
        "/api/test/echo", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


async def test_oversized_streamed_body_without_content_length_is_413(
    http: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(20):
            yield b"a" * 65536
        yield b'", "count": 1}'

    response = await http.post(
        "/api/test/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


async def test_body_under_the_limit_streamed_passes(http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "ok",'
        yield b' "count": 3}'

    response = await http.post(
        "/api/test/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"name": "ok", "count": 3}


async def test_malformed_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/test/echo", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "bad_request")


async def test_unknown_route_is_404(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/api/does-not-exist"), 404, "not_found")
    assert_error(await http.get("/nothing/here"), 404, "not_found")


async def test_wrong_method_is_405(http: httpx.AsyncClient) -> None:
    response = await http.delete("/health")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_schema_violation_is_422_naming_the_fields(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/test/echo", json={"name": "x" * 50, "count": -1})
    body = assert_error(response, 422, "validation_error")
    fields = body["fields"]
    assert isinstance(fields, dict)
    assert set(fields) == {"name", "count"}
    assert "x" * 50 not in response.text  # the submitted value is not echoed


async def test_missing_body_is_422(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/test/echo", json={})
    body = assert_error(response, 422, "validation_error")
    fields = body["fields"]
    assert isinstance(fields, dict) and set(fields) == {"name", "count"}


async def test_unexpected_exception_is_500_without_internals(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/test/boom")
    assert_error(response, 500, "internal_error")
    assert response.json() == {"error": "Internal server error.", "code": "internal_error"}
    assert "passwd" not in response.text and "RuntimeError" not in response.text
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    "supplied",
    ["req-12345678", "A1b2C3d4.e5:f6_g7-h8", "x" * 64],
)
async def test_a_clients_request_id_is_kept_apart_from_the_servers(
    http: httpx.AsyncClient, supplied: str
) -> None:
    """The answered X-Request-ID (what audit rows carry) is always the server's own: a
    client cannot make its requests' audit rows collide with another request's."""
    response = await http.get("/health", headers={"X-Request-ID": supplied})
    answered = response.headers["x-request-id"]
    assert answered != supplied
    assert len(answered) == 16 and all(c in "0123456789abcdef" for c in answered)


@pytest.mark.parametrize(
    "supplied",
    [
        "short",
        "x" * 65,
        "abcdefgh\r\nX-Injected: 1",
        "abcdefgh\n",
        "abcdefgh\t",
        "abc def ghi",
        "héllo-wörld-1234",
        "<script>alert(1)</script>",
    ],
)
async def test_malformed_request_id_is_replaced(http: httpx.AsyncClient, supplied: str) -> None:
    # Sent raw through ASGI so that values an HTTP client would refuse still arrive.
    response = await http.get("/health", headers=[(b"x-request-id", supplied.encode("utf-8"))])
    echoed = response.headers["x-request-id"]
    assert echoed != supplied
    assert len(echoed) == 16 and all(c in "0123456789abcdef" for c in echoed)


async def test_request_ids_are_unique_when_not_supplied(http: httpx.AsyncClient) -> None:
    ids = {(await http.get("/health")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("path", ["/health", "/metrics", "/api/test/cached", "/api/nope"])
async def test_security_headers_on_every_response(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    csp = response.headers["content-security-policy"]
    assert csp == CSP and "unsafe-inline" not in csp and "script-src 'self'" in csp
    assert response.headers["x-request-id"]
    assert "strict-transport-security" not in response.headers


async def test_hsts_only_in_production(production_http: httpx.AsyncClient) -> None:
    response = await production_http.get("/health")
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert (await production_http.get("/api/nope")).headers["strict-transport-security"]


async def test_api_responses_are_not_cached(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/test/cached")).headers["cache-control"] == "no-store"
    assert (await http.get("/api/nope")).headers["cache-control"] == "no-store"
    assert (await http.post("/api/test/echo", json={})).headers["cache-control"] == "no-store"


# Logs of a real server process -----------------------------------------------------------


@pytest.mark.multiprocess
async def test_logs_are_json_and_never_hold_bodies_cookies_or_secrets(
    tmp_path: Path, database_url: str, redis_prefix: str
) -> None:
    password = "redis-pass-" + "q" * 12
    marker_body = "BODY-MARKER-7f3a"
    marker_cookie = "COOKIE-MARKER-91bc"
    marker_auth = "AUTH-MARKER-55de"
    with EmbeddedRedis.start(
        tmp_path / "r", binary=legs.private_server_binary(), appendonly=False, password=password
    ) as redis_server:
        redis_url = f"redis://:{password}@127.0.0.1:{redis_server.port}/0"
        server = start_server(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "HEALTHFORMS_REDIS_PREFIX": redis_prefix,
                "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
                "HEALTHFORMS_DATA_DIR": str(tmp_path / "data"),
                "HEALTHFORMS_LOG_LEVEL": "info",
                # Said on purpose: without it, serve warns on stderr in plain text.
                "HEALTHFORMS_ENV": "development",
            },
            tmp_path / "logs",
        )
        try:
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                health = await http.get("/health")
                assert health.json()["status"] == "healthy"
                assert password not in health.text
                for path in ("/api/auth/session-login", "/api/whatever"):
                    await http.post(
                        path,
                        json={"email": marker_body, "password": marker_body},
                        headers={
                            "Cookie": f"session={marker_cookie}",
                            "Authorization": f"Bearer {marker_auth}",
                            "X-Request-ID": "log-test-req-0001",
                        },
                    )
                await http.get("/health", headers={"Authorization": f"Basic {marker_auth}"})
        finally:
            server.stop()
        text = server.log_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    records = []
    for line in lines:
        records.append(json.loads(line))  # every line, uvicorn's included, is JSON
    requests = [r for r in records if r.get("event") == "request"]
    assert len(requests) >= 4
    for record in requests:
        assert {"request_id", "method", "route", "status", "duration_ms"} <= set(record)
    tagged = [r for r in requests if r.get("client_request_id") == "log-test-req-0001"]
    assert all(r["request_id"] != "log-test-req-0001" for r in requests)
    assert {(r["method"], r["route"]) for r in tagged} >= {("POST", "<unmatched>")}
    assert any(r["status"] == 404 for r in tagged)
    assert any(r["route"] == "/health" and r["status"] == 200 for r in requests)
    for secret in (marker_body, marker_cookie, marker_auth, password):
        assert secret not in text


async def test_a_nul_byte_in_an_api_path_is_404_before_any_route(http: httpx.AsyncClient) -> None:
    for path in ("/api/responses/%00", "/api/forms/a%00b", "/api/public/forms/%00/files"):
        response = await http.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
