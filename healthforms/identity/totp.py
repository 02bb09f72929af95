"""TOTP second factor (RFC 6238 via pyotp), with the secret sealed at rest.

The secret is encrypted with the envelope scheme of crypto/envelope.py, and its AAD
names the user, so a secret copied onto another user's row does not decrypt. A code is
accepted once: a replayed code (shoulder-surfed, or phished in real time) is refused.
"""

from __future__ import annotations

import base64
import hmac
import json
import time

import pyotp

from healthforms.crypto.envelope import DecryptionFailed, Sealed, open_sealed, seal
from healthforms.crypto.keys import KeyRing
from healthforms.identity.models import User
from healthforms.redis.client import RedisService

ISSUER_NAME = "healthforms"
VALID_WINDOW = 1  # one 30 s step either side, for clock drift
USED_CODE_KEY = "totp:{{{user_id}}}:{counter}"


def totp_aad(user_id: str) -> bytes:
    return f"totp:{user_id}".encode()


def seal_secret(keys: KeyRing, user_id: str, secret: str) -> bytes:
    sealed = seal(keys, secret.encode("ascii"), totp_aad(user_id))
    return json.dumps(
        {
            "k": sealed.key_id,
            "w": base64.b64encode(sealed.wrapped_key).decode(),
            "c": base64.b64encode(sealed.ciphertext).decode(),
        }
    ).encode()


def open_secret(keys: KeyRing, user_id: str, blob: bytes | None) -> str | None:
    """The user's TOTP secret, or None when there is none or it does not decrypt."""
    if not blob:
        return None
    try:
        data = json.loads(blob)
        sealed = Sealed(
            ciphertext=base64.b64decode(data["c"]),
            wrapped_key=base64.b64decode(data["w"]),
            key_id=str(data["k"]),
        )
        return open_sealed(keys, sealed, totp_aad(user_id)).decode("ascii")
    except (DecryptionFailed, ValueError, KeyError, TypeError):
        return None


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, account_label: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account_label, issuer_name=ISSUER_NAME)


def matching_counter(secret: str, code: str | None, *, at: float | None = None) -> int | None:
    """The time step whose code equals `code` (within the window), or None."""
    if not code:
        return None
    code = code.strip().replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    now = time.time() if at is None else at
    current = int(now // totp.interval)
    for counter in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(counter), code):
            return int(counter)
    return None


async def verify_login_code(
    redis: RedisService, keys: KeyRing, user: User, code: str | None
) -> bool:
    """Whether `code` is a fresh, unused TOTP code of this user (single use)."""
    secret = open_secret(keys, user.id, user.totp_secret_encrypted)
    if secret is None:
        return False
    counter = matching_counter(secret, code)
    if counter is None:
        return False
    key = redis.key(USED_CODE_KEY.format(user_id=user.id, counter=counter))
    # SET NX: the first use of a code wins; the key outlives the code's window.
    stored = await redis.call(lambda r: r.set(key, b"1", nx=True, ex=30 * (2 * VALID_WINDOW + 2)))
    return bool(stored)
