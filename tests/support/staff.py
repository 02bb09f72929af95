"""HTTP clients that act as a signed-in staff member.

Until the identity feature's session middleware is on main, a Principal is placed in
the ASGI scope exactly where that middleware puts it (`scope["state"]["principal"]`);
everything after it (roles, organisation scoping, audit actor) runs for real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from healthforms.security.principal import Principal


class AsPrincipal:
    def __init__(self, app: ASGIApp, principal: Principal) -> None:
        self.app = app
        self.principal = principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["principal"] = self.principal
        await self.app(scope, receive, send)


@asynccontextmanager
async def staff_client(app: ASGIApp, principal: Principal) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=AsPrincipal(app, principal), client=("203.0.113.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
