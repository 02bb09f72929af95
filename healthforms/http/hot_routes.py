"""Hot routes: session-only API endpoints answered by the session layer itself.

A request that goes through FastAPI pays for its routing (every included router is
tried in turn), dependency solving and response validation: about two thirds of the
CPU of an authenticated GET in bench/http.py's profile, more than the session check,
its Redis round trip and the HTTP server together. The few endpoints that need nothing
but the caller's session and that the pages call all the time (who am I, a CSRF
token, the CSRF diagnostics) are registered here too: once the session middleware has
checked the session, it calls their handler directly and sends the JSON.

The FastAPI route stays the contract: the same handler function backs both, OpenAPI
documents it, and every case the fast path does not take (no session, a session judged
while Redis is down, any other method) goes to FastAPI, which answers as it always did.
The response passes out through the same rate-limit and edge layers (headers, request
id, log line, metrics), labelled with the route's path like any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope

from healthforms.http.answers import header
from healthforms.security.context import request_state
from healthforms.security.principal import Principal
from healthforms.security.sessions import SessionInfo
from healthforms.state import AppState


@dataclass(frozen=True, slots=True)
class HotRequest:
    """What a hot handler may use: the checked principal and session, and the headers."""

    scope: Scope
    state: AppState
    principal: Principal
    session: SessionInfo

    def header(self, name: bytes) -> str | None:
        return header(self.scope, name)


HotHandler = Callable[[HotRequest], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class RouteLabel:
    """Stands in for scope["route"]: the edge middleware labels logs and metrics with it."""

    path: str


@dataclass(frozen=True, slots=True)
class HotRoute:
    handler: HotHandler
    label: RouteLabel


class HotRoutes:
    """(method, exact path) -> handler. Filled at import time by the route modules."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], HotRoute] = {}

    def add(self, method: str, path: str, handler: HotHandler) -> None:
        if "{" in path:
            raise ValueError("hot routes are exact paths (no parameters)")
        self._routes[(method, path)] = HotRoute(handler, RouteLabel(path))

    def get(self, method: str, path: str) -> HotRoute | None:
        return self._routes.get((method, path))


HOT_ROUTES = HotRoutes()


def hot_route(method: str, path: str) -> Callable[[HotHandler], HotHandler]:
    """Register `handler` as the hot path of the FastAPI route `method path`."""

    def register(handler: HotHandler) -> HotHandler:
        HOT_ROUTES.add(method, path, handler)
        return handler

    return register


def from_request(scope: Scope, state: AppState, principal: Principal) -> HotRequest:
    """The same HotRequest for the FastAPI route (a principal implies a checked session)."""
    session = request_state(scope).session
    if session is None:  # pragma: no cover - set with the principal
        raise RuntimeError("a principal without its session")
    return HotRequest(scope, state, principal, session)
