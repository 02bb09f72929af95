"""Path-based rate limits and the RateLimit response headers, as one plain ASGI middleware.

- `auth` (per client IP, IPv6 per /64): the endpoints where someone without a session
  can guess credentials: AUTH_POLICY_PATHS (POST /api/auth/session-login, and the HTML
  login form's POST /login). An unauthenticated endpoint added later (password reset,
  an OIDC callback) joins that set. Endpoints that need a session are not limited
  here: without one they answer 401 and keep no state (the session's `api` bucket
  applies once signed in).
- `public` (per client IP, IPv6 per /64): everything under /api/public/. A form
  submission's token is deferred: the route takes it together with the nonce claim
  (two scripts in one write: one round trip, DESIGN.md), and if the route answers
  without taking it (a 400, a 422, a 404), it is taken here before that answer
  leaves. Either way no response leaves without it, and over the limit the answer is
  429, whatever the route had to say.
- Every response of an /api/ request that went through a limiter (these two, the
  session hot path's `api` token, a route's `PdfRateLimit`) gets the RateLimit
  headers of API.md, rendered from scope["state"]["rate_decisions"].

The client IP is the one the edge middleware resolved (trusted proxies only), so a
forged X-Forwarded-For never opens a new bucket.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthforms.audit.events import RequestContext
from healthforms.errors import RateLimited
from healthforms.http.client_ip import rate_identifier
from healthforms.security.ratelimit import (
    DECISIONS_STATE,
    RateLimiter,
    RateVerdict,
    rate_limit_headers_for,
    remember_decisions,
)

AUTH_POLICY_PATHS = frozenset({"/api/auth/session-login", "/login"})
PUBLIC_PREFIX = "/api/public/"
_SUBMISSION_PATH_RE = re.compile(r"^/api/public/forms/[^/]+/responses/?$")
DEFERRED_STATE = "deferred_rate_check"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_RATE_LIMITED_BODY = json.dumps(RateLimited().body()).encode()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class DeferredRateCheck:
    """One request's `public` token, taken once: by the route or, failing that, by us."""

    __slots__ = ("_identifier", "_limiter", "_pending", "_state")

    def __init__(self, limiter: RateLimiter, identifier: str, state: dict[str, Any]) -> None:
        self._limiter = limiter
        self._identifier = identifier
        self._state = state
        self._pending: asyncio.Future[RateVerdict] | None = None

    def take(self) -> Awaitable[RateVerdict]:
        """The verdict; the check runs at most once, however often this is called.

        It starts as a task, so a caller that gathers it with another script (the nonce
        claim) sends both in the same event-loop turn: one write, one round trip.
        """
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._check())
        return self._pending

    async def _check(self) -> RateVerdict:
        verdict = await self._limiter.check_one("public", self._identifier)
        remember_decisions(self._state, verdict)
        return verdict


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limiter: RateLimiter | None = None

    def policy_for(self, scope: Scope, path: str) -> str | None:
        """The path policy of a request, or None (authenticated requests use `api`)."""
        if path.startswith(PUBLIC_PREFIX):
            return "public"
        # The cookie a client brings is ignored by login, so it buys no exemption.
        if scope.get("method") in _UNSAFE and path.rstrip("/") in AUTH_POLICY_PATHS:
            return "auth"
        return None

    def limiter(self, scope: Scope) -> RateLimiter:
        if self._limiter is None:
            limiter: RateLimiter = scope["app"].state.hf.services["ratelimiter"]
            self._limiter = limiter
        return self._limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not path.startswith("/api/") and path.rstrip("/") != "/login":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        policy = self.policy_for(scope, path)
        if policy is not None:
            peer = scope.get("client")
            ip = state.get("client_ip") or (peer[0] if peer else "unknown")
            limiter = self.limiter(scope)
            if (
                policy == "public"
                and scope.get("method") == "POST"
                and _SUBMISSION_PATH_RE.match(path)
            ):
                deferred = DeferredRateCheck(limiter, rate_identifier(ip), state)
                state[DEFERRED_STATE] = deferred
                await self._call_deferred(scope, receive, send, deferred, limiter, ip)
                return
            verdict = await limiter.check_one(policy, rate_identifier(ip))
            remember_decisions(state, verdict)
            if not verdict.allowed:
                await self._refuse(scope, send, limiter, verdict, ip)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decisions = state.get(DECISIONS_STATE)
                if decisions:
                    headers = list(message.get("headers", ()))
                    present = {k.lower() for k, _ in headers}
                    headers.extend(
                        h for h in rate_limit_headers_for(decisions) if h[0] not in present
                    )
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _call_deferred(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        deferred: DeferredRateCheck,
        limiter: RateLimiter,
        ip: str,
    ) -> None:
        """Run the route; before its answer leaves, make sure the token was taken."""
        refused = False

        async def send_checked(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the route's answer was replaced by the 429
            if message["type"] == "http.response.start":
                verdict = await deferred.take()
                if not verdict.allowed:
                    refused = True
                    await self._refuse(scope, send, limiter, verdict, ip)
                    return
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers.extend(
                    h
                    for h in rate_limit_headers_for(scope["state"][DECISIONS_STATE])
                    if h[0] not in present
                )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_checked)

    async def _refuse(
        self, scope: Scope, send: Send, limiter: RateLimiter, verdict: RateVerdict, ip: str
    ) -> None:
        state = scope["state"]
        user_agent = _header(scope, b"user-agent")
        context = RequestContext(
            ip=ip,
            user_agent=user_agent[:256] if user_agent else None,
            request_id=state.get("request_id"),
        )
        await limiter.record_exceeded(verdict, context)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_RATE_LIMITED_BODY)).encode()),
            *rate_limit_headers_for(state[DECISIONS_STATE]),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": _RATE_LIMITED_BODY})
