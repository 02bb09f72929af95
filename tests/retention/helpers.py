"""Clinics, forms with a retention period and responses of a chosen age, with a PDF and
a staff note each, written straight to a database; and what a purge left of them."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update

from healthforms.audit.models import AuditEventRow
from healthforms.clock import utcnow
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.forms.models import Form
from healthforms.responses.models import ResponseNote, ResponsePdf, ResponseRow
from tests.support.response_factory import (
    PublishedForm,
    create_form,
    create_organization,
    create_response,
)

DAY = timedelta(days=1)


async def retained_form(
    db: Database, organization_id: str, retention_days: int | None
) -> PublishedForm:
    """A published form of the organisation that keeps responses that many days."""
    form = (await create_form(db, organization_id))[0]
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(Form).where(Form.id == form.form_id).values(retention_days=retention_days)
        )
    return form


async def submitted(
    db: Database,
    keys: KeyRing,
    form: PublishedForm,
    *times: datetime,
    records: bool = True,
) -> list[str]:
    """One response per time, submitted then (set on the rows afterwards, as a purge
    sees old rows), each with a PDF and a staff note unless `records` is False."""
    ids = [await create_response(db, keys, form, {"name": "Pat Patient"}) for _ in times]
    async with db.sessions() as session, session.begin():
        for response_id, at in zip(ids, times, strict=True):
            await session.execute(
                update(ResponseRow).where(ResponseRow.id == response_id).values(submitted_at=at)
            )
            if records:
                session.add(
                    ResponsePdf(
                        response_id=response_id,
                        ciphertext=secrets.token_bytes(32),
                        wrapped_key=secrets.token_bytes(40),
                        key_id="test",
                        sha256="0" * 64,
                        size_bytes=32,
                        fence=1,
                    )
                )
                session.add(
                    ResponseNote(
                        response_id=response_id,
                        organization_id=form.organization_id,
                        author_id="usr_test",
                        ciphertext=secrets.token_bytes(32),
                        wrapped_key=secrets.token_bytes(40),
                        key_id="test",
                    )
                )
    return ids


async def days_old(
    db: Database, keys: KeyRing, form: PublishedForm, *ages: float, now: datetime | None = None
) -> list[str]:
    """Responses submitted that many days before `now` (default: the clock)."""
    at = now or utcnow()
    return await submitted(db, keys, form, *(at - age * DAY for age in ages))


async def clinic_form(db: Database, retention_days: int | None) -> PublishedForm:
    return await retained_form(db, await create_organization(db), retention_days)


async def left_of(db: Database, response_ids: Sequence[str]) -> dict[str, set[str]]:
    """Which of these responses still have their row, their PDF and their note."""
    async with db.sessions() as session:
        rows = await session.scalars(select(ResponseRow.id).where(ResponseRow.id.in_(response_ids)))
        pdfs = await session.scalars(
            select(ResponsePdf.response_id).where(ResponsePdf.response_id.in_(response_ids))
        )
        notes = await session.scalars(
            select(ResponseNote.response_id).where(ResponseNote.response_id.in_(response_ids))
        )
        return {"responses": set(rows), "pdfs": set(pdfs), "notes": set(notes)}


async def purge_events(db: Database, form_id: str) -> list[AuditEventRow]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(AuditEventRow)
            .where(AuditEventRow.action == "responses.purged", AuditEventRow.resource_id == form_id)
            .order_by(AuditEventRow.id)
        )
        return list(rows)


def detail(event: AuditEventRow) -> dict[str, Any]:
    assert event.detail is not None
    parsed: dict[str, Any] = json.loads(event.detail)
    return parsed


async def event_count(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditEventRow)) or 0)


async def refuse_purge_events(db: Database) -> None:
    """Make the database refuse every `responses.purged` event (a fault the purge must
    survive with its rows intact): a trigger, on either backend."""
    async with db.engine.begin() as conn:
        if db.is_sqlite:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_purge_events BEFORE INSERT ON audit_events "
                    "WHEN NEW.action = 'responses.purged' "
                    "BEGIN SELECT RAISE(ABORT, 'purge events refused'); END"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_purge_events() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN IF NEW.action = 'responses.purged' THEN "
                    "RAISE EXCEPTION 'purge events refused'; END IF; RETURN NEW; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_purge_events BEFORE INSERT ON audit_events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_purge_events()"
                )
            )


async def accept_purge_events(db: Database) -> None:
    async with db.engine.begin() as conn:
        if db.is_sqlite:
            await conn.execute(text("DROP TRIGGER refuse_purge_events"))
        else:
            await conn.execute(text("DROP TRIGGER refuse_purge_events ON audit_events"))
            await conn.execute(text("DROP FUNCTION refuse_purge_events()"))
