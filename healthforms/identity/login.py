"""Signing in: password (with per-account lock-out, TOTP and re-hashing) or an OIDC ID
token, then a brand-new session with its first CSRF token.

Routes (identity/routes/) parse and answer; every decision of a sign-in is made here:
- emails are unique per organisation, so one email may name accounts of several clinics:
  the password is verified against each of them (at most SIGN_IN_CANDIDATES_MAX, oldest
  first) and the one it opens signs in. Every attempt verifies at least
  SIGN_IN_HASHES_MIN hashes (dummy ones for missing accounts), run side by side, so
  neither the answer nor its timing tells whether, or in how many clinics, an email has
  an account (up to that many). When the same password opens accounts of several
  clinics, the answer is 409 `organization_required` with those clinics, and the client
  resends with `organizationId`;
- the same 401 `invalid_credentials` for a wrong email, password, code or token;
- a per-account failure count in Redis (login_failure.lua, keyed by an HMAC of the
  email: no email in Redis) locks the email after LOGIN_FAILURE_LIMIT failures, so
  guesses spread over many IPs still meet one limit. Unknown emails are counted and
  locked alike, so the lock, which is announced (429 `account_locked`, with the real
  remaining wait from the key's TTL), says nothing about whether an account exists;
- two-step sign-in: only once email and password were right for an account with TOTP
  and no code was sent, the answer is 401 `totp_required` (the page then asks for the
  code; the client keeps the password and resends it with the code: no server state).
  A wrong code is `invalid_credentials` and counts toward the lock. A TOTP code is
  single use (identity/totp.py); a recovery code in the same field is consumed once;
- OIDC: the ID token proves the first factor; an account with TOTP still needs its
  code (or a recovery code) in the same body as `idToken`. An email naming accounts of
  several clinics signs in none of them (OIDC has no password to tell them apart);
- re-authentication (password change, TOTP enrolment and removal, new recovery codes)
  goes through `reauthenticate`: the lock applies, and a wrong password counts;
- a hash made with weaker argon2 parameters is upgraded while the plaintext is here;
- Redis down: sign-in answers 503, since a session Redis never saw would be refused
  once it is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit import events
from healthforms.audit.events import Outcome
from healthforms.audit.recorder import Auditor
from healthforms.crypto.keys import KeyRing
from healthforms.errors import (
    Conflict,
    HealthformsError,
    InvalidCredentials,
    ServiceUnavailable,
    ValidationFailed,
)
from healthforms.identity import service, totp
from healthforms.identity.models import User
from healthforms.identity.passwords import hash_password_async, needs_rehash, verify_password
from healthforms.identity.schemas import LoginBody
from healthforms.redis.client import RedisService
from healthforms.redis.errors import RedisUnavailable
from healthforms.redis.scripts import LuaScript
from healthforms.security.context import RequestContext
from healthforms.security.oidc import LEEWAY_S, OidcRejected, verified_email
from healthforms.security.principal import Role
from healthforms.security.sessions import SessionInfo, b64url
from healthforms.state import AppState

log = structlog.get_logger("healthforms.identity")

LOGIN_FAILURE_LIMIT = 10
LOGIN_FAILURE_WINDOW_S = 15 * 60
LOGIN_LOCKOUT_S = 15 * 60
LOGIN_FAILURE_KEY = "loginfail:{{{account}}}"
OIDC_SEEN_KEY = "oidc:seen:{{{token}}}"  # an accepted ID token, until it expires
# Password sign-in: accounts tried per email, and hashes verified per attempt at least.
SIGN_IN_CANDIDATES_MAX = 10
SIGN_IN_HASHES_MIN = 3

FAILURE_SCRIPT = LuaScript.beside(__file__, "login_failure.lua")


class FailureCount(NamedTuple):
    """The reply of login_failure.lua."""

    failures: int
    locked_now: bool  # this failure reached the limit

    @classmethod
    def from_reply(cls, reply: list[int]) -> FailureCount:
        return cls(int(reply[0]), int(reply[1]) == 1)


def wait_text(seconds: int) -> str:
    """`45 seconds`, `1 minute`, `14 minutes`: a wait as a person reads it (rounded up)."""
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class AccountLocked(HealthformsError):
    """Too many failed sign-ins for one email: the real remaining wait, from the lock's TTL."""

    status_code, code = 429, "account_locked"

    def __init__(self, wait_s: int) -> None:
        wait_s = max(1, wait_s)
        super().__init__(
            f"Too many failed sign-ins with this email address. Try again in {wait_text(wait_s)}.",
            extra={"retryAfter": wait_s},
            headers={"Retry-After": str(wait_s)},
        )


