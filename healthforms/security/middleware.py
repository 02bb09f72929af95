"""The authenticated hot path, as one plain ASGI middleware (no BaseHTTPMiddleware).

For a request bearing a session cookie it makes exactly ONE Redis round trip: one
EVALSHA (gcra.lua + session_check.lua) that checks and touches the session, takes one
token from the user's `api` bucket (API routes) and, for unsafe methods, checks that the
CSRF token is live for this session. All three keys carry the `{<user_id>}` hash tag.

On success a Principal goes into `scope["state"]["principal"]` and the session's
metadata into `scope["state"]["session"]`; routes never read the cookie themselves.
Requests without a session cookie never reach Redis here (and so create no keys).
Garbage, truncated, oversized or forged cookies simply yield no principal: the route's
dependency answers 401 (never 500).

Redis down: a cookie whose HMAC holds is accepted up to its absolute lifetime (and
refused if the user was disabled or signed out everywhere since, per the database), and
CSRF tokens are checked by HMAC alone, unless HEALTHFORMS_SESSION_FALLBACK=deny, and the
`api` bucket is kept per process by the shared RateLimiter (same GCRA). Every such
decision is counted in healthforms_degraded_decisions_total and logged (no token).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthforms.audit.events import CSRF_REJECTED, Outcome, RequestContext
from healthforms.config import SessionFallback, Settings
from healthforms.errors import CsrfRejected, HealthformsError, RateLimited
from healthforms.health.metrics import Metrics
from healthforms.redis.client import RedisUnavailable
from healthforms.redis.scripts import LuaScript
from healthforms.security import csrf
from healthforms.security.hot_routes import HOT_ROUTES, HotRequest, HotRoute, render_json
from healthforms.security.principal import Principal
from healthforms.security.ratelimit import (
    DECISIONS_STATE,
    RateLimiter,
    RateVerdict,
    bucket_key,
    decision_from_reply,
    emission_us,
    rate_limit_headers_for,
    remember_decisions,
    script_args,
)
from healthforms.security.sessions import (
    SESSION_KEY,
    SessionCookie,
    SessionInfo,
    decode_cookie,
    now_ms,
)

log = structlog.get_logger("healthforms.security")

CHECK_SCRIPT = LuaScript.beside(__file__, "gcra.lua", "session_check.lua")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_PATH = "/api/auth/session-login"
# Static assets and probes never need a session: no round trip for them. The public
# form endpoints and pages are for patients and protected by their nonce, not a session:
# a staff member's cookie (previewing their own form) must neither help nor hinder there.
_SKIP_PREFIXES = ("/static/", "/favicon.ico", "/health", "/metrics", "/api/public/", "/f/")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_DEGRADED_CACHE_S = 5.0
_MAX_COOKIE_HEADER = 8192
_VERIFIED_COOKIES_MAX = 10_000


async def send_error(
    send: Send, error: HealthformsError, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with the contract's JSON error body (the edge middleware adds the rest)."""
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *[(k.lower().encode(), v.encode()) for k, v in error.headers.items()],
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Headers:
    """The few request headers the hot path needs, read in one pass."""

    __slots__ = ("content_type", "cookie", "csrf_token", "host", "origin", "sec_fetch_site")

    def __init__(self, scope: Scope) -> None:
        self.cookie: str | None = None
        self.origin: str | None = None
        self.sec_fetch_site: str | None = None
        self.csrf_token: str | None = None
        self.host: str | None = None
        self.content_type: str | None = None
        for key, value in scope.get("headers", ()):
            if key == b"cookie":
                text = value.decode("latin-1")
                self.cookie = text if self.cookie is None else f"{self.cookie}; {text}"
            elif key == b"origin":
                self.origin = value.decode("latin-1")
            elif key == b"sec-fetch-site":
                self.sec_fetch_site = value.decode("latin-1")
            elif key == csrf.HEADER:
                self.csrf_token = value.decode("latin-1")
            elif key == b"host":
                self.host = value.decode("latin-1")
            elif key == b"content-type":
                self.content_type = value.decode("latin-1")


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """The first cookie called `name`, or None."""
    if not cookie_header or len(cookie_header) > _MAX_COOKIE_HEADER:
        return None
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


class SessionMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.cookie_name = settings.session_cookie_name
        self.api_spec = settings.rate("api")
        self.api_args = script_args(self.api_spec)
        self.api_emission_us = emission_us(self.api_spec)
        self.idle_ms = settings.session_idle_timeout * 1000
        self.max_age_ms = settings.session_max_age * 1000
        self.public_origin = (
            csrf.normalise_origin(settings.public_url) if settings.public_url else None
        )
        self.deny_when_degraded = settings.session_fallback is SessionFallback.DENY
        self._verified: dict[str, tuple[bytes, SessionCookie]] = {}
        # user id -> (checked at, refuse cookies issued before this ms or None, disabled)
        self._degraded_users: dict[str, tuple[float, int | None, bool]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path.startswith(_SKIP_PREFIXES):
            await self.app(scope, receive, send)
            return
        method: str = scope.get("method", "GET")
        unsafe = method in UNSAFE_METHODS
        headers = _Headers(scope)
        raw_cookie = cookie_value(headers.cookie, self.cookie_name)
        is_login = path == LOGIN_PATH

        if unsafe and (raw_cookie is not None or is_login):
            own = self.public_origin or csrf.request_origin(
                scope.get("scheme", "http"), headers.host, scope.get("server")
            )
            reason = csrf.origin_rejection(
                sec_fetch_site=headers.sec_fetch_site, origin=headers.origin, own_origin=own
            )
            if reason is not None:
                await self._reject_csrf(scope, send, reason, None)
                return

        # The login ignores any cookie the client brings (no session fixation).
        if raw_cookie is None or is_login:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.hf
        cookie = self._decode(state.keys.hmac_key("session"), raw_cookie)
        if cookie is None:
            await self.app(scope, receive, send)
            return

        checked: csrf.CheckedToken | None = None
        if unsafe:
            token = headers.csrf_token
            if token is None and headers.content_type is not None:
                token, receive = await _form_token(scope, receive, headers.content_type)
            checked = csrf.check_token(state.keys.hmac_key("csrf"), cookie.session_hash, token)
            if checked is None:
                reason = csrf.REASON_MISSING if not token else csrf.REASON_MALFORMED
                await self._reject_csrf(scope, send, reason, cookie)
                return

        is_api = path.startswith("/api/")
        try:
            reply = await state.redis.pipelined(
                lambda r: self._check(r, state.redis.prefix, cookie, checked, is_api)
            )
        except RedisUnavailable:
            await self._degraded(scope, receive, send, state, cookie, checked)
            return

        status = int(reply[0])
        if status == 0:
            await self.app(scope, receive, send)
            return
        scope_state = scope.setdefault("state", {})
        if is_api:
            decision = decision_from_reply("api", self.api_spec, reply[5:9], cookie.user_id)
            verdict = RateVerdict((decision,), decision.allowed)
            # The rate-limit middleware (outside this one) renders them as headers.
            remember_decisions(scope_state, verdict)
            if status == 2:
                await self._refuse_rate(scope, send, verdict, cookie)
                return
        if status == 3:
            await self._reject_csrf(scope, send, csrf.REASON_NOT_LIVE, cookie)
            return

        principal = scope_state["principal"] = _principal(cookie, degraded=False)
        session = scope_state["session"] = SessionInfo(
            id=cookie.session_hash,
            created_ms=int(reply[1]),
            last_seen_ms=int(reply[2]),
            ip=_text(reply[3]),
            user_agent=_text(reply[4]),
            auth_method=cookie.auth_method,
            expires_in_ms=int(reply[9]),
        )
        hot = HOT_ROUTES.get(method, path)
        if hot is not None:
            await _answer_hot(scope, send, hot, HotRequest(scope, state, principal, session))
            return
        await self.app(scope, receive, send)

    def _decode(self, key: bytes, raw_cookie: str) -> SessionCookie | None:
        """decode_cookie, remembering cookies whose HMAC already held (a browser sends the
        same cookie with every request). Only verified cookies are kept, under the key
        that verified them, so the cache cannot admit anything decode_cookie would not;
        whether the session still lives is asked of Redis every time."""
        cached = self._verified.get(raw_cookie)
        if cached is not None and cached[0] is key:
            return cached[1]
        cookie = decode_cookie(key, raw_cookie)
        if cookie is not None:
            if len(self._verified) >= _VERIFIED_COOKIES_MAX:
                self._verified.clear()
            self._verified[raw_cookie] = (key, cookie)
        return cookie

    async def _refuse_rate(
        self, scope: Scope, send: Send, verdict: RateVerdict, cookie: SessionCookie
    ) -> None:
        """429 with Retry-After; counted, logged and audited by the shared limiter."""
        scope_state = scope.get("state", {})
        limiter = _limiter(scope)
        if limiter is not None:
            ua = _header(scope, b"user-agent")
            await limiter.record_exceeded(
                verdict,
                RequestContext(
                    ip=scope_state.get("client_ip"),
                    user_agent=ua[:256] if ua else None,
                    request_id=scope_state.get("request_id"),
                ),
                actor_id=cookie.user_id,
                organization_id=cookie.organization_id,
            )
        else:  # pragma: no cover - the limiter registers itself at start-up
            self.metrics.ratelimit_rejections.labels("api").inc()
        decisions = scope_state.get(DECISIONS_STATE) or list(verdict.decisions)
        await send_error(send, RateLimited(), rate_limit_headers_for(decisions))

    def _check(
        self,
        redis: Any,
        prefix: str,
        cookie: SessionCookie,
        checked: csrf.CheckedToken | None,
        is_api: bool,
    ) -> Awaitable[Any]:
        user_id = cookie.user_id
        session_hash = cookie.session_hash
        keys = [
            prefix + SESSION_KEY.format(user_id=user_id, session_hash=session_hash),
            bucket_key(prefix, user_id, "api"),
        ]
        if checked is not None:
            keys.append(prefix + csrf.CSRF_KEY.format(user_id=user_id, token_id=checked.token_id))
        args = [
            self.idle_ms,
            self.max_age_ms,
            session_hash,
            1 if is_api else 0,
            *self.api_args,
            1 if checked is not None else 0,
        ]
        return CHECK_SCRIPT(redis, keys=keys, args=args)

    async def _degraded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        state: Any,
        cookie: SessionCookie,
        checked: csrf.CheckedToken | None,
    ) -> None:
        """Redis is unavailable: judge the signed cookie on its own, or refuse."""
        decision = "allow"
        if self.deny_when_degraded:
            decision = "deny"
        elif now_ms() - cookie.issued_ms >= self.max_age_ms:
            decision = "deny"
        elif not await self._user_still_valid(state, cookie):
            decision = "deny"
        self.metrics.degraded_decisions.labels("session", decision).inc()
        if checked is not None:
            self.metrics.degraded_decisions.labels("csrf", decision).inc()
        log.warning(
            "degraded_decision",
            feature="session",
            decision=decision,
            user_id=cookie.user_id,
            session_id=cookie.session_hash,
            csrf_checked=checked is not None,
            request_id=scope.get("state", {}).get("request_id"),
        )
        if decision == "allow":
            now = now_ms()
            scope_state = scope.setdefault("state", {})
            scope_state["principal"] = _principal(cookie, degraded=True)
            scope_state["session"] = SessionInfo(
                id=cookie.session_hash,
                created_ms=cookie.issued_ms,
                last_seen_ms=now,
                ip="",
                user_agent="",
                auth_method=cookie.auth_method,
                expires_in_ms=max(0, cookie.issued_ms + self.max_age_ms - now),
            )
        if decision == "allow" and scope.get("path", "").startswith("/api/"):
            # The api bucket of this process alone, same algorithm (the shared one is in
            # Redis, which is down).
            limiter = _limiter(scope)
            if limiter is not None:
                key = bucket_key(state.redis.prefix, cookie.user_id, "api")
                reply = limiter.take_local(
                    ((key, self.api_emission_us, self.api_spec.capacity, 1),)
                )
                rate = decision_from_reply("api", self.api_spec, reply, cookie.user_id)
                verdict = RateVerdict((rate,), rate.allowed, degraded=True)
                remember_decisions(scope.setdefault("state", {}), verdict)
                if not rate.allowed:
                    await self._refuse_rate(scope, send, verdict, cookie)
                    return
        await self.app(scope, receive, send)

    async def _user_still_valid(self, state: Any, cookie: SessionCookie) -> bool:
        """Disabled users and sessions revoked in the database stay refused without Redis."""
        cached = self._degraded_users.get(cookie.user_id)
        now = time.monotonic()
        if cached is None or now - cached[0] > _DEGRADED_CACHE_S:
            from sqlalchemy import select

            from healthforms.identity.models import User

            try:
                async with state.db.sessions() as session:
                    row = (
                        await session.execute(
                            select(User.disabled, User.sessions_valid_after).where(
                                User.id == cookie.user_id
                            )
                        )
                    ).first()
            except Exception:  # noqa: BLE001 - no database either: refuse (fail closed)
                return False
            if row is None:
                cached = (now, None, True)
            else:
                valid_after = row[1]
                cached = (
                    now,
                    int(valid_after.timestamp() * 1000) if valid_after is not None else None,
                    bool(row[0]),
                )
            if len(self._degraded_users) > 10_000:
                self._degraded_users.clear()
            self._degraded_users[cookie.user_id] = cached
        _, valid_after_ms, disabled = cached
        if disabled:
            return False
        return valid_after_ms is None or cookie.issued_ms >= valid_after_ms

    async def _reject_csrf(
        self, scope: Scope, send: Send, reason: str, cookie: SessionCookie | None
    ) -> None:
        request_state = scope.get("state", {})
        log.warning(
            "csrf_rejected",
            reason=reason,
            path=scope.get("path", ""),
            user_id=cookie.user_id if cookie else None,
            request_id=request_state.get("request_id"),
        )
        await send_error(send, CsrfRejected())
        try:
            from healthforms.audit.recorder import Auditor

            state = scope["app"].state.hf
            ua = _header(scope, b"user-agent")
            auditor = Auditor(
                state.db,
                RequestContext(
                    ip=request_state.get("client_ip"),
                    user_agent=ua[:256] if ua else None,
                    request_id=request_state.get("request_id"),
                ),
                actor_id=cookie.user_id if cookie else None,
                organization_id=cookie.organization_id if cookie else None,
            )
            await auditor.record(
                CSRF_REJECTED,
                outcome=Outcome.DENIED,
                resource_type="session" if cookie else None,
                resource_id=cookie.session_hash if cookie else None,
            )
        except Exception as exc:  # noqa: BLE001 - the answer is sent; an audit gap is logged
            log.error("audit_failed", action=CSRF_REJECTED, error_type=type(exc).__name__)


