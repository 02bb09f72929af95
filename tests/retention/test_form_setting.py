"""A form's `retentionDays` (docs/retention.md): in the Form JSON, validated as the
contract's 422, changed by admins only, and every change audited with the old value."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.db.engine import Database
from healthforms.security.principal import Role
from tests.support.response_factory import PublishedForm
from tests.support.response_fixtures import StaffFactory


async def create(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    reply = await http.post("/api/forms", json={"title": "Intake", **body})
    assert reply.status_code == 201, reply.text
    form: dict[str, Any] = reply.json()
    return form


async def events(db: Database, form_id: str) -> list[tuple[str, dict[str, Any] | None]]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(AuditEventRow.action, AuditEventRow.detail)
            .where(AuditEventRow.resource_id == form_id)
            .order_by(AuditEventRow.id)
        )
        return [(action, json.loads(detail) if detail else None) for action, detail in rows]


async def test_a_form_keeps_responses_for_ever_unless_given_a_period(
    admin: httpx.AsyncClient,
) -> None:
    plain = await create(admin)
    assert plain["retentionDays"] is None
    kept = await create(admin, retentionDays=2190)
    assert kept["retentionDays"] == 2190
    assert (await admin.get(f"/api/forms/{kept['id']}")).json()["retentionDays"] == 2190
    listed = {f["id"]: f for f in (await admin.get("/api/forms")).json()["forms"]}
    assert listed[kept["id"]]["retentionDays"] == 2190
    assert listed[plain["id"]]["retentionDays"] is None


@pytest.mark.parametrize("value", [0, -1, 36_501, "30", 30.5, 30.0, True, [30], {"days": 30}])
async def test_a_period_that_is_not_whole_days_in_range_is_a_422(
    admin: httpx.AsyncClient, value: object
) -> None:
    form = await create(admin)
    for reply in (
        await admin.post("/api/forms", json={"title": "Intake", "retentionDays": value}),
        await admin.put(f"/api/forms/{form['id']}", json={"retentionDays": value}),
    ):
        assert reply.status_code == 422, reply.text
        body = reply.json()
        assert body["code"] == "validation_error"
        assert set(body["fields"]) == {"retentionDays"}
    assert (await admin.get(f"/api/forms/{form['id']}")).json()["retentionDays"] is None


@pytest.mark.parametrize("days", [1, 36_500])
async def test_the_bounds_themselves_are_accepted(admin: httpx.AsyncClient, days: int) -> None:
    assert (await create(admin, retentionDays=days))["retentionDays"] == days


async def test_a_save_sets_clears_or_leaves_the_period(admin: httpx.AsyncClient) -> None:
    form = await create(admin)
    path = f"/api/forms/{form['id']}"
    set_reply = await admin.put(path, json={"retentionDays": 365})
    assert set_reply.status_code == 200 and set_reply.json()["retentionDays"] == 365
    # A save that does not name it leaves it.
    kept = await admin.put(path, json={"title": "Intake, renamed"})
    assert kept.status_code == 200 and kept.json()["retentionDays"] == 365
    # null: keep for ever again.
    cleared = await admin.put(path, json={"retentionDays": None})
    assert cleared.status_code == 200 and cleared.json()["retentionDays"] is None
    assert cleared.json()["revision"] == form["revision"] + 3


async def test_only_an_admin_changes_the_period(
    staff: StaffFactory, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    form = await create(admin, retentionDays=2190)
    path = f"/api/forms/{form['id']}"
    async with staff(clinic.organization_id, Role.EDITOR) as editor:
        refused = await editor.post("/api/forms", json={"title": "Mine", "retentionDays": 1})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        for value in (1, None):
            reply = await editor.put(path, json={"retentionDays": value})
            assert reply.status_code == 403 and reply.json()["code"] == "forbidden"
        # An editor's save that leaves it (absent, or sent unchanged) goes through.
        assert (await editor.put(path, json={"title": "Edited"})).status_code == 200
        same = await editor.put(path, json={"description": "x", "retentionDays": 2190})
        assert same.status_code == 200 and same.json()["retentionDays"] == 2190
        assert (await editor.post("/api/forms", json={"title": "Plain"})).status_code == 201
    async with staff(clinic.organization_id, Role.VIEWER) as viewer:
        reply = await viewer.put(path, json={"retentionDays": 30})
        assert reply.status_code == 403
    assert (await admin.get(path)).json()["retentionDays"] == 2190


async def test_setting_and_changing_the_period_is_audited_with_both_values(
    admin: httpx.AsyncClient, db: Database
) -> None:
    form = await create(admin, retentionDays=3650)
    path = f"/api/forms/{form['id']}"
    assert (await admin.put(path, json={"retentionDays": 2190})).status_code == 200
    assert (await admin.put(path, json={"title": "Renamed"})).status_code == 200
    assert (await admin.put(path, json={"retentionDays": 2190})).status_code == 200
    assert (await admin.put(path, json={"retentionDays": None})).status_code == 200
    assert await events(db, form["id"]) == [
        ("form.created", {"retentionDays": 3650}),
        ("form.updated", {"retentionDays": 2190, "previousRetentionDays": 3650}),
        ("form.updated", None),
        ("form.updated", None),
        ("form.updated", {"retentionDays": None, "previousRetentionDays": 2190}),
    ]
