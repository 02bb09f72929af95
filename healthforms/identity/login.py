"""Signing in: password (with per-account lock-out, TOTP and re-hashing) or an OIDC ID
token, then a brand-new session with its first CSRF token.

Routes (identity/routes/) parse and answer; every decision of a sign-in is made here:
- the same 401 body and one full argon2 verify for an unknown account (a dummy hash),
  so neither the answer nor its timing tells whether an email has an account;
- a per-account failure count in Redis (login_failure.lua, keyed by an HMAC of the
  email: no email in Redis) locks the account after LOGIN_FAILURE_LIMIT failures, so
  guesses spread over many IPs still meet one limit;
- a TOTP code is single use (identity/totp.py);
- a hash made with weaker argon2 parameters is upgraded while the plaintext is here;
- Redis down: sign-in answers 503, since a session Redis never saw would be refused
  once it is back.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit import events
from healthforms.audit.events import Outcome
from healthforms.audit.recorder import Auditor
from healthforms.errors import InvalidCredentials, ServiceUnavailable, ValidationFailed
from healthforms.identity import service, totp
from healthforms.identity.models import User
from healthforms.identity.passwords import hash_password_async, needs_rehash, verify_password
from healthforms.identity.schemas import LoginBody
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

FAILURE_SCRIPT = LuaScript.beside(__file__, "login_failure.lua")


class FailureCount(NamedTuple):
    """The reply of login_failure.lua."""

    failures: int
    locked_now: bool  # this failure reached the limit

    @classmethod
    def from_reply(cls, reply: list[int]) -> FailureCount:
        return cls(int(reply[0]), int(reply[1]) == 1)


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
            return SignedIn(await self._oidc(body.id_token), "oidc", mfa=False)
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

    async def reauthentication_failed(self, user: User) -> InvalidCredentials:
        """A wrong current password (password change): it counts toward the account's
        lock-out like a failed sign-in, so a held session cannot guess it at leisure."""
        key = self._failure_key(user.email)
        try:
            locked = await self._is_locked(key)
        except RedisUnavailable:
            raise ServiceUnavailable() from None
        if not locked:
            await self._count_failure(key, user)
        return await self.failed(user, "wrong current password")

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
        try:
            locked = await self._is_locked(key)
        except RedisUnavailable:
            raise ServiceUnavailable() from None
        user = await service.find_user_by_email(self.db, email)
        # Always one full argon2 verify (a dummy hash for unknown accounts): same timing.
        password_ok = await verify_password(user.password_hash if user else None, body.password)
        reason = ""
        if locked:
            reason = "account locked"
        elif user is None:
            reason = "unknown account"
        elif not password_ok:
            reason = "wrong password"
        elif user.disabled:
            reason = "disabled"
        mfa = False
        if not reason and user is not None and user.totp_enabled:
            try:
                code_ok = await totp.verify_login_code(
                    self.state.redis, self.state.keys, user, body.totp
                )
            except RedisUnavailable:
                raise ServiceUnavailable() from None
            if not code_ok:
                reason = "wrong totp"
            mfa = True
        if reason:
            if not locked:
                await self._count_failure(key, user)
            raise await self.failed(user, reason)
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

    def _failure_key(self, email: str) -> str:
        # Keyed hash: names an account without putting an email (PHI-adjacent) in Redis.
        digest = hmac.new(
            self.state.keys.hmac_key("login-failures"), email.encode(), hashlib.sha256
        )
        tag = b64url(digest.digest()[:16])
        return self.state.redis.key(LOGIN_FAILURE_KEY.format(account=tag))

    async def _is_locked(self, key: str) -> bool:
        count = await self.state.redis.call(lambda r: r.get(key), idempotent=True)
        return count is not None and int(count) >= LOGIN_FAILURE_LIMIT

    async def _count_failure(self, key: str, user: User | None) -> None:
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
            return
        if FailureCount.from_reply(reply).locked_now:
            await self._record_about(events.AUTH_ACCOUNT_LOCKED, Outcome.DENIED, user)

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

    async def _oidc(self, id_token: str) -> User:
        verifier = self.state.oidc
        if verifier is None:
            raise await self.failed(None, "oidc not configured")
        try:
            claims = await verifier.verify(id_token)
        except OidcRejected as exc:
            raise await self.failed(None, f"oidc: {exc}") from None
        if not await self._first_use(id_token, claims):
            raise await self.failed(None, "oidc: token replayed")
        email = verified_email(claims)
        user = await service.find_user_by_email(self.db, email) if email else None
        if user is None:
            raise await self.failed(None, "oidc: no account for a verified email")
        if user.disabled:
            raise await self.failed(user, "disabled")
        return user
