"""Standard Webhooks signatures (v1, HMAC-SHA256), our own few lines: the reference
library (`standardwebhooks`) verifies them in the tests.

    webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>

The key is the base64-decoded part of the secret after `whsec_`. While a rotated-out
secret is still valid, the header carries one signature per secret, space-separated;
a receiver accepts the message if any one matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24 to 64


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(PREFIX) :], validate=True)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets_: Iterable[str], message_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets_)


def message_id_for(delivery_id: str) -> str:
    """The webhook-id of a delivery (one message to one endpoint): the same on every
    attempt and after a redelivery, so receivers de-duplicate on it."""
    return "msg_" + hashlib.sha256(delivery_id.encode()).hexdigest()[:32]
