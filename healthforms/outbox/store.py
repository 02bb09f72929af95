"""Writing to the outbox: inside the caller's transaction, so the message commits with
the change it announces or not at all."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import utcnow
from healthforms.db.base import new_id
from healthforms.db.engine import Database
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


async def claim_delivery(db: Database, delivery_id: str, lease: timedelta) -> int | None:
    """pending (due) or sending (lease lapsed) -> sending for `lease`; the attempt number,
    or None when it is not this caller's to send now (another worker holds it, it is not
    due, or it ended). Email (worker.py) and webhooks (webhooks/dispatcher.py) both claim
    through here, so two workers never send the same delivery."""
    now = utcnow()
    async with db.sessions() as session, session.begin():
        result = await session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                or_(
                    (Delivery.status == "pending") & (Delivery.next_attempt_at <= now),
                    (Delivery.status == "sending") & (Delivery.lease_until <= now),
                ),
            )
            .values(status="sending", lease_until=now + lease, attempts=Delivery.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if int(getattr(result, "rowcount", 0) or 0) != 1:
            return None
        found = await session.execute(select(Delivery.attempts).where(Delivery.id == delivery_id))
        return int(found.scalar_one())
