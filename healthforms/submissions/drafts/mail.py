"""Emailing a patient the link to their saved draft, through the outbox (outbox/).

Asked for on the page after a save. The outbox message carries the address and the
link's token sealed together (envelope encryption, AAD = the draft id), committed with
the `draft.emailed` event; the worker drops them from the message once the email is
sent. The email names the clinic, never the form (its title can say what the visit is
about to whoever reads the inbox) and carries no answer.
"""

from __future__ import annotations

import base64
import json
from email.message import EmailMessage
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import utcnow
from healthforms.crypto.envelope import DecryptionFailed, Sealed, open_sealed, seal
from healthforms.crypto.keys import KeyRing
from healthforms.email import messages
from healthforms.identity.models import Organization
from healthforms.outbox.models import Delivery, OutboxMessage
from healthforms.outbox.store import enqueue, patient_delivery
from healthforms.outbox.worker import Handler
from healthforms.submissions.drafts.models import FormDraft

DRAFT_LINK = "draft.link"  # outbox kind: email a patient the link to their draft
LINK_TEMPLATE = "draft_link"


def link_aad(draft_id: str) -> bytes:
    return f"draft-link:{draft_id}".encode()


async def enqueue_link(
    session: AsyncSession, keys: KeyRing, row: FormDraft, token: str, email: str
) -> None:
    """In the caller's transaction: email this draft's link to `email`."""
    sealed = seal(keys, json.dumps({"email": email, "token": token}).encode(), link_aad(row.id))
    await enqueue(
        session,
        row.organization_id,
        DRAFT_LINK,
        {
            "draftId": row.id,
            "sealed": {
                "c": base64.b64encode(sealed.ciphertext).decode(),
                "w": base64.b64encode(sealed.wrapped_key).decode(),
                "k": sealed.key_id,
            },
        },
    )


def _open(keys: KeyRing, message: OutboxMessage) -> tuple[str, str] | None:
    """(email, token) of a message, or None (already sent and dropped, or unreadable)."""
    raw = message.payload.get("sealed")
    if not isinstance(raw, dict):
        return None
    try:
        sealed = Sealed(
            ciphertext=base64.b64decode(str(raw["c"])),
            wrapped_key=base64.b64decode(str(raw["w"])),
            key_id=str(raw["k"]),
        )
        plain = open_sealed(keys, sealed, link_aad(str(message.payload["draftId"])))
        opened = json.loads(plain.decode())
    except (KeyError, ValueError, DecryptionFailed):
        return None
    email, token = opened.get("email"), opened.get("token")
    if not isinstance(email, str) or not isinstance(token, str):
        return None
    return email, token


def draft_handlers(keys: KeyRing) -> dict[str, Handler]:
    """What the outbox worker does with this package's messages."""

    async def fan_out(session: AsyncSession, message: OutboxMessage, mail: bool) -> list[str]:
        return await patient_delivery(session, message, mail, LINK_TEMPLATE)

    async def compose(
        session: AsyncSession, delivery: Delivery, message: OutboxMessage, base_url: str
    ) -> EmailMessage | None:
        row = await session.get(FormDraft, str(message.payload.get("draftId", "")))
        opened = _open(keys, message)
        if row is None or opened is None or row.expires_at <= utcnow():
            return None  # sent, expired or discarded meanwhile: nothing to send
        email, token = opened
        clinic = (
            await session.execute(
                select(Organization.name).where(Organization.id == row.organization_id)
            )
        ).scalar_one_or_none()
        return messages.draft_link(
            to=email,
            clinic=clinic or "your clinic",
            link=f"{base_url}/f/{row.public_id}#draft={token}",
            expires_at=row.expires_at,
            delivery_id=delivery.id,
            domain=urlsplit(base_url).hostname or "healthforms.invalid",
        )

    async def sent(session: AsyncSession, delivery: Delivery, message: OutboxMessage) -> None:
        """The message forgets the address and the token once the email is gone."""
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id)
            .values(payload={"draftId": str(message.payload.get("draftId", ""))})
            .execution_options(synchronize_session=False)
        )

    return {DRAFT_LINK: Handler(fan_out=fan_out, compose=compose, sent=sent)}
