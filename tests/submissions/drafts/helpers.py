"""Saving and resuming drafts over HTTP as a patient's phone, and the rows behind them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select, text, update

from healthforms.audit.models import AuditEventRow
from healthforms.clock import utcnow
from healthforms.db.engine import Database
from healthforms.submissions.drafts.models import FormDraft

# Found anywhere at rest or in Redis, it leaked.
MARKER = "Quillonbury Vexhaven"


@asynccontextmanager
async def phone(app: FastAPI, ip: str = "198.51.100.20") -> AsyncIterator[httpx.AsyncClient]:
    """A patient's device: its own client address, no cookies."""
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def public_id_of(db: Database, form_id: str) -> str:
    async with db.sessions() as session:
        found = await session.execute(
            text("select public_id from forms where id = :id"), {"id": form_id}
        )
        return str(found.scalar_one())


async def nonce_of(http: httpx.AsyncClient, public_id: str) -> str:
    reply = await http.get(f"/api/public/forms/{public_id}")
    assert reply.status_code == 200, reply.text
    nonce: str = reply.json()["nonce"]
    return nonce


def half_answers(**overrides: Any) -> dict[str, Any]:
    """Half of tests/support's intake form: nothing required yet, an email being typed."""
    values: dict[str, Any] = {
        "name": MARKER,
        "email": "quill@",
        "history": f"Broke a wrist skiing; {MARKER} family history.",
        "allergies": ["Latex"],
        "smoker": "Yes",
    }
    values.update(overrides)
    return values


async def save(
    http: httpx.AsyncClient, public_id: str, answers: dict[str, Any], **body: Any
) -> httpx.Response:
    return await http.post(
        f"/api/public/forms/{public_id}/drafts", json={"answers": answers, **body}
    )


async def resume_link(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get(f"/api/public/drafts/{token}")


async def resume_code(http: httpx.AsyncClient, public_id: str, code: object) -> httpx.Response:
    return await http.post(f"/api/public/forms/{public_id}/drafts/resume", json={"code": code})


async def draft_rows(db: Database, form_id: str | None = None) -> list[FormDraft]:
    async with db.sessions() as session:
        query = select(FormDraft)
        if form_id is not None:
            query = query.where(FormDraft.form_id == form_id)
        return list((await session.execute(query)).scalars())


async def expire_drafts(db: Database, form_id: str, at: datetime | None = None) -> None:
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(FormDraft)
            .where(FormDraft.form_id == form_id)
            .values(expires_at=at or utcnow() - timedelta(minutes=1))
        )


async def events(db: Database, organization_id: str, prefix: str = "draft.") -> list[AuditEventRow]:
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
