"""The review of responses: status new -> reviewed -> filed (who, when) and staff notes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, text

from healthforms.audit.models import AuditEventRow
from healthforms.audit.store import verify_chains
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.security.principal import Role
from tests.support.response_factory import (
    PublishedForm,
    create_form,
    create_organization,
    create_response,
    intake_answers,
)
from tests.support.response_fixtures import StaffFactory

NOTE_MARKER = "ZQX-NOTE-MARKER Allergic to penicillin"


async def actions(db: Database, resource_id: str) -> list[str]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(AuditEventRow.action)
            .where(AuditEventRow.resource_id == resource_id)
            .order_by(AuditEventRow.id)
        )
        return list(rows.scalars())


async def test_a_response_moves_new_reviewed_filed_with_who_and_when(
    db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    async with staff(clinic.organization_id, Role.EDITOR) as editor:
        reviewed = await editor.post(
            f"/api/responses/{response_id}/status", json={"status": "reviewed"}
        )
        assert reviewed.status_code == 200, reviewed.text
        body = reviewed.json()
        assert body["status"] == "reviewed"
        assert body["reviewedBy"]["name"] == "Test Staff" and body["reviewedAt"]
        assert body["filedBy"] is None and "answers" not in body
        assert reviewed.headers["cache-control"] == "no-store"

        filed = await editor.post(f"/api/responses/{response_id}/status", json={"status": "filed"})
        assert filed.json()["status"] == "filed"
        assert filed.json()["filedAt"] and filed.json()["reviewedAt"] == body["reviewedAt"]

        again = await editor.post(f"/api/responses/{response_id}/status", json={"status": "filed"})
        assert again.status_code == 200  # already there: no change, no event

        skipped = await editor.post(f"/api/responses/{response_id}/status", json={"status": "new"})
        assert skipped.status_code == 409
        assert skipped.json()["code"] == "invalid_transition"

        reopened = await editor.post(
            f"/api/responses/{response_id}/status", json={"status": "reviewed"}
        )
        assert reopened.json()["status"] == "reviewed" and reopened.json()["filedAt"] is None

        listed = await editor.get(f"/api/forms/{clinic.form_id}/responses?status=reviewed")
        assert [r["id"] for r in listed.json()["responses"]] == [response_id]
        none_new = await editor.get(f"/api/forms/{clinic.form_id}/responses?status=new")
        assert none_new.json()["responses"] == []
        bad = await editor.get(f"/api/forms/{clinic.form_id}/responses?status=done")
        assert bad.status_code == 422

    assert await actions(db, response_id) == [
        "response.reviewed",
        "response.filed",
        "response.reopened",
    ]
    result = await verify_chains(db, keys)
    assert result.intact, result.breaks


async def test_bad_status_bodies_are_422_not_500(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    bodies: list[object] = [{}, {"status": None}, {"status": 3}, {"status": "REVIEWED"}, [], "x"]
    for body in bodies:
        reply = await admin.post(f"/api/responses/{response_id}/status", json=body)
        assert reply.status_code == 422, (body, reply.text)
        assert reply.json()["code"] == "validation_error"
    raw = await admin.post(
        f"/api/responses/{response_id}/status",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 400


async def test_two_staff_marking_at_once_make_one_change(
    db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    async with (
        staff(clinic.organization_id, Role.EDITOR) as first,
        staff(clinic.organization_id, Role.ADMIN) as second,
    ):
        replies = await asyncio.gather(
            *(
                http.post(f"/api/responses/{response_id}/status", json={"status": "reviewed"})
                for http in (first, second, first, second)
            )
        )
    statuses = sorted(reply.status_code for reply in replies)
    assert set(statuses) <= {200, 409}, statuses
    assert await actions(db, response_id) == ["response.reviewed"]


async def test_roles_csrf_and_organisations(
    db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    target = f"/api/responses/{response_id}/status"
    async with staff(clinic.organization_id, Role.VIEWER) as viewer:
        assert (await viewer.post(target, json={"status": "reviewed"})).status_code == 403
        note = await viewer.post(f"/api/responses/{response_id}/notes", json={"text": "x"})
        assert note.status_code == 403
        # Viewers read the review and the notes.
        assert (await viewer.get(f"/api/responses/{response_id}/notes")).status_code == 200
    async with staff(clinic.organization_id, Role.EDITOR) as editor:
        editor.headers.pop("X-CSRF-Token", None)
        refused = await editor.post(target, json={"status": "reviewed"})
        assert refused.status_code == 403 and refused.json()["code"] == "csrf_invalid"
    other = await create_organization(db)
    other_form = (await create_form(db, other))[0]
    theirs = await create_response(db, keys, other_form, intake_answers())
    async with staff(clinic.organization_id, Role.ADMIN) as admin:
        for path in (f"/api/responses/{theirs}/status", f"/api/responses/{theirs}/notes"):
            reply = await admin.post(path, json={"status": "reviewed", "text": "x"})
            assert reply.status_code == 404, path
        assert (await admin.get(f"/api/responses/{theirs}/notes")).status_code == 404
    # Only the viewer's read of the notes: nothing refused changed or recorded anything.
    assert await actions(db, response_id) == ["response.notes_viewed"]
    assert await actions(db, theirs) == []


async def test_notes_are_encrypted_at_rest_and_every_read_is_audited(
    db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    async with staff(clinic.organization_id, Role.EDITOR) as editor:
        written = await editor.post(
            f"/api/responses/{response_id}/notes", json={"text": f"  {NOTE_MARKER}\n"}
        )
        assert written.status_code == 201, written.text
        assert written.json()["text"] == NOTE_MARKER
        for body in ({"text": "   "}, {"text": "x" * 4001}, {}, {"text": 5}):
            refused = await editor.post(f"/api/responses/{response_id}/notes", json=body)
            assert refused.status_code == 422, body
        listed = await editor.get(f"/api/responses/{response_id}/notes")
    assert listed.status_code == 200
    assert listed.headers["cache-control"] == "no-store"
    (note,) = listed.json()["notes"]
    assert note["text"] == NOTE_MARKER and note["author"]["name"] == "Test Staff"
    assert note["unreadable"] is False
    # Not in the database in plaintext, not in any audit row.
    async with db.sessions() as session:
        dumped = (
            await session.execute(
                text("select ciphertext from response_notes where response_id = :id"),
                {"id": response_id},
            )
        ).all()
        assert dumped
        events = (await session.execute(select(AuditEventRow))).scalars().all()
    assert all(NOTE_MARKER.encode() not in bytes(row[0]) for row in dumped)
    assert all("penicillin" not in repr(vars(event)) for event in events)
    assert await actions(db, response_id) == [
        "response.note_added",
        "response.notes_viewed",
    ]


async def test_deleting_a_response_deletes_its_notes(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    assert (
        await admin.post(f"/api/responses/{response_id}/notes", json={"text": NOTE_MARKER})
    ).status_code == 201
    assert (await admin.delete(f"/api/responses/{response_id}")).status_code == 204
    async with db.sessions() as session:
        left = (
            await session.execute(
                text("select count(*) from response_notes where response_id = :id"),
                {"id": response_id},
            )
        ).scalar()
    assert left == 0


async def test_a_confirmation_code_read_out_on_the_phone_finds_its_response(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    async with db.sessions() as session:
        code = (
            await session.execute(
                text("select confirmation from responses where id = :id"), {"id": response_id}
            )
        ).scalar_one()
    spoken = " ".join([code[:4].lower(), code[4:8], "-", code[8:]])
    found = await admin.get("/api/responses", params={"confirmation": spoken})
    assert found.status_code == 200, found.text
    assert found.headers["cache-control"] == "no-store"
    assert [r["id"] for r in found.json()["responses"]] == [response_id]
    assert "answers" not in found.json()["responses"][0]
    missing = await admin.get("/api/responses", params={"confirmation": "ZZZZ9999ZZZZ"})
    assert missing.json() == {"responses": []}
    for bad in ("", "ab", "!!!!!!", "x" * 40, "ÄÖÜÄÖÜ"):
        refused = await admin.get("/api/responses", params={"confirmation": bad})
        assert refused.status_code == 422, bad
    assert (await admin.get("/api/responses")).status_code == 422
    # Another clinic's code finds nothing here.
    other_form = (await create_form(db, await create_organization(db)))[0]
    theirs = await create_response(db, keys, other_form, intake_answers())
    async with db.sessions() as session:
        their_code = (
            await session.execute(
                text("select confirmation from responses where id = :id"), {"id": theirs}
            )
        ).scalar_one()
    crossed = await admin.get("/api/responses", params={"confirmation": their_code})
    assert crossed.json() == {"responses": []}
    # The staff page's plain form: one match opens the response, none says so.
    page = await admin.get("/responses/find", params={"code": spoken})
    assert page.status_code == 303
    assert page.headers["location"] == f"/responses/{response_id}"
    none = await admin.get("/responses/find", params={"code": their_code})
    assert none.status_code == 200
    assert "No response of your clinic has the confirmation code" in none.text


async def test_the_list_pages_by_keyset_and_filters_by_date(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    start = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    ids = [
        await create_response(
            db, keys, clinic, intake_answers(), submitted_at=start + timedelta(hours=i // 2)
        )
        for i in range(7)  # pairs share a second: the id breaks the tie
    ]
    base = f"/api/forms/{clinic.form_id}/responses"
    seen: list[str] = []
    cursor = None
    for page_number in range(4):
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["after"] = cursor
        page = (await admin.get(base, params=params)).json()
        seen += [r["id"] for r in page["responses"]]
        cursor = page["next"]
        if page_number == 0:
            # A response arriving meanwhile is newer than the cursor: no page shifts.
            await create_response(
                db, keys, clinic, intake_answers(), submitted_at=start + timedelta(days=3)
            )
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    listed = (await admin.get(base)).json()
    assert "next" not in listed  # without `limit`, the whole list as before
    assert [r["id"] for r in listed["responses"][1:]] == seen  # newest first, same order

    window = await admin.get(
        base, params={"from": "2026-11-02T09:00:00Z", "to": "2026-11-02T11:00:00+00:00"}
    )
    assert sorted(r["id"] for r in window.json()["responses"]) == sorted(ids[2:6])
    refused: list[dict[str, str | int]] = [
        {"after": "not-a-cursor"},
        {"after": "cnNwX3g"},  # base64 of "rsp_x": no time in it
        {"from": "yesterday"},
        {"to": "2026-11-02T09:00:00"},  # no offset
        {"limit": 0},
        {"limit": 501},
    ]
    for bad in refused:
        assert (await admin.get(base, params=bad)).status_code == 422, bad
