"""The authenticated hot path, as one plain ASGI middleware (no BaseHTTPMiddleware).

For a request bearing a session cookie it makes exactly ONE Redis round trip: one
EVALSHA (gcra.lua + session_check.lua, `SessionStore.check`) that checks and touches the
session, takes one token from the user's `api` bucket (API routes) and, for unsafe
methods, checks that the CSRF token is live for this session. All three keys carry the
`{<user_id>}` hash tag.

On success the Principal and the session's metadata go on the request's RequestState
(security/context.py); routes never read the cookie themselves. A hot route
(http/hot_routes.py) is answered right here, without entering FastAPI.
Requests without a session cookie never reach Redis here (and so create no keys).
Garbage, truncated, oversized or forged cookies simply yield no principal: the route's
dependency answers 401 (never 500).

Redis down: a cookie whose HMAC holds is accepted up to its absolute lifetime (and
refused if the user was disabled or signed out everywhere since, per the database's
`AppState.user_standing`), and
CSRF tokens are checked by HMAC alone, unless HEALTHFORMS_SESSION_FALLBACK=deny, and the
`api` bucket is kept per process by the shared RateLimiter (same GCRA). Every such
decision is counted in healthforms_degraded_decisions_total and logged (no token).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthforms.audit.events import CSRF_REJECTED, Outcome
from healthforms.audit.recorder import Auditor
from healthforms.clock import now_ms
from healthforms.config import SessionFallback
from healthforms.errors import CsrfRejected, HealthformsError, ServiceUnavailable
from healthforms.http.answers import render_json, send_body, send_error
from healthforms.http.hot_routes import HOT_ROUTES, HotRequest, HotRoute
from healthforms.http.ratelimits import AUTH_POLICY_PATHS, client_identifier, refuse
from healthforms.redis.errors import PoolExhausted, RedisUnavailable
from healthforms.security import csrf
from healthforms.security.context import RequestState, request_state
from healthforms.security.principal import Principal
from healthforms.security.ratelimit import (
    RateVerdict,
    bucket_key,
    decision_from_reply,
    emission_us,
    script_args,
)
from healthforms.security.sessions import (
    CHECK_CSRF_NOT_LIVE,
    CHECK_NO_SESSION,
    CHECK_RATE_LIMITED,
    SessionCheck,
    SessionCookie,
    SessionInfo,
    decode_cookie,
    decode_seen,
    encode_seen,
    seen_ms_of,
)
from healthforms.state import AppState

log = structlog.get_logger("healthforms.security")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_PATH = "/api/auth/session-login"
# Static assets and probes never need a session: no round trip for them. The public
# form endpoints and pages are for patients and protected by their nonce, not a session:
# a staff member's cookie (previewing their own form) must neither help nor hinder there.
# /r/: a patient's personal request link (patient_requests/), protected by its token.
_SKIP_PREFIXES = ("/static/", "/favicon.ico", "/health", "/metrics", "/api/public/", "/f/", "/r/")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# The last-seen cookie is renewed at most this often (and at most every tenth of the
# idle timeout): the degraded mode's idle log-off may come that much early, never late.
SEEN_REFRESH_MS = 60_000
ANONYMOUS_AUDIT_WINDOW_MS = 60_000
_MAX_COOKIE_HEADER = 8192
_VERIFIED_COOKIES_MAX = 10_000


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
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state
        settings = state.settings
        self.metrics = state.metrics
        self.sessions = state.sessions
        self.limiter = state.limiter
        self.session_key = state.keys.hmac_key("session")
        self.csrf_key = state.keys.hmac_key("csrf")
        self.cookie_name = settings.session_cookie_name
        self.api_spec = settings.rate("api")
        self.api_args = script_args(self.api_spec)
        self.api_emission_us = emission_us(self.api_spec)
        self.max_age_ms = settings.session_max_age * 1000
        self.public_origin = (
            csrf.normalise_origin(settings.public_url) if settings.public_url else None
        )
        self.deny_when_degraded = settings.session_fallback is SessionFallback.DENY
        self._verified: dict[str, SessionCookie] = {}
        self.standings = state.standings
        self.idle_ms = settings.session_idle_timeout * 1000
        self.seen_refresh_ms = min(SEEN_REFRESH_MS, self.idle_ms // 10)
        self.seen_name = settings.seen_cookie_name
        self.seen_key = state.keys.hmac_key("session-seen")
        self.seen_attributes = f"; Path=/; Max-Age={settings.session_max_age}; HttpOnly; " + (
            "SameSite=Lax; Secure" if settings.secure_cookies else "SameSite=Lax"
        )

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
        request = request_state(scope)

        if unsafe and (raw_cookie is not None or is_login):
            own = self.public_origin or csrf.request_origin(
                scope.get("scheme", "http"), headers.host, scope.get("server")
            )
            reason = csrf.origin_rejection(
                sec_fetch_site=headers.sec_fetch_site, origin=headers.origin, own_origin=own
            )
            if reason is not None:
                cookie = None if is_login or raw_cookie is None else self._decode(raw_cookie)
                if cookie is None and not await self._anonymous_allowed(send, request, path):
                    return
                await self._reject_csrf(scope, send, request, reason, cookie)
                return

        # The login ignores any cookie the client brings (no session fixation). Without
        # a cookie there is nothing to look up: the route's 401 costs no Redis call, no
        # database read and no audit row, so it needs no bucket either.
        if raw_cookie is None or is_login:
            await self.app(scope, receive, send)
            return
        cookie = self._decode(raw_cookie)
        if cookie is None:
            await self._without_session(scope, receive, send, request)
            return

        checked: csrf.CheckedToken | None = None
        if unsafe:
            token = headers.csrf_token
            if token is None and headers.content_type is not None:
                token, receive = await _form_token(scope, receive, headers.content_type)
            checked = csrf.check_token(self.csrf_key, cookie.session_hash, token)
            if checked is None:
                reason = csrf.REASON_MISSING if not token else csrf.REASON_MALFORMED
                await self._reject_csrf(scope, send, request, reason, cookie)
                return

        is_api = path.startswith("/api/")
        try:
            reply = await self.sessions.check(
                cookie,
                csrf_key=(
                    self.state.csrf.token_key(cookie.user_id, checked.token_id)
                    if checked is not None
                    else None
                ),
                take_api_token=is_api,
                api_args=self.api_args,
            )
        except PoolExhausted:
            # Load, not an outage: Redis is up and may hold this session's end, so the
            # cookie alone must not decide. Refuse; the client retries shortly.
            self.metrics.degraded_decisions.labels("session", "overloaded").inc()
            await send_error(send, ServiceUnavailable(headers={"Retry-After": "1"}))
            return
        except RedisUnavailable:
            await self._degraded(scope, receive, send, request, cookie, checked, headers)
            return

        check = SessionCheck.from_reply(reply)
        if check.status == CHECK_NO_SESSION:
            await self._without_session(scope, receive, send, request)
            return
        if is_api:
            decision = decision_from_reply("api", self.api_spec, check.api_bucket, cookie.user_id)
            verdict = RateVerdict((decision,), decision.allowed)
            # The rate-limit layer (outside this one) renders them as headers.
            request.note_rate(verdict)
            if check.status == CHECK_RATE_LIMITED:
                await self._refuse_rate(send, request, verdict, cookie)
                return
        if check.status == CHECK_CSRF_NOT_LIVE:
            await self._reject_csrf(scope, send, request, csrf.REASON_NOT_LIVE, cookie)
            return

        if not await self._database_allows(cookie):
            # Ended in the database (logout, revoke, password or role change, disabling)
            # while Redis did not hear of it: end it in Redis too, then answer as for
            # any ended session.
            await self._end_in_redis(cookie)
            await self._without_session(scope, receive, send, request)
            return

        principal = _principal(cookie, degraded=False)
        session = check.info(cookie)
        request.sign_in(principal, session)
        send = self._noting_seen(send, cookie, seen_ms_of(self._seen_cookie(headers)))
        hot = HOT_ROUTES.get(method, path)
        if hot is not None:
            await _answer_hot(scope, send, hot, HotRequest(scope, self.state, principal, session))
            return
        await self.app(scope, receive, send)

    async def _without_session(
        self, scope: Scope, receive: Receive, send: Send, request: RequestState
    ) -> None:
        """A request whose cookie is no valid session (forged, garbage, ended)."""
        if await self._anonymous_allowed(send, request, scope.get("path", "")):
            await self.app(scope, receive, send)

    async def _anonymous_allowed(self, send: Send, request: RequestState, path: str) -> bool:
        """Requests that bring a cookie or a foreign Origin but no valid session take an
        `anonymous` token per client address (API paths and page form posts, not the
        login, which has its own per-IP policy): a flood of them is refused (429)
        before it costs a database read or an audit row. Refused here: answered."""
        if path.rstrip("/") in AUTH_POLICY_PATHS:
            return True
        verdict = await self.limiter.check_one("anonymous", client_identifier(self.state, request))
        request.note_rate(verdict)
        if verdict.allowed:
            return True
        await refuse(send, self.state, request, verdict)
        return False

    def _decode(self, raw_cookie: str) -> SessionCookie | None:
        """decode_cookie, remembering cookies whose HMAC already held (a browser sends the
        same cookie with every request). Only verified cookies are kept (the key never
        changes while the app runs), so the cache cannot admit anything decode_cookie
        would not; whether the session still lives is asked of Redis every time."""
        cached = self._verified.get(raw_cookie)
        if cached is not None:
            return cached
        cookie = decode_cookie(self.session_key, raw_cookie)
        if cookie is not None:
            if len(self._verified) >= _VERIFIED_COOKIES_MAX:
                self._verified.clear()
            self._verified[raw_cookie] = cookie
        return cookie

    async def _refuse_rate(
        self, send: Send, request: RequestState, verdict: RateVerdict, cookie: SessionCookie
    ) -> None:
        """429 with Retry-After; logged, counted and audited like every refusal."""
        await refuse(
            send,
            self.state,
            request,
            verdict,
            actor_id=cookie.user_id,
            organization_id=cookie.organization_id,
        )

    async def _degraded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: RequestState,
        cookie: SessionCookie,
        checked: csrf.CheckedToken | None,
        headers: _Headers,
    ) -> None:
        """Redis is unavailable: judge the signed cookie and what the database and the
        last-seen cookie prove, or refuse. An ended session is never accepted here."""
        now = now_ms()
        seen_ms = decode_seen(self.seen_key, cookie.session_hash, self._seen_cookie(headers))
        # The last activity this client can prove: its signed last-seen time, or sign-in.
        last_seen = max(cookie.issued_ms, seen_ms or 0)
        decision = "allow"
        if self.deny_when_degraded:
            decision = "deny"
        elif now - cookie.issued_ms >= self.max_age_ms:
            decision = "deny"
        elif now - last_seen >= self.idle_ms:
            decision = "deny"  # automatic log-off holds without Redis too
        elif not await self.standings.accepts(cookie, when_unknown=False):
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
            request_id=request.context.request_id,
        )
        if decision == "allow":
            send = self._noting_seen(send, cookie, seen_ms)
            request.sign_in(
                _principal(cookie, degraded=True),
                SessionInfo(
                    id=cookie.session_hash,
                    created_ms=cookie.issued_ms,
                    last_seen_ms=now,
                    ip="",
                    user_agent="",
                    auth_method=cookie.auth_method,
                    expires_in_ms=max(0, cookie.issued_ms + self.max_age_ms - now),
                ),
            )
            if scope.get("path", "").startswith("/api/"):
                # The api bucket of this process alone, same algorithm (the shared one is
                # in Redis, which is down).
                key = bucket_key(self.state.redis.prefix, cookie.user_id, "api")
                reply = self.state.limiter.take_local(
                    ((key, self.api_emission_us, self.api_spec.capacity, 1),)
                )
                rate = decision_from_reply("api", self.api_spec, reply, cookie.user_id)
                verdict = RateVerdict((rate,), rate.allowed, degraded=True)
                request.note_rate(verdict)
                if not rate.allowed:
                    await self._refuse_rate(send, request, verdict, cookie)
                    return
        await self.app(scope, receive, send)

    async def _database_allows(self, cookie: SessionCookie) -> bool:
        """The database's word, from memory on the hot path (read at most every few
        seconds per user, beside the requests). While it cannot be asked, Redis, which is
        up, decides."""
        standings = self.standings
        fresh, standing = standings.cached(cookie.user_id)
        if not fresh and standings.is_known(cookie.user_id):
            # Stale: decide on the last read while one refresh runs beside this request,
            # so no request on the hot path waits for the database.
            standings.refresh_soon(cookie.user_id)
            fresh = True
        if fresh:
            return standing is not None and standing.accepts(cookie)
        return await standings.accepts(cookie, when_unknown=True)

    async def _end_in_redis(self, cookie: SessionCookie) -> None:
        try:
            await self.sessions.end(cookie.user_id, cookie.session_hash)
        except RedisUnavailable:
            pass  # the database keeps refusing it; the next request tries again
        log.warning(
            "session_ended_from_database", user_id=cookie.user_id, session_id=cookie.session_hash
        )

    def _seen_cookie(self, headers: _Headers) -> str | None:
        return cookie_value(headers.cookie, self.seen_name)

    def _noting_seen(self, send: Send, cookie: SessionCookie, seen_ms: int | None) -> Send:
        """`send`, adding a fresh signed last-seen cookie when the client's is missing or
        older than its refresh interval: what the degraded mode's idle log-off relies on."""
        now = now_ms()
        if seen_ms is not None and 0 <= now - seen_ms < self.seen_refresh_ms:
            return send
        header = (
            f"{self.seen_name}={encode_seen(self.seen_key, cookie.session_hash, now)}"
            f"{self.seen_attributes}"
        ).encode("latin-1")

        async def send_with_seen(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (b"set-cookie", header)],
                }
            await send(message)

        return send_with_seen

    async def _reject_csrf(
        self,
        scope: Scope,
        send: Send,
        request: RequestState,
        reason: str,
        cookie: SessionCookie | None,
    ) -> None:
        log.warning(
            "csrf_rejected",
            reason=reason,
            path=scope.get("path", ""),
            user_id=cookie.user_id if cookie else None,
            request_id=request.context.request_id,
        )
        await send_error(send, CsrfRejected())
        if cookie is None and not await self._first_anonymous_rejection(request):
            # No session to attribute it to: one audit row per client address and
            # minute (the log line above still counts each), so a flood of forged
            # requests cannot grow the audit table by a row per request.
            return
        auditor = Auditor(
            self.state.db,
            self.state.keys,
            request.context,
            actor_id=cookie.user_id if cookie else None,
            organization_id=cookie.organization_id if cookie else None,
        )
        try:
            await auditor.record(
                CSRF_REJECTED,
                outcome=Outcome.DENIED,
                resource_type="session" if cookie else None,
                resource_id=cookie.session_hash if cookie else None,
            )
        except Exception as exc:  # noqa: BLE001 - the answer is sent; an audit gap is logged
            log.error("audit_failed", action=CSRF_REJECTED, error_type=type(exc).__name__)

    async def _first_anonymous_rejection(self, request: RequestState) -> bool:
        identifier = client_identifier(self.state, request)
        return await self.limiter.first_in_window(
            identifier, CSRF_REJECTED, ANONYMOUS_AUDIT_WINDOW_MS
        )


async def _answer_hot(scope: Scope, send: Send, hot: HotRoute, request: HotRequest) -> None:
    """Answer a hot route from here (http/hot_routes.py), as FastAPI would have."""
    scope["route"] = hot.label
    try:
        body = render_json(await hot.handler(request))
    except HealthformsError as error:
        await send_error(send, error)
        return
    await send_body(send, 200, body, b"application/json", ())


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
        request = Request(scope, replaying())
        try:
            form = await request.form(max_files=100, max_fields=1000)
            field = form.get(csrf.FORM_FIELD)
            token = field if isinstance(field, str) else None
            await form.close()
        except Exception:  # noqa: BLE001 - a broken multipart body simply carries no token
            token = None
    return token, replaying()
