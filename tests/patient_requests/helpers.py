"""Requests over HTTP as staff and as the patient's phone, and straight in the database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, text, update

from healthforms.audit.models import AuditEventRow
from healthforms.clock import utcnow
from healthforms.db.engine import Database
from healthforms.patient_requests.models import PatientRequest
from healthforms.responses.models import ResponseRow
from tests.support.apps import asgi_client
from tests.support.response_factory import signature_data_url

# A name, email and phone no other test writes: found anywhere, they leaked.
PATIENT_NAME = "Zephyrine Quillfeather"
PATIENT_EMAIL = "zephyrine.q@example.org"
PATIENT_PHONE = "+1 555 013 4477"


def token_of(link: str) -> str:
    return link.rsplit("/r/", 1)[1]


async def create_request(http: httpx.AsyncClient, form_id: str, **body: Any) -> dict[str, Any]:
    """POST a request (default: the marker patient with email and phone); 201 asserted."""
    payload: dict[str, Any] = {
        "patientName": PATIENT_NAME,
        "email": PATIENT_EMAIL,
        "phone": PATIENT_PHONE,
        **body,
    }
    reply = await http.post(f"/api/forms/{form_id}/requests", json=payload)
    assert reply.status_code == 201, reply.text
    created: dict[str, Any] = reply.json()
    return created


async def open_link(app: FastAPI, token: str) -> httpx.Response:
    async with asgi_client(app) as phone:
        return await phone.get(f"/api/public/requests/{token}")


async def submit(app: FastAPI, token: str, nonce: str, answers: dict[str, Any]) -> httpx.Response:
    async with asgi_client(app) as phone:
        return await phone.post(
            f"/api/public/requests/{token}/responses", json={"nonce": nonce, "answers": answers}
        )


async def fresh_nonce(app: FastAPI, token: str) -> str:
    opened = await open_link(app, token)
    assert opened.status_code == 200, opened.text
    nonce: str = opened.json()["nonce"]
    return nonce


def answers(**overrides: Any) -> dict[str, Any]:
    """Answers to tests/support's intake form (its name field identifies the patient)."""
    values: dict[str, Any] = {
        "name": "Answered Name",
        "dob": "1979-03-04",
        "smoker": "No",
        "consent": True,
        "signature": signature_data_url(),
    }
    values.update(overrides)
    return values


async def request_row(db: Database, request_id: str) -> PatientRequest:
    async with db.sessions() as session:
        row = await session.get(PatientRequest, request_id)
        assert row is not None
        return row


async def expire(db: Database, request_id: str, at: datetime | None = None) -> None:
    """The request's expiry moved into the past, as if its days had gone by."""
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(PatientRequest)
            .where(PatientRequest.id == request_id)
            .values(expires_at=at or utcnow() - timedelta(minutes=1))
        )


async def response_count(db: Database, form_id: str) -> int:
    async with db.sessions() as session:
        found = await session.execute(
            select(func.count()).select_from(ResponseRow).where(ResponseRow.form_id == form_id)
        )
        return int(found.scalar_one())


async def events(db: Database, organization_id: str, prefix: str = "") -> list[AuditEventRow]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(AuditEventRow)
            .where(
                AuditEventRow.organization_id == organization_id,
                AuditEventRow.action.startswith(prefix),
            )
            .order_by(AuditEventRow.id)
        )
        return list(rows.scalars())


async def public_id_of(db: Database, form_id: str) -> str:
    async with db.sessions() as session:
        found = await session.execute(
            text("select public_id from forms where id = :id"), {"id": form_id}
        )
        return str(found.scalar_one())
