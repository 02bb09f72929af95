"""Path-based rate limits, the RateLimit response headers and the 429, as one plain ASGI layer.

- `auth` (per client IP, IPv6 per /64): the endpoints where someone without a session
  can guess credentials: AUTH_POLICY_PATHS (POST /api/auth/session-login, and the HTML
  login form's POST /login). An unauthenticated endpoint added later (password reset,
  an OIDC callback) joins that set. Endpoints that need a session are not limited
  here: without one they answer 401 and keep no state (the session's `api` bucket
  applies once signed in).
- `public` (per client IP, IPv6 per /64): everything under /api/public/, and the
  patient form page's own POST without JavaScript (/f/{publicId}, /r/{token}: the same
  submission as HTML). A form submission's token is deferred: the route takes it
  together with the nonce claim (two scripts in one write: one round trip, DESIGN.md),
  and if the route answers without taking it (a 400, a 422, a 404), it is taken here
  before that answer leaves. Either way no response leaves without it, and over the
  limit the answer is 429, whatever the route had to say (the patient page draws its own
  429, the form with the answers kept: RequestState.refusal_drawn).
- Every response of an /api/ request that went through a limiter (these two, the
  session layer's `api` token, a route's `PdfRateLimit`) gets the RateLimit headers of
  API.md, rendered from the request's RequestState.rate_decisions.
- Every refusal goes through `refuse`/`record_refusal`: logged with a hashed
  identifier, counted, and audited once per identifier and window.

The client IP is the one the edge layer resolved (trusted proxies only), so a forged
X-Forwarded-For never opens a new bucket.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthforms.audit.events import RATELIMIT_EXCEEDED, Outcome
from healthforms.audit.recorder import Auditor
from healthforms.errors import RateLimited
from healthforms.http.answers import header, send_error
from healthforms.http.client_ip import rate_identifier
from healthforms.languages import negotiate
from healthforms.security.context import CurrentPrincipal, RequestState, request_state
from healthforms.security.ratelimit import (
    RateDecision,
    RateLimiter,
    RateVerdict,
    rate_limit_headers,
)
from healthforms.state import AppState, StateDep

log = structlog.get_logger("healthforms.security")

AUTH_POLICY_PATHS = frozenset({"/api/auth/session-login", "/login"})
PUBLIC_PREFIX = "/api/public/"
# Policies a patient's request takes: their refusals are audited with pseudonyms.
PATIENT_POLICIES = frozenset({"public", "draft_code", "draft_code_form"})
# Submissions through a public link or a patient's request link.
_SUBMISSION_PATH_RE = re.compile(r"^/api/public/(forms|requests)/[^/]+/responses/?$")
# The patient page posted as HTML (web/patient_page.py): a submission like the above.
_PAGE_SUBMISSION_RE = re.compile(r"^/(f|r)/[^/]+/?$")
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def record_refusal(
    state: AppState,
    request: RequestState,
    verdict: RateVerdict,
    *,
    actor_id: str | None = None,
    organization_id: str | None = None,
) -> None:
    """Log and count a refused request; audit it once per identifier and window."""
    context = request.context
    for decision in await state.limiter.record_exceeded(verdict, context.request_id):
        auditor = Auditor(
            state.db,
            state.keys,
            context,
            actor_id=actor_id,
            organization_id=organization_id,
            patient=decision.policy in PATIENT_POLICIES,
        )
        try:
            await auditor.record(
                RATELIMIT_EXCEEDED,
                outcome=Outcome.DENIED,
                resource_type="ratelimit",
                resource_id=decision.policy,
            )
        except Exception as exc:  # noqa: BLE001 - the 429 must not turn into a 500
            log.warning("ratelimit_audit_failed", error_type=type(exc).__name__)


async def refuse(
    send: Send,
    state: AppState,
    request: RequestState,
    verdict: RateVerdict,
    *,
    actor_id: str | None = None,
    organization_id: str | None = None,
    accept_language: str | None = None,
) -> None:
    """Record the refusal, then answer 429 with Retry-After and every RateLimit header
    (the message in the language the client's Accept-Language asks for)."""
    await record_refusal(
        state, request, verdict, actor_id=actor_id, organization_id=organization_id
    )
    decisions = request.rate_decisions or list(verdict.decisions)
    await send_error(send, RateLimited(), rate_limit_headers(decisions), negotiate(accept_language))


def with_rate_headers(message: Message, decisions: list[RateDecision]) -> Message:
    """The response start with the RateLimit headers the route did not set itself."""
    headers = list(message.get("headers", ()))
    present = {k.lower() for k, _ in headers}
    headers.extend(h for h in rate_limit_headers(decisions) if h[0] not in present)
    return {**message, "headers": headers}


class DeferredRateCheck:
    """One request's `public` token, taken once: by the route or, failing that, by us."""

    __slots__ = ("_identifier", "_limiter", "_pending", "_request")

    def __init__(self, limiter: RateLimiter, identifier: str, request: RequestState) -> None:
        self._limiter = limiter
        self._identifier = identifier
        self._request = request
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
        self._request.note_rate(verdict)
        return verdict


def client_identifier(state: AppState, request: RequestState) -> str:
    """The rate-limit identity of the client's address (IPv6: its /64), as a keyed
    pseudonym: an address identifies a patient, so Redis key names never hold one."""
    return state.keys.pseudonym(rate_identifier(request.context.ip or "unknown"))


def policy_for(method: str, path: str) -> str | None:
    """The path policy of a request, or None (authenticated requests use `api`)."""
    if path.startswith(PUBLIC_PREFIX):
        return "public"
    if method == "POST" and _PAGE_SUBMISSION_RE.match(path):
        return "public"
    # The cookie a client brings is ignored by login, so it buys no exemption.
    if method in _UNSAFE and path.rstrip("/") in AUTH_POLICY_PATHS:
        return "auth"
    return None


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state
        self.limiter = state.limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if (
            not path.startswith("/api/")
            and path.rstrip("/") != "/login"
            and not _PAGE_SUBMISSION_RE.match(path)
        ):
            await self.app(scope, receive, send)
            return
        request = request_state(scope)
        method: str = scope.get("method", "GET")
        policy = policy_for(method, path)
        if policy is not None:
            identifier = client_identifier(self.state, request)
            if (
                policy == "public"
                and method == "POST"
                and (_SUBMISSION_PATH_RE.match(path) or _PAGE_SUBMISSION_RE.match(path))
            ):
                deferred = DeferredRateCheck(self.limiter, identifier, request)
                request.public_token = deferred.take
                await self._call_deferred(scope, receive, send, deferred, request)
                return
            verdict = await self.limiter.check_one(policy, identifier)
            request.note_rate(verdict)
            if not verdict.allowed:
                await refuse(
                    send,
                    self.state,
                    request,
                    verdict,
                    accept_language=header(scope, b"accept-language"),
                )
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and request.rate_decisions:
                message = with_rate_headers(message, request.rate_decisions)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _call_deferred(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        deferred: DeferredRateCheck,
        request: RequestState,
    ) -> None:
        """Run the route; before its answer leaves, make sure the token was taken."""
        refused = False

        async def send_checked(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the route's answer was replaced by the 429
            if message["type"] == "http.response.start":
                verdict = await deferred.take()
                if not verdict.allowed and not (
                    request.refusal_drawn and message.get("status") == RateLimited.status_code
                ):
                    refused = True
                    await refuse(
                        send,
                        self.state,
                        request,
                        verdict,
                        accept_language=header(scope, b"accept-language"),
                    )
                    return
                if not verdict.allowed:
                    # The route's own 429 (a page that keeps a patient's answers):
                    # recorded like every refusal, sent with Retry-After and the headers.
                    await record_refusal(self.state, request, verdict)
                message = with_rate_headers(message, request.rate_decisions)
            await send(message)

        await self.app(scope, receive, send_checked)


# A route's own policy, as a FastAPI dependency ------------------------------------------


def policy_dependency(policy: str) -> Callable[..., Awaitable[RateDecision]]:
    """A dependency taking one token of `policy` for the signed-in user (429 when empty)."""

    async def take_token(
        request: Request, principal: CurrentPrincipal, state: StateDep
    ) -> RateDecision:
        return await take_policy_token(policy, request, principal.user_id, state)

    take_token.__name__ = f"take_{policy}_token"
    return take_token


async def take_policy_token(
    policy: str, request: Request, user_id: str, state: AppState
) -> RateDecision:
    verdict = await state.limiter.check_one(policy, user_id)
    current = request_state(request.scope)
    current.note_rate(verdict)
    if not verdict.allowed:
        principal = current.principal
        await record_refusal(
            state,
            current,
            verdict,
            actor_id=user_id,
            organization_id=principal.organization_id if principal else None,
        )
        # Retry-After and the RateLimit fields come from the layer above, which
        # renders every decision this request collected.
        raise RateLimited()
    return verdict.decisions[0]


# Put on POST /api/responses/{id}/generate-pdf (in addition to the api policy of the
# session layer): `_: PdfRateLimit` as a parameter, or dependencies=[...].
PdfRateLimit = Annotated[RateDecision, Depends(policy_dependency("pdf"))]
