"""Public-form nonces: single-use idempotency keys for patient submissions.

A nonce is `<id>.<expiry>.<mac>`, the MAC binding id and expiry to one form's public
id with a purpose-bound key. Redis holds the id's state under
`nonce:{<form_public_id>}:<nonce_id>` once it is submitted:

    (no key) issued  --claim-->  claiming:<digest>  --confirm-->  used:<digest>:<confirmation>

Issuing writes nothing: a nonce whose MAC and expiry hold and that has no key is
issued. So fetching a form costs no round trip and no key (a flood of page views
cannot fill Redis with nonces), and a flushed Redis changes nothing for unused nonces.

Redis only makes the common cases fast and precise (in-progress, resend, reuse).
Exactly-once storage rests on the database: the response row's nonce id is UNIQUE,
so a flushed or unreachable Redis can never let one nonce store two responses.
The states hold an HMAC digest of the answers, never the answers themselves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from healthforms.crypto.keys import KeyRing
from healthforms.redis.client import RedisService
from healthforms.redis.scripts import LuaScript

NONCE_KEY = "nonce:{{{public_id}}}:{nonce_id}"  # braces: a Cluster hash tag
NONCE_TTL_S = 30 * 60
# A claim that is never confirmed (the instance died mid-store) lapses after this;
# the database's UNIQUE nonce id then decides the next attempt.
CLAIM_LEASE_MS = 60_000
# A used nonce is remembered a little past its expiry, for late resends.
USED_GRACE_MS = 5 * 60 * 1000
MAX_NONCE_LEN = 200

ISSUED = "issued"
MISSING = "missing"
CLAIMING = "claiming:"
USED = "used:"

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,43}$")
_EXPIRY_RE = re.compile(r"^\d{9,12}$")

CLAIM_SCRIPT = LuaScript.beside(__file__, "nonce_claim.lua")
RELEASE_SCRIPT = LuaScript.beside(__file__, "nonce_release.lua")


@dataclass(frozen=True, slots=True)
class Nonce:
    public_id: str
    nonce_id: str
    expires_at: int  # unix seconds

    def remaining_ms(self, now: float | None = None) -> int:
        return max(0, int((self.expires_at - (now or time.time())) * 1000))

    def is_expired(self, now: float | None = None) -> bool:
        return (now or time.time()) >= self.expires_at


class ClaimState(NamedTuple):
    """The reply of nonce_claim.lua, by name: the state the claim found, so what the
    submission must do next."""

    kind: str  # issued | claiming | used; missing: Redis did not answer (set by the caller)
    digest: str = ""  # claiming, used: the digest of the answers the nonce was taken with
    confirmation: str = ""  # used: the stored response's confirmation code

    @classmethod
    def from_reply(cls, reply: bytes | str | None) -> ClaimState:
        if reply is None:
            return cls(MISSING)
        text = reply.decode("ascii", "replace") if isinstance(reply, bytes) else reply
        if text in (ISSUED, MISSING):
            return cls(text)
        if text.startswith(CLAIMING):
            return cls("claiming", digest=text[len(CLAIMING) :])
        if text.startswith(USED):
            digest, _, confirmation = text[len(USED) :].partition(":")
            return cls("used", digest=digest, confirmation=confirmation)
        return cls("claiming")  # unknown state: treat as busy, never as free

    @property
    def claimed(self) -> bool:
        """True when this caller now holds the claim and must store the response."""
        return self.kind in (ISSUED, MISSING)


class NonceRelease(NamedTuple):
    """The reply of nonce_release.lua, by name."""

    released: bool  # False: the key held no claim of this digest (lapsed, used, another's)

    @classmethod
    def from_reply(cls, reply: Any) -> NonceRelease:
        return cls(bool(reply))


def _mac(keys: KeyRing, public_id: str, nonce_id: str, expires_at: int) -> str:
    message = f"v1|{public_id}|{nonce_id}|{expires_at}".encode()
    digest = hmac.new(keys.hmac_key("nonce"), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def mint(keys: KeyRing, public_id: str, *, ttl_s: int = NONCE_TTL_S) -> tuple[str, Nonce]:
    """A new nonce string for a form, and what it stands for."""
    nonce = Nonce(public_id, secrets.token_urlsafe(16), int(time.time()) + ttl_s)
    mac = _mac(keys, public_id, nonce.nonce_id, nonce.expires_at)
    token = f"{nonce.nonce_id}.{nonce.expires_at}.{mac}"
    return token, nonce


def verify(keys: KeyRing, public_id: str, token: object) -> Nonce | None:
    """The nonce if `token` was minted by us for this form (expiry NOT checked), else None.

    Forged, truncated, or another form's nonces fail the MAC; hostile input of any
    shape yields None, never an exception.
    """
    if not isinstance(token, str) or len(token) > MAX_NONCE_LEN:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    nonce_id, expiry, mac = parts
    if not _ID_RE.match(nonce_id) or not _EXPIRY_RE.match(expiry):
        return None
    expires_at = int(expiry)
    expected = _mac(keys, public_id, nonce_id, expires_at)
    if not hmac.compare_digest(expected.encode(), mac.encode("ascii", "replace")):
        return None
    return Nonce(public_id, nonce_id, expires_at)


class NonceStore:
    """The Redis side of nonces. Every call is one round trip; every key has a TTL."""

    def __init__(self, redis: RedisService) -> None:
        self.redis = redis

    def key(self, nonce: Nonce) -> str:
        return self.redis.key(NONCE_KEY.format(public_id=nonce.public_id, nonce_id=nonce.nonce_id))

    async def claim(self, nonce: Nonce, digest: str) -> ClaimState:
        """Atomically take the nonce for storing (issued -> claiming)."""
        key = self.key(nonce)
        # Not idempotent: a replayed claim would find its own claim and report "busy".
        reply = await self.redis.pipelined(
            lambda r: CLAIM_SCRIPT(r, keys=[key], args=[digest, CLAIM_LEASE_MS])
        )
        return ClaimState.from_reply(reply)

    async def confirm(self, nonce: Nonce, digest: str, confirmation: str) -> None:
        """Mark the nonce used after the database commit (a plain SET: the row decides)."""
        key = self.key(nonce)
        ttl_ms = nonce.remaining_ms() + USED_GRACE_MS
        value = f"{USED}{digest}:{confirmation}"
        await self.redis.pipelined(
            lambda r: r.execute("SET", key, value, "PX", ttl_ms), idempotent=True
        )

    async def release(self, nonce: Nonce, digest: str) -> bool:
        """Give the claim back after a failed store, so the patient can retry.

        False when the key held no claim of this digest (it lapsed, or was used).
        """
        key = self.key(nonce)
        reply = await self.redis.pipelined(
            lambda r: RELEASE_SCRIPT(r, keys=[key], args=[digest]), idempotent=True
        )
        return NonceRelease.from_reply(reply).released
