"""What patient_requests/ puts in the outbox, inside the caller's transaction (the
emails themselves: notify.py)."""

from __future__ import annotations

import base64

from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.crypto.envelope import seal
from healthforms.crypto.keys import KeyRing
from healthforms.outbox.store import enqueue
from healthforms.patient_requests.models import PatientRequest

REQUEST_LINK = "request.link"  # outbox kind: email the patient their link
REQUEST_RECEIPT = "request.receipt"  # outbox kind: the receipt after they sent it
LINK_TEMPLATE = "request_link"
RECEIPT_TEMPLATE = "request_receipt"


def link_aad(request_id: str) -> bytes:
    return f"request-link:{request_id}".encode()


async def enqueue_link(
    session: AsyncSession, keys: KeyRing, row: PatientRequest, token: str
) -> None:
    """In the caller's transaction: email this request's link to its patient."""
    sealed = seal(keys, token.encode(), link_aad(row.id))
    await enqueue(
        session,
        row.organization_id,
        REQUEST_LINK,
        {
            "requestId": row.id,
            "token": {
                "c": base64.b64encode(sealed.ciphertext).decode(),
                "w": base64.b64encode(sealed.wrapped_key).decode(),
                "k": sealed.key_id,
            },
        },
    )


async def enqueue_receipt(
    session: AsyncSession, organization_id: str, request_id: str, response_id: str
) -> None:
    """In the response's transaction: a receipt, if the request has an email address."""
    await enqueue(
        session,
        organization_id,
        REQUEST_RECEIPT,
        {"requestId": request_id, "responseId": response_id},
    )
