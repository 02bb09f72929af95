"""Responses API: list, read (audited, no-store), delete, roles and organisation scoping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from healthforms.audit.models import AuditEventRow
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.responses.models import ResponsePdf, ResponseRow
from healthforms.security.principal import Role
from tests.support.response_factory import (
    UNICODE_NAME,
    PublishedForm,
    create_form,
    create_organization,
    create_response,
    evidence,
    intake_answers,
)
from tests.support.response_fixtures import StaffFactory
from tests.support.staff import signed_in_client


async def audit_rows(db: Database, action: str, resource_id: str) -> list[AuditEventRow]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(AuditEventRow)
            .where(AuditEventRow.action == action, AuditEventRow.resource_id == resource_id)
            .order_by(AuditEventRow.id)
        )
        return list(rows.scalars())


async def test_list_shows_a_forms_responses_newest_first_without_answers(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    earlier = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    first = await create_response(db, keys, clinic, intake_answers(), submitted_at=earlier)
    second = await create_response(
        db, keys, clinic, intake_answers(), submitted_at=earlier + timedelta(hours=2)
    )
    other_form = (await create_form(db, clinic.organization_id, title="Other"))[0]
    await create_response(db, keys, other_form, intake_answers())

    reply = await admin.get(f"/api/forms/{clinic.form_id}/responses")

    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "no-store"
    listed = reply.json()["responses"]
    assert [r["id"] for r in listed] == [second, first]
    confirmation = listed[1].pop("confirmation")
    assert len(confirmation) == 12
    assert listed[1] == {
        "id": first,
        "formId": clinic.form_id,
        "formVersion": 1,
        "submittedAt": "2026-11-24T09:30:00Z",
        "status": "new",
        "reviewedBy": None,
        "reviewedAt": None,
        "filedBy": None,
        "filedAt": None,
        # The fields the form marks as identifying the patient (docs/responses.md).
        "patient": {"name": UNICODE_NAME, "birthDate": "1984-02-29"},
    }
    assert "Appendectomy" not in reply.text  # no other answer


async def test_read_returns_the_decrypted_answers_keyed_by_field_id(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    answers = intake_answers()
    response_id = await create_response(db, keys, clinic, answers, evidence(answers))

    reply = await admin.get(f"/api/responses/{response_id}")

    assert reply.status_code == 200
    body = reply.json()
    # API.md's Response, plus the review fields (docs/responses.md).
    assert set(body) == {
        "id", "formId", "formVersion", "submittedAt", "answers", "confirmation", "status",
        "reviewedBy", "reviewedAt", "filedBy", "filedAt", "patient",
    }  # fmt: skip
    assert body["id"] == response_id
    assert body["formId"] == clinic.form_id
    assert body["formVersion"] == 1
    assert body["answers"] == answers
    assert body["answers"]["name"] == UNICODE_NAME
    assert body["submittedAt"].endswith("Z")


async def test_every_read_is_audited_as_response_viewed_and_never_cached(
    app: FastAPI, db: Database, keys: KeyRing, clinic: PublishedForm
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    async with signed_in_client(app, clinic.organization_id, Role.VIEWER) as (viewer, reader):
        for _ in range(2):
            reply = await viewer.get(
                f"/api/responses/{response_id}", headers={"X-Request-ID": "req-read-000001"}
            )
            assert reply.status_code == 200
            assert reply.headers["cache-control"] == "no-store"

    events = await audit_rows(db, "response.viewed", response_id)
    assert len(events) == 2
    for event in events:
        assert event.actor_id == reader.id
        assert event.organization_id == clinic.organization_id
        assert event.resource_type == "response"
        assert event.outcome == "success"
        assert event.client_request_id == "req-read-000001"  # kept apart from...
        assert event.request_id and event.request_id != "req-read-000001"  # ...the server's
        assert event.ip == "203.0.113.10"


@pytest.mark.parametrize("role", [Role.ADMIN, Role.EDITOR, Role.VIEWER])
async def test_every_role_may_list_and_read(
    role: Role, db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    async with staff(clinic.organization_id, role) as http:
        assert (await http.get(f"/api/forms/{clinic.form_id}/responses")).status_code == 200
        assert (await http.get(f"/api/responses/{response_id}")).status_code == 200


@pytest.mark.parametrize("role", [Role.EDITOR, Role.VIEWER])
async def test_only_an_admin_may_delete(
    role: Role, db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    async with staff(clinic.organization_id, role) as http:
        reply = await http.delete(f"/api/responses/{response_id}")
        assert reply.status_code == 403
        assert reply.json()["code"] == "forbidden"
        assert (await http.get(f"/api/responses/{response_id}")).status_code == 200


async def test_admin_delete_removes_the_response_and_its_pdf(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    assert (await admin.post(f"/api/responses/{response_id}/generate-pdf")).status_code == 200

    reply = await admin.delete(f"/api/responses/{response_id}")

    assert reply.status_code == 204
    assert reply.content == b""
    assert (await admin.get(f"/api/responses/{response_id}")).status_code == 404
    assert (await admin.delete(f"/api/responses/{response_id}")).status_code == 404
    listed = (await admin.get(f"/api/forms/{clinic.form_id}/responses")).json()["responses"]
    assert listed == []
    async with db.sessions() as session:
        assert await session.get(ResponseRow, response_id) is None
        assert await session.get(ResponsePdf, response_id) is None
    assert len(await audit_rows(db, "response.deleted", response_id)) == 1


async def test_another_organisations_response_is_not_found_everywhere(
    db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    intruder_org = await create_organization(db)
    async with staff(intruder_org, Role.ADMIN) as intruder:
        replies = [
            await intruder.get(f"/api/forms/{clinic.form_id}/responses"),
            await intruder.get(f"/api/responses/{response_id}"),
            await intruder.post(f"/api/responses/{response_id}/generate-pdf"),
            await intruder.delete(f"/api/responses/{response_id}"),
            await intruder.get("/api/responses/rsp_does_not_exist"),
        ]
    for reply in replies:
        assert reply.status_code == 404
        assert reply.json() == {"error": "Not found.", "code": "not_found"}
    assert await audit_rows(db, "response.viewed", response_id) == []
    async with db.sessions() as session:
        assert await session.get(ResponseRow, response_id) is not None


async def test_signed_out_requests_are_refused(
    db: Database, keys: KeyRing, clinic: PublishedForm, client: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    for reply in (
        await client.get(f"/api/forms/{clinic.form_id}/responses"),
        await client.get(f"/api/responses/{response_id}"),
        await client.post(f"/api/responses/{response_id}/generate-pdf"),
        await client.delete(f"/api/responses/{response_id}"),
    ):
        assert reply.status_code == 401
        assert reply.json()["code"] == "unauthenticated"
    page = await client.get(f"/responses/{response_id}/pdf")
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next=/responses/{response_id}/pdf"


async def test_the_stored_row_holds_no_answer_in_clear(
    db: Database, keys: KeyRing, clinic: PublishedForm
) -> None:
    marker = "MARKER-7f3a9c-Łódź"
    response_id = await create_response(db, keys, clinic, intake_answers(marker, name=marker))
    async with db.sessions() as session:
        row = await session.get(ResponseRow, response_id)
        assert row is not None
        values = [getattr(row, column.key) for column in ResponseRow.__table__.columns]
        stored = b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in values)
    assert marker.encode() not in stored
    assert b"MARKER" not in stored
    assert UNICODE_NAME.encode() not in stored


@pytest.mark.parametrize("damage", ["flip_ciphertext", "flip_wrapped_key", "swap_rows"])
async def test_a_tampered_ciphertext_fails_cleanly_without_a_500(
    damage: str,
    db: Database,
    keys: KeyRing,
    clinic: PublishedForm,
    admin: httpx.AsyncClient,
) -> None:
    marker = "MARKER-tamper-Ærø"
    victim = await create_response(db, keys, clinic, intake_answers(marker))
    other = await create_response(db, keys, clinic, intake_answers())
    async with db.sessions() as session, session.begin():
        row = await session.get(ResponseRow, victim)
        assert row is not None
        if damage == "flip_ciphertext":
            data = bytearray(row.ciphertext)
            data[20] ^= 0x01
            values: dict[str, bytes | str] = {"ciphertext": bytes(data)}
        elif damage == "flip_wrapped_key":
            data = bytearray(row.wrapped_key)
            data[-1] ^= 0x80
            values = {"wrapped_key": bytes(data)}
        else:  # a valid ciphertext of another response: the AAD binds it to its own row
            source = await session.get(ResponseRow, other)
            assert source is not None
            values = {
                "ciphertext": source.ciphertext,
                "wrapped_key": source.wrapped_key,
                "key_id": source.key_id,
            }
        await session.execute(update(ResponseRow).where(ResponseRow.id == victim).values(values))

    for reply in (
        await admin.get(f"/api/responses/{victim}"),
        await admin.post(f"/api/responses/{victim}/generate-pdf"),
    ):
        assert reply.status_code == 409
        assert reply.json() == {
            "error": "This stored record cannot be decrypted: it was altered, "
            "or the key that encrypted it is not configured.",
            "code": "response_unreadable",
        }
        assert marker not in reply.text
    # The untouched response still reads, and the failure is on the audit trail.
    assert (await admin.get(f"/api/responses/{other}")).status_code == 200
    failures = await audit_rows(db, "response.viewed", victim)
    assert [e.outcome for e in failures] == ["failure"]
    async with db.sessions() as session:
        assert await session.get(ResponsePdf, victim) is None


async def test_a_response_sealed_under_an_unconfigured_key_fails_cleanly(
    db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    stranger = KeyRing(current=b"s" * 32)
    response_id = await create_response(db, stranger, clinic, intake_answers())
    reply = await admin.get(f"/api/responses/{response_id}")
    assert reply.status_code == 409
    assert reply.json()["code"] == "response_unreadable"