class TotpRequired(HealthformsError):
    """Email and password were right; the account has two-step sign-in and no code came."""

    status_code, code = 401, "totp_required"
    message = "Enter the code from your authenticator app, or one of your recovery codes."


class OrganizationRequired(Conflict):
    """The password opens accounts of several clinics: the client names one."""

    code = "organization_required"
    message = "This email and password open accounts at more than one clinic. Choose one."


def failure_key(redis: RedisService, keys: KeyRing, email: str) -> str:
    """The failure-count key of an email (login_failure.lua): a keyed hash names it, so no
    email (PHI-adjacent) reaches Redis."""
    digest = hmac.new(keys.hmac_key("login-failures"), email.encode(), hashlib.sha256)
    tag = b64url(digest.digest()[:16])
    return redis.key(LOGIN_FAILURE_KEY.format(account=tag))


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Who signed in, and how."""

    user: User
    auth_method: str  # password | oidc
    mfa: bool


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A new session: the cookie to set, its first CSRF token, and its metadata."""

    cookie_value: str
    csrf_token: str
    info: SessionInfo


class LoginService:
    def __init__(self, state: AppState, db: AsyncSession, auditor: Auditor) -> None:
        self.state = state
        self.db = db
        self.auditor = auditor

    async def sign_in(self, body: LoginBody) -> SignedIn:
        """Check the credentials of a sign-in request; InvalidCredentials (401) if not."""
        if body.id_token:
            user, mfa = await self._oidc(body.id_token, body.totp)
            return SignedIn(user, "oidc", mfa)
        user, mfa = await self._password(body)
        return SignedIn(user, "password", mfa)

    async def start_session(
        self, user: User, *, auth_method: str, mfa: bool, context: RequestContext
    ) -> IssuedSession:
        """A brand-new session (never the id a client brought) and its first CSRF token."""
        try:
            cookie_value, cookie, info = await self.state.sessions.create(
                user_id=user.id,
                organization_id=user.organization_id,
                role=Role(user.role),
                auth_method=auth_method,
                mfa=mfa,
                ip=context.ip,
                user_agent=context.user_agent,
            )
            token = await self.state.csrf.issue(user.id, cookie.session_hash)
        except RedisUnavailable:
            # A session Redis never saw would be refused once Redis is back: refuse now.
            raise ServiceUnavailable() from None
        if token is None:  # pragma: no cover - the session was created one call earlier
            raise ServiceUnavailable()
        return IssuedSession(cookie_value, token, info)

    async def reauthenticate(self, user: User, password: str) -> None:
        """Check the signed-in user's current password before a change of their
        credentials; InvalidCredentials (401) or AccountLocked (429) if not.

        A held session (an unlocked screen, a stolen cookie) must not guess it at
        leisure: the account's lock applies here first, and a wrong password counts
        toward it exactly like a failed sign-in."""
        key = self._failure_key(user.email)
        await self._refuse_if_locked(key)
        if await verify_password(user.password_hash, password):
            return
        await self._fail(key, user, "wrong current password")

    async def clear_failures(self, email: str) -> None:
        """Forget an email's failed sign-ins (its lock too): after a recovery reset."""
        key = self._failure_key(email)
        try:
            await self.state.redis.call(lambda r: r.delete(key), idempotent=True)
        except RedisUnavailable:
            log.warning("login_failures_not_cleared")

    async def failed(self, user: User | None, reason: str) -> InvalidCredentials:
        """Log and audit a failed sign-in (or re-authentication); the error to raise."""
        log.info("login_failed", reason=reason, user_id=user.id if user else None)
        await self._record_about(events.AUTH_LOGIN_FAILED, Outcome.FAILURE, user)
        return InvalidCredentials()

    async def _record_about(self, action: str, outcome: Outcome, user: User | None) -> None:
        """Audit an event about the account a sign-in named (nobody is signed in yet)."""
        await self.auditor.record(
            action,
            outcome=outcome,
            resource_type="user" if user else None,
            resource_id=user.id if user else None,
            actor_id=user.id if user else None,
            organization_id=user.organization_id if user else None,
        )

    # Password ------------------------------------------------------------------------

    async def _password(self, body: LoginBody) -> tuple[User, bool]:
        if not body.email or body.password is None:
            missing = "Field required"
            fields = {}
            if not body.email:
                fields["email"] = missing
            if body.password is None:
                fields["password"] = missing
            raise ValidationFailed(fields)
        email = body.email.strip().lower()
        key = self._failure_key(email)
        await self._refuse_if_locked(key)
        candidates = await service.find_users_by_email(self.db, email, limit=SIGN_IN_CANDIDATES_MAX)
        if body.organization_id is not None:
            candidates = [c for c in candidates if c.organization_id == body.organization_id]
        opened = await self._opened_by(candidates, body.password)
        active = [u for u in opened if not u.disabled]
        user: User | None = None
        reason = ""
        if not opened:
            reason = "unknown account" if not candidates else "wrong password"
            user = candidates[0] if len(candidates) == 1 else None
        elif not active:
            reason, user = "disabled", opened[0]
        elif len(active) > 1:
            # The password was right for each of them: naming their clinics tells the
            # caller nothing they could not sign in to see.
            names = await service.organization_names(self.db, [u.organization_id for u in active])
            raise OrganizationRequired(
                extra={
                    "organizations": [
                        {"id": u.organization_id, "name": names.get(u.organization_id, "")}
                        for u in active
                    ]
                }
            )
        else:
            user = active[0]
        mfa = False
        if not reason and user is not None and user.totp_enabled:
            if not body.totp:
                raise TotpRequired()
            if not await self._second_factor(user, body.totp):
                reason = "wrong totp"
            mfa = True
        if reason:
            await self._fail(key, user, reason)
        assert user is not None and user.password_hash is not None
        try:
            await self.state.redis.call(lambda r: r.delete(key), idempotent=True)
        except RedisUnavailable:
            pass
        if needs_rehash(user.password_hash):
            # The hasher's parameters were raised since this hash was made: upgrade it
            # now, while we hold the plaintext.
            user.password_hash = await hash_password_async(body.password)
            await self.db.commit()
        return user, mfa

    async def _opened_by(self, candidates: list[User], password: str) -> list[User]:
        """The candidates this password opens. At least SIGN_IN_HASHES_MIN verifies run
        (dummy hashes for the missing), side by side: the time taken does not tell how
        many accounts, if any, have this email."""
        hashes: list[str | None] = [c.password_hash for c in candidates]
        hashes += [None] * (SIGN_IN_HASHES_MIN - len(hashes))
        results = await asyncio.gather(*(verify_password(h, password) for h in hashes))
        return [c for c, ok in zip(candidates, results, strict=False) if ok]

    async def _second_factor(self, user: User, code: str) -> bool:
        """A fresh TOTP code of the user, or one of their unused recovery codes (consumed)."""
        if totp.is_totp_code(code):
            try:
                return await totp.verify_login_code(self.state.redis, self.state.keys, user, code)
            except RedisUnavailable:
                raise ServiceUnavailable() from None
        code_hash = totp.recovery_code_hash(user.id, code)
        if code_hash is None or not await service.use_recovery_code(self.db, user.id, code_hash):
            return False
        await self._record_about(events.AUTH_RECOVERY_CODE_USED, Outcome.SUCCESS, user)
        return True

    async def _fail(self, key: str, user: User | None, reason: str) -> NoReturn:
        """Count a failure toward the lock, audit it, raise: AccountLocked when this one
        locked the email (the person learns at once how long to wait), else 401."""
        locked_now = await self._count_failure(key, user)
        error = await self.failed(user, reason)
        if locked_now:
            raise AccountLocked(LOGIN_LOCKOUT_S)
        raise error

    def _failure_key(self, email: str) -> str:
        return failure_key(self.state.redis, self.state.keys, email)

    async def _refuse_if_locked(self, key: str) -> None:
        try:
            wait_ms = await self._locked_for_ms(key)
        except RedisUnavailable:
            raise ServiceUnavailable() from None
        if wait_ms > 0:
            await self.failed(None, "account locked")
            raise AccountLocked(math.ceil(wait_ms / 1000))

    async def _locked_for_ms(self, key: str) -> int:
        """How long this email stays locked, from its key's TTL (0: not locked)."""
        count = await self.state.redis.call(lambda r: r.get(key), idempotent=True)
        if count is None or int(count) < LOGIN_FAILURE_LIMIT:
            return 0
        ttl_ms = int(await self.state.redis.call(lambda r: r.pttl(key), idempotent=True))
        if ttl_ms == -2:  # expired in between
            return 0
        return ttl_ms if ttl_ms > 0 else LOGIN_LOCKOUT_S * 1000

    async def _count_failure(self, key: str, user: User | None) -> bool:
        """Count one failure; whether it locked the email just now."""
        try:
            reply = await self.state.redis.pipelined(
                lambda r: FAILURE_SCRIPT(
                    r,
                    keys=[key],
                    args=[
                        LOGIN_FAILURE_LIMIT,
                        LOGIN_FAILURE_WINDOW_S * 1000,
                        LOGIN_LOCKOUT_S * 1000,
                    ],
                )
            )
        except RedisUnavailable:
            return False
        if FailureCount.from_reply(reply).locked_now:
            await self._record_about(events.AUTH_ACCOUNT_LOCKED, Outcome.DENIED, user)
            return True
        return False

    # OIDC ----------------------------------------------------------------------------

    async def _first_use(self, id_token: str, claims: dict[str, Any]) -> bool:
        """Whether this ID token signs in for the first time. Each accepted token (its
        `jti`, or the whole token without one) is remembered until it expires, so a
        captured token cannot be replayed. Only a keyed hash goes to Redis."""
        jti = claims.get("jti")
        seen = jti if isinstance(jti, str) and jti else id_token
        digest = hmac.new(
            self.state.keys.hmac_key("oidc-replay"), seen.encode(), hashlib.sha256
        ).digest()
        key = self.state.redis.key(OIDC_SEEN_KEY.format(token=b64url(digest[:16])))
        exp = claims.get("exp")  # required and checked by the verifier
        expires = float(exp) if isinstance(exp, int | float) else time.time()
        ttl_ms = max(1_000, int((expires + LEEWAY_S - time.time()) * 1000))
        try:
            first = await self.state.redis.call(
                lambda r: r.set(key, b"1", nx=True, px=ttl_ms), idempotent=False
            )
        except RedisUnavailable:
            # No session can be created without Redis either.
            raise ServiceUnavailable() from None
        return bool(first)

    async def _oidc(self, id_token: str, code: str | None) -> tuple[User, bool]:
        verifier = self.state.oidc
        if verifier is None:
            raise await self.failed(None, "oidc not configured")
        try:
            claims = await verifier.verify(id_token)
        except OidcRejected as exc:
            raise await self.failed(None, f"oidc: {exc}") from None
        email = verified_email(claims)
        candidates = (
            await service.find_users_by_email(self.db, email, limit=SIGN_IN_CANDIDATES_MAX)
            if email
            else []
        )
        active = [u for u in candidates if not u.disabled]
        if not candidates:
            raise await self.failed(None, "oidc: no account for a verified email")
        if len(active) > 1:
            # Several clinics have an account with this email, and a token carries no
            # password to tell them apart: sign in to none rather than guess.
            raise await self.failed(None, "oidc: the email names accounts of several clinics")
        if not active:
            raise await self.failed(candidates[0], "disabled")
        user = active[0]
        mfa = False
        if user.totp_enabled:
            # Our TOTP is the account's second factor however the first was proven. Asked
            # before the token is marked used, so the client can resend it with the code.
            if not code:
                raise TotpRequired()
            key = self._failure_key(user.email)
            await self._refuse_if_locked(key)
            if not await self._second_factor(user, code):
                await self._fail(key, user, "oidc: wrong totp")
            mfa = True
        if not await self._first_use(id_token, claims):
            raise await self.failed(None, "oidc: token replayed")
        return user, mfa