async def _answer_hot(scope: Scope, send: Send, hot: HotRoute, request: HotRequest) -> None:
    """Answer a hot route from here (security/hot_routes.py), as FastAPI would have."""
    scope["route"] = hot.label
    try:
        body = render_json(await hot.handler(request))
    except HealthformsError as error:
        await send_error(send, error)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _limiter(scope: Scope) -> RateLimiter | None:
    limiter = scope["app"].state.hf.services.get("ratelimiter")
    return limiter if isinstance(limiter, RateLimiter) else None


def _principal(cookie: SessionCookie, *, degraded: bool) -> Principal:
    return Principal(
        user_id=cookie.user_id,
        organization_id=cookie.organization_id,
        role=cookie.role,
        session_id=cookie.session_hash,
        auth_method=cookie.auth_method,
        mfa=cookie.mfa,
        degraded=degraded,
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _form_token(
    scope: Scope, receive: Receive, content_type: str
) -> tuple[str | None, Receive]:
    """Read `csrf_token` from an HTML form body; return it and a receive that replays it."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in _FORM_TYPES:
        return None, receive
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)

    def replaying() -> Callable[[], Awaitable[Message]]:
        pending = list(messages)

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        return replay

    token: str | None = None
    if kind == "application/x-www-form-urlencoded":
        for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            if key == csrf.FORM_FIELD:
                token = value
                break
    else:
        from starlette.requests import Request

        request = Request(scope, replaying())
        try:
            form = await request.form(max_files=100, max_fields=1000)
            field = form.get(csrf.FORM_FIELD)
            token = field if isinstance(field, str) else None
            await form.close()
        except Exception:  # noqa: BLE001 - a broken multipart body simply carries no token
            token = None
    return token, replaying()
