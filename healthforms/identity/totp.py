"""TOTP second factor (RFC 6238 via pyotp), with the secret sealed at rest, its
enrolment QR code, and the single-use recovery codes that stand in for a lost phone.

The secret is encrypted with the envelope scheme of crypto/envelope.py, and its AAD
names the user, so a secret copied onto another user's row does not decrypt. A code is
accepted once: a replayed code (shoulder-surfed, or phished in real time) is refused.

Recovery codes: ten at enrolment (and at each regeneration), shown once, 16 symbols of
an unambiguous 31-letter alphabet (about 79 bits each). Only SHA-256(user id, code) is
stored (identity/models.py TotpRecoveryCode): at that entropy an unkeyed hash cannot be
reversed by guessing, and it does not depend on the master key, so rotating the key
keeps them valid. They are typed in the sign-in's `totp` field; one that is not six
digits is taken for a recovery code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

import pyotp
import segno

from healthforms.crypto.envelope import DecryptionFailed, Sealed, open_sealed, seal
from healthforms.crypto.keys import KeyRing
from healthforms.identity.models import User
from healthforms.redis.client import RedisService

ISSUER_NAME = "healthforms"
VALID_WINDOW = 1  # one 30 s step either side, for clock drift
USED_CODE_KEY = "totp:{{{user_id}}}:{counter}"
RECOVERY_CODE_COUNT = 10
RECOVERY_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i to misread
RECOVERY_CODE_LENGTH = 16  # 16 symbols of 31: about 79 bits


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


def qr_code_data_uri(uri: str) -> str:
    """The enrolment link as a QR code: an SVG `data:` URI drawn here (the page's CSP
    allows `img-src data:`), so the secret never goes to a third-party QR service."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=4, border=2, title="Setup QR code"))


def is_totp_code(code: str) -> bool:
    """Whether a sign-in's code is shaped like a TOTP code (else: a recovery code)."""
    return _is_six_digits(_compact(code))


def _is_six_digits(code: str) -> bool:
    # ASCII only: str.isdigit() also accepts other scripts' digits, which compare_digest
    # would refuse with a TypeError (a 500) instead of a plain "no".
    return len(code) == 6 and code.isascii() and code.isdigit()


def _compact(code: str) -> str:
    return code.strip().replace(" ", "").replace("-", "").lower()


def new_recovery_codes() -> list[str]:
    """Fresh recovery codes as the person sees them: `xxxx-xxxx-xxxx-xxxx`."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        codes.append("-".join(raw[i : i + 4] for i in range(0, RECOVERY_CODE_LENGTH, 4)))
    return codes


def recovery_code_hash(user_id: str, code: str) -> str | None:
    """The stored form of a recovery code of this user; None when `code` cannot be one
    (wrong length or letters): hostile input is answered, never raised."""
    compact = _compact(code)
    if len(compact) != RECOVERY_CODE_LENGTH or any(c not in RECOVERY_ALPHABET for c in compact):
        return None
    return hashlib.sha256(f"{user_id}:{compact}".encode()).hexdigest()


def matching_counter(secret: str, code: str | None, *, at: float | None = None) -> int | None:
    """The time step whose code equals `code` (within the window), or None."""
    if not code:
        return None
    code = code.strip().replace(" ", "")
    if not _is_six_digits(code):
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
