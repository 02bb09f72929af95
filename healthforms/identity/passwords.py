"""Password hashing: argon2id through argon2-cffi, with parameters that can be raised.

Raise the parameters of PASSWORD_HASHER and every account is re-hashed at its next
successful sign-in (`check_needs_rehash`). An unknown email still costs one full verify
against a dummy hash, so the answer takes about as long whichever part was wrong.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from starlette.concurrency import run_in_threadpool

# OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): tens of milliseconds per sign-in,
# so a burst of logins (each a thread) cannot eat a small server's CPU and memory. Raise
# these (e.g. RFC 9106's 64 MiB, t=3, p=4) and hashes upgrade at each user's next login.
PASSWORD_HASHER = PasswordHasher(
    time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # argon2 is fed the whole string: bound the work per request

_dummy_hash: str | None = None


def hash_password(password: str, hasher: PasswordHasher = PASSWORD_HASHER) -> str:
    return hasher.hash(password)


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = PASSWORD_HASHER.hash("healthforms-dummy-password-for-timing")
    return _dummy_hash


def verify_password_sync(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches; with no hash, verify a dummy one and answer False."""
    if len(password) > MAX_PASSWORD_LENGTH:
        password = password[:MAX_PASSWORD_LENGTH]
        stored_hash = None
    try:
        if stored_hash is None:
            PASSWORD_HASHER.verify(_dummy(), password + "\x00")
            return False
        return PASSWORD_HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored_hash: str | None, password: str) -> bool:
    # argon2 holds the CPU for tens of milliseconds: keep it off the event loop.
    return await run_in_threadpool(verify_password_sync, stored_hash, password)


def needs_rehash(stored_hash: str, hasher: PasswordHasher = PASSWORD_HASHER) -> bool:
    try:
        return hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


async def hash_password_async(password: str) -> str:
    return await run_in_threadpool(hash_password, password)


def generated_password() -> str:
    """A new password to hand over once (a recovery reset): 16 URL-safe characters,
    96 random bits."""
    return secrets.token_urlsafe(12)
