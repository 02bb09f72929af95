"""What the edge and security layers established about one request, in one typed object.

The edge layer (http/edge.py) creates a `RequestState` for every HTTP request and puts it
in the ASGI scope under one key; the rate-limit and session layers fill it in (the
principal, the session, every rate decision, the deferred `public` token), and routes
read it through the dependencies below. Nothing else travels in the scope: no route
reads a cookie, a header the edge already parsed, or a string key of another layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.types import Scope

from healthforms.errors import Forbidden, Unauthenticated
from healthforms.security.principal import Principal, Role
from healthforms.security.ratelimit import RateDecision, RateVerdict
from healthforms.security.sessions import SessionInfo

SCOPE_KEY = "healthforms"
USER_AGENT_LIMIT = 256


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Where a request came from, for audit events and session metadata."""

    ip: str | None
    user_agent: str | None
    request_id: str | None  # always the server's own: the X-Request-ID it answers
    # The X-Request-ID a client sent (when well-formed): logged and audited beside the
    # server's, never in its place, so a client cannot make its requests' audit rows
    # collide with (or impersonate) another request's.
    client_request_id: str | None = None


class RequestState:
    """One request as the layers saw it. Mutable: each layer adds what it decided."""

    __slots__ = (
        "context",
        "principal",
        "public_token",
        "rate_decisions",
        "refusal_drawn",
        "session",
    )

    def __init__(self, context: RequestContext) -> None:
        self.context = context
        self.principal: Principal | None = None  # set by the session layer only
        self.session: SessionInfo | None = None  # with the principal
        # Every rate decision of this request, rendered as RateLimit headers on the way out.
        self.rate_decisions: list[RateDecision] = []
        # A public submission's `public` token, taken once (by the route, together with
        # its nonce claim, or by the rate-limit layer before the answer leaves).
        self.public_token: Callable[[], Awaitable[RateVerdict]] | None = None
        # The route answered an over-limit submission itself with a 429 of its own (the
        # patient page, keeping the answers): the rate-limit layer lets that answer pass.
        self.refusal_drawn = False

    def note_rate(self, verdict: RateVerdict) -> None:
        self.rate_decisions.extend(verdict.decisions)

    def sign_in(self, principal: Principal, session: SessionInfo) -> None:
        self.principal = principal
        self.session = session


def request_state(scope: Scope) -> RequestState:
    """The request's state; an empty one for a scope that did not cross the edge layer."""
    found = scope.get(SCOPE_KEY)
    if isinstance(found, RequestState):
        return found
    state = RequestState(RequestContext(ip=None, user_agent=None, request_id=None))
    scope[SCOPE_KEY] = state
    return state


def get_principal(request: Request) -> Principal:
    principal = request_state(request.scope).principal
    if principal is None:
        raise Unauthenticated()
    return principal


# The dependencies are `async def`: FastAPI runs a plain `def` dependency in a worker
# thread, a thread hop on every authenticated request.
async def _request_state(request: Request) -> RequestState:
    return request_state(request.scope)


async def _request_context(request: Request) -> RequestContext:
    return request_state(request.scope).context


async def _current_principal(request: Request) -> Principal:
    return get_principal(request)


def _roles_dependency(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    allowed = frozenset(roles)

    async def dependency(request: Request) -> Principal:
        principal = get_principal(request)
        if principal.role not in allowed:
            raise Forbidden()
        return principal

    return dependency


RequestStateDep = Annotated[RequestState, Depends(_request_state)]
RequestContextDep = Annotated[RequestContext, Depends(_request_context)]
CurrentPrincipal = Annotated[Principal, Depends(_current_principal)]
EditorPrincipal = Annotated[Principal, Depends(_roles_dependency(Role.ADMIN, Role.EDITOR))]
AdminPrincipal = Annotated[Principal, Depends(_roles_dependency(Role.ADMIN))]
