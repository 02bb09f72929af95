"""Staff users and signed-in HTTP clients for the forms and submissions tests.

Until the identity feature is on main, a signed-in request is simulated by an ASGI
wrapper that puts the Principal where the session middleware will put it
(`scope["state"]["principal"]`); every other layer (roles, organisation scoping,
audit) runs for real. The users and organisations are real rows.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from healthforms.identity.models import Organization, Role, User
from healthforms.security.principal import Principal
from healthforms.state import AppState

TEST_USER_HEADER = b"x-test-user"


@dataclass(frozen=True)
class Staff:
    user_id: str
    organization_id: str
    role: Role
    name: str

    def principal(self) -> Principal:
        return Principal(
            user_id=self.user_id,
            organization_id=self.organization_id,
            role=self.role,
            session_id="test-" + self.user_id[-6:],
        )


class StaffDirectory:
    """Creates organisations and users in the app's database."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.by_id: dict[str, Staff] = {}
        self._orgs: dict[str, str] = {}

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.hf
        return state

    async def organization(self, label: str) -> str:
        if label not in self._orgs:
            org = Organization(name=f"{label} {secrets.token_hex(4)}")
            async with self.state.db.sessions() as session:
                session.add(org)
                await session.commit()
            self._orgs[label] = org.id
        return self._orgs[label]

    async def user(self, role: Role = Role.EDITOR, *, org: str = "clinic", name: str = "") -> Staff:
        org_id = await self.organization(org)
        user = User(
            organization_id=org_id,
            email=f"{secrets.token_hex(6)}@example.test",
            name=name or f"Staff {role.value} {secrets.token_hex(2)}",
            role=role.value,
        )
        async with self.state.db.sessions() as session:
            session.add(user)
            await session.commit()
        staff = Staff(user.id, org_id, role, user.name)
        self.by_id[staff.user_id] = staff
        return staff


class InjectPrincipal:
    """Stands in for the session middleware: X-Test-User names the signed-in user."""

    def __init__(self, app: FastAPI, directory: StaffDirectory) -> None:
        self.app = app
        self.directory = directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope.get("headers", ()):
                if key == TEST_USER_HEADER:
                    staff = self.directory.by_id.get(value.decode())
                    if staff is not None:
                        scope.setdefault("state", {})["principal"] = staff.principal()
        await self.app(scope, receive, send)


@asynccontextmanager
async def signed_in(
    app: FastAPI, directory: StaffDirectory, staff: Staff
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(
        app=InjectPrincipal(app, directory), client=("203.0.113.10", 40000)
    )
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={TEST_USER_HEADER.decode(): staff.user_id},
    ) as http:
        yield http


def text_field(field_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": field_id, "type": "text", "label": field_id.title(), **extra}
