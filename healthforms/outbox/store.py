"""Writing to the outbox: inside the caller's transaction, so the message commits with
the change it announces or not at all."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import utcnow
from healthforms.db.base import new_id
from healthforms.outbox.models import Delivery, OutboxMessage

# What happened, as the handlers (outbox/handlers.py) know it.
RESPONSE_SUBMITTED = "response.submitted"
# Events for webhooks/ only (no email): ids only, like every message.
RESPONSE_REVIEWED = "response.reviewed"  # {"responseId", "formId"}
FORM_PUBLISHED = "form.published"  # {"formId", "version"}
REQUEST_COMPLETED = "request.completed"  # {"requestId", "responseId"}

_INSERT = insert(cast(Table, OutboxMessage.__table__))


async def enqueue(
    session: AsyncSession, organization_id: str, kind: str, payload: dict[str, Any]
) -> str:
    """Add a message in the caller's transaction; its id. `payload`: ids only."""
    message_id = new_id("obx_")
    await session.execute(
        _INSERT,
        {
            "id": message_id,
            "organization_id": organization_id,
            "kind": kind,
            "payload": payload,
            "created_at": utcnow(),
            "published_at": None,
        },
    )
    return message_id


class OutboxSignal:
    """Wakes this process's relay when a request committed a message, so it is carried
    at once instead of at the next poll (other instances' messages wait for the poll)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def nudge(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            pass
        self._event.clear()


async def patient_delivery(
    session: AsyncSession, message: OutboxMessage, mail: bool, template: str
) -> list[str]:
    """A handler's fan-out of one email to the patient the message is about (a request's
    link or receipt, a draft's link): one delivery, idempotent by its id; none when this
    service sends no mail."""
    if not mail:
        return []
    delivery_id = f"{message.id}:email:patient"
    if await session.get(Delivery, delivery_id) is None:
        session.add(
            Delivery(
                id=delivery_id,
                message_id=message.id,
                organization_id=message.organization_id,
                channel="email",
                template=template,
                recipient_user_id=None,
                status="pending",
                attempts=0,
            )
        )
        await session.flush()
    return [delivery_id]
