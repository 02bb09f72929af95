"""The review of a response: new -> reviewed -> filed (who, when), and staff notes.

A status change is a compare-and-set on the status it was read with, so two staff who
mark the same response at once get one change and one 409, never a silent overwrite;
the change and its audit event commit together. Notes are PHI like the answers:
encrypted the same way (crypto/envelope.py, AAD = note id + response id), written with
their `response.note_added` event, and every read of them is audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import (
    RESPONSE_FILED,
    RESPONSE_NOTE_ADDED,
    RESPONSE_REOPENED,
    RESPONSE_REVIEWED,
)
from healthforms.audit.recorder import Auditor
from healthforms.clock import rfc3339, utcnow
from healthforms.crypto.envelope import DecryptionFailed, Sealed, note_aad, open_json, seal_json
from healthforms.crypto.keys import KeyRing
from healthforms.db.base import new_id
from healthforms.errors import Conflict, ValidationFailed
from healthforms.identity.models import User
from healthforms.outbox.store import RESPONSE_REVIEWED as RESPONSE_REVIEWED_MESSAGE
from healthforms.outbox.store import enqueue
from healthforms.responses.models import ResponseNote, ResponseRow
from healthforms.responses.service import RESOURCE_TYPE, get_response

log = structlog.get_logger("healthforms.responses")

NEW, REVIEWED, FILED = "new", "reviewed", "filed"
STATUSES = (NEW, REVIEWED, FILED)
# The moves staff can make, and the audit action each one writes.
TRANSITIONS: dict[tuple[str, str], str] = {
    (NEW, REVIEWED): RESPONSE_REVIEWED,
    (REVIEWED, FILED): RESPONSE_FILED,
    (NEW, FILED): RESPONSE_FILED,  # read and filed in one go
    (REVIEWED, NEW): RESPONSE_REOPENED,
    (FILED, REVIEWED): RESPONSE_REOPENED,
}
NOTE_MAX_CHARS = 4000


class InvalidTransition(Conflict):
    code = "invalid_transition"
    message = "The response cannot move to that status from its current one."


class StaleStatus(Conflict):
    code = "stale_status"
    message = "Someone changed this response's status meanwhile. Reload and try again."


@dataclass(frozen=True, slots=True)
class Note:
    id: str
    author: dict[str, str | None]
    created_at: datetime
    text: str | None  # None: it would not decrypt (altered, or its key is not configured)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "author": self.author,
            "createdAt": rfc3339(self.created_at),
            "text": self.text,
            "unreadable": self.text is None,
        }


def parse_status(body: object) -> str:
    status = body.get("status") if isinstance(body, dict) else None
    if status not in STATUSES:
        raise ValidationFailed({"status": f"status must be one of {', '.join(STATUSES)}"})
    return str(status)


def parse_note(body: object) -> str:
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed({"text": "Write the note first."})
    if len(text) > NOTE_MAX_CHARS:
        raise ValidationFailed({"text": f"A note holds at most {NOTE_MAX_CHARS} characters."})
    return text.strip()


async def set_status(
    session: AsyncSession,
    organization_id: str,
    user_id: str,
    response_id: str,
    target: str,
    auditor: Auditor,
) -> ResponseRow:
    """Move a response to `target`; the change and its event commit together."""
    row = await get_response(session, organization_id, response_id)
    current = row.review_status
    if current == target:
        return row  # already there: nothing to change, nothing to audit
    action = TRANSITIONS.get((current, target))
    if action is None:
        raise InvalidTransition(extra={"status": current})
    now = utcnow()
    values: dict[str, Any] = {"review_status": target}
    if target == REVIEWED:
        values.update(reviewed_by=user_id, reviewed_at=now)
    elif target == FILED:
        values.update(filed_by=user_id, filed_at=now)
        if row.reviewed_at is None:
            values.update(reviewed_by=user_id, reviewed_at=now)
    else:  # back to new: the review starts over
        values.update(reviewed_by=None, reviewed_at=None, filed_by=None, filed_at=None)
    if target == REVIEWED and current == FILED:
        values.update(filed_by=None, filed_at=None)
    result = await session.execute(
        update(ResponseRow)
        .where(
            ResponseRow.id == row.id,
            ResponseRow.organization_id == organization_id,
            ResponseRow.review_status == current,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        await session.rollback()
        raise StaleStatus()
    if current == NEW:
        # Reviewed now (reviewed, or read and filed at once): the webhooks' event,
        # committed with the change.
        await enqueue(
            session,
            organization_id,
            RESPONSE_REVIEWED_MESSAGE,
            {"responseId": row.id, "formId": row.form_id},
        )
    event = auditor.event(action, resource_type=RESOURCE_TYPE, resource_id=row.id)
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    await session.refresh(row)
    return row


async def add_note(
    session: AsyncSession,
    keys: KeyRing,
    organization_id: str,
    user_id: str,
    response_id: str,
    text: str,
    auditor: Auditor,
) -> ResponseNote:
    row = await get_response(session, organization_id, response_id)
    note_id = new_id("nte_")
    sealed = seal_json(keys, {"text": text}, note_aad(note_id, row.id))
    note = ResponseNote(
        id=note_id,
        response_id=row.id,
        organization_id=organization_id,
        author_id=user_id,
        created_at=utcnow(),
        ciphertext=sealed.ciphertext,
        wrapped_key=sealed.wrapped_key,
        key_id=sealed.key_id,
    )
    session.add(note)
    # The note (PHI) and its event commit together, or neither does.
    event = auditor.event(RESPONSE_NOTE_ADDED, resource_type=RESOURCE_TYPE, resource_id=row.id)
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    return note


async def list_notes(
    session: AsyncSession, keys: KeyRing, organization_id: str, response_id: str
) -> list[Note]:
    """The response's notes, oldest first, decrypted (the caller audits the read)."""
    row = await get_response(session, organization_id, response_id)
    found = await session.execute(
        select(ResponseNote, User.name)
        .outerjoin(User, User.id == ResponseNote.author_id)
        .where(ResponseNote.response_id == row.id)
        .order_by(ResponseNote.created_at, ResponseNote.id)
    )
    notes = []
    for note, author_name in found:
        sealed = Sealed(
            ciphertext=note.ciphertext, wrapped_key=note.wrapped_key, key_id=note.key_id
        )
        try:
            payload = open_json(keys, sealed, note_aad(note.id, row.id))
            text: str | None = str(payload["text"]) if isinstance(payload, dict) else None
        except (DecryptionFailed, UnicodeDecodeError, ValueError, KeyError) as exc:
            log.error("note_decrypt_failed", note_id=note.id, reason=type(exc).__name__)
            text = None
        notes.append(
            Note(
                id=note.id,
                author={"id": note.author_id, "name": author_name},
                created_at=note.created_at,
                text=text,
            )
        )
    return notes


async def people(session: AsyncSession, rows: list[ResponseRow]) -> dict[str, str]:
    """Names of the staff who reviewed or filed `rows` (user id -> name)."""
    ids = {uid for row in rows for uid in (row.reviewed_by, row.filed_by) if uid}
    if not ids:
        return {}
    found = await session.execute(select(User.id, User.name).where(User.id.in_(ids)))
    return {user_id: name for user_id, name in found.all()}
