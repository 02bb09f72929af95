"""Emails to the patient of a request, through the outbox (outbox/): the personal link
when staff ask for it to be emailed, and a receipt with the confirmation code after
the patient sent the form. Neither names the form (its title can say what the visit is
about to whoever reads the inbox) nor carries an answer.

The link's token is never stored in clear: the outbox message carries it sealed
(AES-GCM under a data key, AAD = the request id), and the worker drops it from the
message once the email is sent.
"""

from __future__ import annotations

import base64
from email.message import EmailMessage
from urllib.parse import urlsplit

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import REQUEST_SENT, AuditEvent
from healthforms.audit.store import append_in
from healthforms.clock import utcnow
from healthforms.crypto.envelope import DecryptionFailed, Sealed, open_sealed
from healthforms.crypto.keys import KeyRing
from healthforms.email import messages
from healthforms.outbox.models import Delivery, OutboxMessage
from healthforms.outbox.store import patient_delivery
from healthforms.outbox.worker import Handler
from healthforms.patient_requests.mail import (
    LINK_TEMPLATE,
    RECEIPT_TEMPLATE,
    REQUEST_LINK,
    REQUEST_RECEIPT,
    link_aad,
)
from healthforms.patient_requests.models import PatientRequest
from healthforms.patient_requests.service import (
    LIVE,
    RESOURCE_TYPE,
    clinic_name,
    move_to_sent,
    open_contact,
)
from healthforms.responses.models import ResponseRow


def _open_token(keys: KeyRing, message: OutboxMessage) -> str | None:
    raw = message.payload.get("token")
    if not isinstance(raw, dict):
        return None
    try:
        sealed = Sealed(
            ciphertext=base64.b64decode(str(raw["c"])),
            wrapped_key=base64.b64decode(str(raw["w"])),
            key_id=str(raw["k"]),
        )
        return open_sealed(keys, sealed, link_aad(str(message.payload["requestId"]))).decode()
    except (KeyError, ValueError, DecryptionFailed):
        return None


def _domain(base_url: str) -> str:
    return urlsplit(base_url).hostname or "healthforms.invalid"


def request_handlers(keys: KeyRing) -> dict[str, Handler]:
    """What the outbox worker does with this package's messages."""

    async def link_fan_out(session: AsyncSession, message: OutboxMessage, mail: bool) -> list[str]:
        return await patient_delivery(session, message, mail, LINK_TEMPLATE)

    async def link_compose(
        session: AsyncSession, delivery: Delivery, message: OutboxMessage, base_url: str
    ) -> EmailMessage | None:
        row = await session.get(PatientRequest, str(message.payload.get("requestId", "")))
        token = _open_token(keys, message)
        if row is None or token is None or row.state not in LIVE:
            return None  # cancelled, completed or reissued meanwhile: nothing to send
        contact = open_contact(keys, row)
        if contact is None or not contact.email:
            return None
        return messages.request_link(
            to=contact.email,
            clinic=await clinic_name(session, row.organization_id),
            link=f"{base_url}/r/{token}",
            expires_at=row.expires_at,
            delivery_id=delivery.id,
            domain=_domain(base_url),
        )

    async def link_sent(session: AsyncSession, delivery: Delivery, message: OutboxMessage) -> None:
        """The request is `sent` (by email), and the message forgets the token."""
        request_id = str(message.payload.get("requestId", ""))
        if await move_to_sent(session, request_id, message.organization_id, utcnow()):
            await append_in(
                session,
                keys,
                AuditEvent(
                    action=REQUEST_SENT,
                    organization_id=message.organization_id,
                    resource_type=RESOURCE_TYPE,
                    resource_id=request_id,
                    detail={"channel": "email"},
                ),
            )
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id)
            .values(payload={"requestId": request_id})
            .execution_options(synchronize_session=False)
        )

    async def receipt_fan_out(
        session: AsyncSession, message: OutboxMessage, mail: bool
    ) -> list[str]:
        return await patient_delivery(session, message, mail, RECEIPT_TEMPLATE)

    async def receipt_compose(
        session: AsyncSession, delivery: Delivery, message: OutboxMessage, base_url: str
    ) -> EmailMessage | None:
        row = await session.get(PatientRequest, str(message.payload.get("requestId", "")))
        response = await session.get(ResponseRow, str(message.payload.get("responseId", "")))
        if row is None or response is None:
            return None  # deleted since (an admin, the retention purge)
        contact = open_contact(keys, row)
        if contact is None or not contact.email:
            return None
        return messages.receipt(
            to=contact.email,
            clinic=await clinic_name(session, row.organization_id),
            confirmation=response.confirmation,
            delivery_id=delivery.id,
            domain=_domain(base_url),
        )

    return {
        REQUEST_LINK: Handler(fan_out=link_fan_out, compose=link_compose, sent=link_sent),
        REQUEST_RECEIPT: Handler(fan_out=receipt_fan_out, compose=receipt_compose),
    }
