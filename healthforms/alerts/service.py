"""Subscriptions to a form's new responses, the fan-out of one response into alerts
(and email deliveries), and the unread alerts of a staff member."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import cast
from urllib.parse import urlsplit

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.alerts.models import Alert
from healthforms.clock import rfc3339, utcnow
from healthforms.db.base import new_id
from healthforms.email import messages
from healthforms.errors import NotFound
from healthforms.forms.models import AlertSubscription, Form
from healthforms.identity.models import User
from healthforms.outbox.models import Delivery, OutboxMessage
from healthforms.outbox.store import RESPONSE_SUBMITTED
from healthforms.outbox.worker import Handler

RESPONSE_ALERT = "response_alert"  # the email template (email/messages.py)
MAX_LISTED = 50


async def is_subscribed(session: AsyncSession, user_id: str, form_id: str) -> bool:
    found = await session.get(AlertSubscription, (user_id, form_id))
    return found is not None


async def subscribe(
    session: AsyncSession, organization_id: str, user_id: str, form_id: str
) -> None:
    """Idempotent: subscribing twice leaves one subscription."""
    if not await is_subscribed(session, user_id, form_id):
        session.add(
            AlertSubscription(user_id=user_id, form_id=form_id, organization_id=organization_id)
        )
        await session.flush()


async def unsubscribe(session: AsyncSession, user_id: str, form_id: str) -> None:
    await session.execute(
        delete(AlertSubscription).where(
            AlertSubscription.user_id == user_id, AlertSubscription.form_id == form_id
        )
    )


def delivery_id(message_id: str, channel: str, recipient: str) -> str:
    """The idempotency key of one message to one recipient on one channel."""
    return f"{message_id}:{channel}:{recipient}"


_INSERT_ALERT = insert(cast(Table, Alert.__table__))
_INSERT_DELIVERY = insert(cast(Table, Delivery.__table__))


async def fan_out_response(
    session: AsyncSession, message: OutboxMessage, *, mail: bool
) -> list[str]:
    """A new response → an alert for every active subscriber of its form and, with mail
    configured, an email delivery each. Idempotent (a message handled twice, by two
    workers or after a crash, adds nothing): the ids of its email deliveries."""
    form_id = str(message.payload.get("formId", ""))
    response_id = str(message.payload.get("responseId", ""))
    subscribers = list(
        (
            await session.execute(
                select(User.id)
                .join(AlertSubscription, AlertSubscription.user_id == User.id)
                .where(
                    AlertSubscription.form_id == form_id,
                    User.organization_id == message.organization_id,
                    User.disabled.is_(False),
                )
            )
        ).scalars()
    )
    alerted = set(
        (
            await session.execute(select(Alert.user_id).where(Alert.message_id == message.id))
        ).scalars()
    )
    now = utcnow()
    new_alerts = [
        {
            "id": new_id("alr_"),
            "organization_id": message.organization_id,
            "user_id": user_id,
            "message_id": message.id,
            "kind": message.kind,
            "form_id": form_id,
            "response_id": response_id,
            "created_at": now,
            "read_at": None,
        }
        for user_id in subscribers
        if user_id not in alerted
    ]
    if new_alerts:
        await session.execute(_INSERT_ALERT, new_alerts)
    if not mail:
        return []
    wanted = {delivery_id(message.id, "email", user_id): user_id for user_id in subscribers}
    existing = set(
        (
            await session.execute(select(Delivery.id).where(Delivery.message_id == message.id))
        ).scalars()
    )
    new_deliveries = [
        {
            "id": key,
            "message_id": message.id,
            "organization_id": message.organization_id,
            "channel": "email",
            "template": RESPONSE_ALERT,
            "recipient_user_id": user_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "lease_until": None,
            "last_error": None,
            "created_at": now,
            "sent_at": None,
        }
        for key, user_id in wanted.items()
        if key not in existing
    ]
    if new_deliveries:
        await session.execute(_INSERT_DELIVERY, new_deliveries)
    return sorted(wanted)


async def compose_response_alert(
    session: AsyncSession, delivery: Delivery, message: OutboxMessage, base_url: str
) -> EmailMessage | None:
    """The email of one response alert, or None when its recipient was disabled or
    removed since."""
    if delivery.template != RESPONSE_ALERT or not delivery.recipient_user_id:
        return None
    user = await session.get(User, delivery.recipient_user_id)
    if user is None or user.disabled or not user.email:
        return None
    form_id = str(message.payload.get("formId", ""))
    form = await session.get(Form, form_id)
    return messages.response_alert(
        to=user.email,
        form_title=form.title if form is not None else "a form",
        link=f"{base_url}/forms/{form_id}/responses",
        delivery_id=delivery.id,
        domain=urlsplit(base_url).hostname or "healthforms.invalid",
    )


async def _fan_out(session: AsyncSession, message: OutboxMessage, mail: bool) -> list[str]:
    return await fan_out_response(session, message, mail=mail)


def outbox_handlers() -> dict[str, Handler]:
    """What the outbox worker does with the messages alerts/ is about."""
    return {RESPONSE_SUBMITTED: Handler(fan_out=_fan_out, compose=compose_response_alert)}


async def organization_form(session: AsyncSession, organization_id: str, form_id: str) -> Form:
    """A form of the caller's organisation, or 404."""
    form = await session.get(Form, form_id) if len(form_id) <= 40 else None
    if form is None or form.organization_id != organization_id:
        raise NotFound()
    return form


@dataclass(frozen=True, slots=True)
class AlertView:
    id: str
    kind: str
    form_id: str | None
    form_title: str | None
    response_id: str | None
    created_at: datetime
    read: bool

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "formId": self.form_id,
            "formTitle": self.form_title,
            "responseId": self.response_id,
            "createdAt": rfc3339(self.created_at),
            "read": self.read,
        }


async def unread_count(session: AsyncSession, user_id: str) -> int:
    found = await session.execute(
        select(func.count()).where(Alert.user_id == user_id, Alert.read_at.is_(None))
    )
    return int(found.scalar_one())


async def list_alerts(session: AsyncSession, user_id: str) -> list[AlertView]:
    """The newest alerts of this user (read or not)."""
    rows = await session.execute(
        select(Alert, Form.title)
        .outerjoin(Form, Form.id == Alert.form_id)
        .where(Alert.user_id == user_id)
        .order_by(Alert.created_at.desc(), Alert.id.desc())
        .limit(MAX_LISTED)
    )
    return [
        AlertView(
            id=alert.id,
            kind=alert.kind,
            form_id=alert.form_id,
            form_title=title,
            response_id=alert.response_id,
            created_at=alert.created_at,
            read=alert.read_at is not None,
        )
        for alert, title in rows
    ]


async def mark_read(session: AsyncSession, user_id: str, alert_ids: list[str] | None = None) -> int:
    """Mark some (or, with None, all) of this user's alerts read; how many changed."""
    query = (
        update(Alert)
        .where(Alert.user_id == user_id, Alert.read_at.is_(None))
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if alert_ids is not None:
        query = query.where(Alert.id.in_(alert_ids))
    result = await session.execute(query)
    return int(getattr(result, "rowcount", 0) or 0)
