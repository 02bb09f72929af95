"""The form edit lock endpoints and PUT conflicts between two users (API.md "Forms")."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.forms.edit_lock import fenced, lock_key
from healthforms.forms.service import FormService, StaleLock
from healthforms.security.locks import LockService
from healthforms.security.principal import Principal, Role
from healthforms.state import AppState
from tests.forms.helpers import Staff, StaffDirectory, signed_in


async def new_form(http: httpx.AsyncClient) -> str:
    reply = await http.post("/api/forms", json={"title": "Shared"})
    assert reply.status_code == 201
    form_id: str = reply.json()["id"]
    return form_id


async def test_lock_holder_renews_and_others_get_409_with_the_holder(
    app: FastAPI,
    staff_directory: StaffDirectory,
    editor: Staff,
    editor_http: httpx.AsyncClient,
) -> None:
    form_id = await new_form(editor_http)
    other = await staff_directory.user(Role.EDITOR, name="Olga Other")

    taken = await editor_http.post(f"/api/forms/{form_id}/lock")
    assert taken.status_code == 200, taken.text
    body = taken.json()
    assert body["lockedBy"] == {"id": editor.user_id, "name": "Erin Editor"}
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", body["expiresAt"])
    expires = datetime.strptime(body["expiresAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert 100 <= (expires - datetime.now(UTC)).total_seconds() <= 121
    renewed = await editor_http.post(f"/api/forms/{form_id}/lock")
    assert renewed.status_code == 200
    assert renewed.json()["lockedBy"]["id"] == editor.user_id

    async with signed_in(app, staff_directory, other) as other_http:
        refused = await other_http.post(f"/api/forms/{form_id}/lock")
        assert refused.status_code == 409
        assert refused.json()["code"] == "locked"
        assert refused.json()["lockedBy"] == {"id": editor.user_id, "name": "Erin Editor"}

        put = await other_http.put(f"/api/forms/{form_id}", json={"title": "Olga's"})
        assert put.status_code == 409
        assert put.json()["code"] == "locked"
        assert put.json()["lockedBy"]["id"] == editor.user_id
        not_theirs = await other_http.delete(f"/api/forms/{form_id}/lock")
        assert not_theirs.status_code == 409
        assert not_theirs.json()["code"] == "locked"

        # The holder saves freely.
        mine = await editor_http.put(f"/api/forms/{form_id}", json={"title": "Erin's"})
        assert mine.status_code == 200
        assert (await editor_http.delete(f"/api/forms/{form_id}/lock")).status_code == 204
        # Released: the other editor can now take it and save, and the first is refused.
        assert (await other_http.post(f"/api/forms/{form_id}/lock")).status_code == 200
        assert (
            await other_http.put(f"/api/forms/{form_id}", json={"title": "Olga's"})
        ).status_code == 200
        blocked = await editor_http.put(f"/api/forms/{form_id}", json={"title": "Again"})
        assert blocked.status_code == 409
        assert blocked.json()["lockedBy"] == {"id": other.user_id, "name": "Olga Other"}
        assert (await other_http.delete(f"/api/forms/{form_id}/lock")).status_code == 204
    # Releasing a free lock is a no-op.
    assert (await editor_http.delete(f"/api/forms/{form_id}/lock")).status_code == 204
    assert (await editor_http.get(f"/api/forms/{form_id}")).json()["title"] == "Olga's"

    state: AppState = app.state.hf
    async with state.db.sessions() as session:
        conflicts = (
            (
                await session.execute(
                    select(AuditEventRow).where(
                        AuditEventRow.action == "lock.conflict",
                        AuditEventRow.resource_id == form_id,
                    )
                )
            )
            .scalars()
            .all()
        )
    assert len(conflicts) == 4
    assert {c.actor_id for c in conflicts} == {editor.user_id, other.user_id}


async def test_viewer_cannot_lock_and_other_organisations_get_404(
    app: FastAPI, staff_directory: StaffDirectory, editor_http: httpx.AsyncClient
) -> None:
    form_id = await new_form(editor_http)
    viewer = await staff_directory.user(Role.VIEWER)
    outsider = await staff_directory.user(Role.ADMIN, org="elsewhere")
    async with signed_in(app, staff_directory, viewer) as http:
        assert (await http.post(f"/api/forms/{form_id}/lock")).status_code == 403
        assert (await http.delete(f"/api/forms/{form_id}/lock")).status_code == 403
    async with signed_in(app, staff_directory, outsider) as http:
        assert (await http.post(f"/api/forms/{form_id}/lock")).status_code == 404
        assert (await http.delete(f"/api/forms/{form_id}/lock")).status_code == 404


async def test_holder_whose_lock_lapsed_cannot_save_over_a_newer_holder(
    app: FastAPI,
    staff_directory: StaffDirectory,
    editor: Staff,
    editor_http: httpx.AsyncClient,
) -> None:
    form_id = await new_form(editor_http)
    newer = await staff_directory.user(Role.EDITOR)
    state: AppState = app.state.hf
    locks: LockService = state.locks
    # The first editor's lease lapses (a stalled request) ...
    stale = await locks.acquire(lock_key(form_id), 50, token=editor.user_id, kind="form-edit")
    assert stale is not None
    await asyncio.sleep(0.15)
    # ... a newer editor takes the lock and saves through the API ...
    async with signed_in(app, staff_directory, newer) as http:
        assert (await http.post(f"/api/forms/{form_id}/lock")).status_code == 200
        assert (await http.put(f"/api/forms/{form_id}", json={"title": "New"})).status_code == 200
    # ... and the stalled save, resuming with its old fencing number, is refused.
    guard = fenced(locks, stale)
    async with state.db.sessions() as session:
        service = FormService(
            session, Principal(editor.user_id, editor.organization_id, editor.role, "t")
        )
        with pytest.raises(StaleLock):
            await service.update(
                form_id,
                title="Old",
                description=None,
                fields=None,
                revision=None,
                fence=guard.fence,
                fence_check=guard.check,
            )
    assert (await editor_http.get(f"/api/forms/{form_id}")).json()["title"] == "New"
