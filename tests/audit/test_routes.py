"""GET /api/audit over HTTP with real sign-ins: admin only, own organisation, filters."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.audit.events import AuditEvent, Outcome
from healthforms.audit.store import append_event
from healthforms.security.principal import Role
from tests.support.apps import asgi_client, running_app
from tests.support.identity import Staff, create_staff, identity_settings, login, new_client

EVENT_KEYS = {
    "id",
    "at",
    "actorId",
    "action",
    "resourceType",
    "resourceId",
    "outcome",
    "ip",
    "userAgent",
    "requestId",
}


@pytest.fixture
async def audit_app(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> AsyncIterator[FastAPI]:
    settings = identity_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
    )
    async with running_app(settings) as app:
        yield app


@pytest.fixture
async def admin(audit_app: FastAPI) -> Staff:
    return await create_staff(audit_app, role=Role.ADMIN)


@pytest.fixture
async def http(audit_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(audit_app) as client:
        yield client


async def record(app: FastAPI, org: str, action: str, **kwargs: object) -> None:
    await append_event(
        app.state.hf.db,
        app.state.hf.keys,
        AuditEvent(action=action, organization_id=org, **kwargs),  # type: ignore[arg-type]
    )


async def test_admin_reads_own_organisation_newest_first(
    audit_app: FastAPI, admin: Staff, http: httpx.AsyncClient
) -> None:
    other = await create_staff(audit_app, role=Role.ADMIN)
    for i in range(3):
        await record(audit_app, admin.organization_id, "form.created", resource_id=f"frm_{i}")
    await record(audit_app, other.organization_id, "form.created", resource_id="frm_other")
    await login(http, admin)
    response = await http.get("/api/audit", headers={"X-Request-ID": "audit-read-0001"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    events = response.json()["events"]
    assert events
    for item in events:
        assert set(item) == EVENT_KEYS
        assert isinstance(item["id"], str)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item["at"])  # RFC 3339 UTC
    ids = [int(item["id"]) for item in events]
    assert ids == sorted(ids, reverse=True)
    resources = [item["resourceId"] for item in events]
    assert "frm_other" not in resources
    assert {"frm_0", "frm_1", "frm_2"} <= set(resources)
    login_events = [item for item in events if item["action"] == "auth.login"]
    assert login_events and login_events[0]["actorId"] == admin.id
    assert login_events[0]["ip"] == "203.0.113.10"


async def test_filters_and_limit(audit_app: FastAPI, admin: Staff, http: httpx.AsyncClient) -> None:
    org = admin.organization_id
    await record(audit_app, org, "response.viewed", actor_id="usr_a", resource_id="rsp_1")
    await record(audit_app, org, "response.viewed", actor_id="usr_b", resource_id="rsp_2")
    await record(audit_app, org, "pdf.served", actor_id="usr_a", resource_id="rsp_1")
    await login(http, admin)

    viewed = (await http.get("/api/audit", params={"action": "response.viewed"})).json()["events"]
    assert [e["resourceId"] for e in viewed] == ["rsp_2", "rsp_1"]
    by_a = (await http.get("/api/audit", params={"actorId": "usr_a"})).json()["events"]
    assert [e["action"] for e in by_a] == ["pdf.served", "response.viewed"]
    both = await http.get("/api/audit", params={"actorId": "usr_a", "action": "pdf.served"})
    assert [e["resourceId"] for e in both.json()["events"]] == ["rsp_1"]
    one = (await http.get("/api/audit", params={"limit": 1})).json()["events"]
    assert len(one) == 1
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (await http.get("/api/audit", params={"since": future})).json()["events"] == []
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    recent = (await http.get("/api/audit", params={"since": past})).json()["events"]
    assert len(recent) >= 4


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-25T10:00:00"}, "since"),
    ],
)
async def test_bad_parameters_are_422(
    admin: Staff, http: httpx.AsyncClient, params: dict[str, object], field: str
) -> None:
    await login(http, admin)
    response = await http.get("/api/audit", params=params)  # type: ignore[arg-type]
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error" and field in body["fields"]


async def test_limit_of_500_is_accepted(admin: Staff, http: httpx.AsyncClient) -> None:
    await login(http, admin)
    assert (await http.get("/api/audit", params={"limit": 500})).status_code == 200


@pytest.mark.parametrize("role", [Role.EDITOR, Role.VIEWER])
async def test_non_admins_are_forbidden(audit_app: FastAPI, role: Role) -> None:
    staff = await create_staff(audit_app, role=role)
    async with new_client(audit_app) as client:
        await login(client, staff)
        response = await client.get("/api/audit")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


async def test_signed_out_is_401(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/audit")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


async def test_events_carry_outcome_and_request_id(
    audit_app: FastAPI, admin: Staff, http: httpx.AsyncClient
) -> None:
    await record(
        audit_app,
        admin.organization_id,
        "csrf.rejected",
        outcome=Outcome.DENIED,
        request_id="req-abcdef123",
        ip="198.51.100.7",
        user_agent="Browser/1",
    )
    await login(http, admin)
    events = (await http.get("/api/audit", params={"action": "csrf.rejected"})).json()["events"]
    assert events[0]["outcome"] == "denied"
    assert events[0]["requestId"] == "req-abcdef123"
    assert events[0]["ip"] == "198.51.100.7" and events[0]["userAgent"] == "Browser/1"
