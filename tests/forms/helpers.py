"""Staff users and signed-in HTTP clients for the forms and submissions tests.

Real sign-in: users are created through the identity service, clients sign in with
POST /api/auth/session-login and send the CSRF token on every request.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from healthforms.config import Settings
from healthforms.security.principal import Role
from tests.support import identity

# Tests make many requests per user and per address: keep the limiters out of the way
# (the rate-limit feature tests them); everything else runs as in production.
GENEROUS_RATE = "100000/min+10000"


def feature_settings(
    *, database_url: str, redis_url: str, redis_prefix: str, data_dir: Path, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {"rate_limit_api": GENEROUS_RATE, "rate_limit_public": GENEROUS_RATE}
    values.update(overrides)
    return identity.identity_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=data_dir,
        **values,
    )


@dataclass(frozen=True)
class Staff:
    user_id: str
    organization_id: str
    role: Role
    name: str
    account: identity.Staff


class StaffDirectory:
    """Creates organisations (by label, unique per directory) and users in the app."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._suffix = secrets.token_hex(4)

    async def user(self, role: Role = Role.EDITOR, *, org: str = "clinic", name: str = "") -> Staff:
        name = name or f"Staff {role.value} {secrets.token_hex(2)}"
        account = await identity.create_staff(
            self.app, role=role, organization=f"{org} {self._suffix}", name=name
        )
        return Staff(account.id, account.organization_id, role, name, account)


@asynccontextmanager
async def signed_in(
    app: FastAPI, directory: StaffDirectory, staff: Staff
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in as `staff` (cookie + CSRF header on every request)."""
    async with identity.new_client(app) as http:
        session = await identity.login(http, staff.account)
        http.headers.update(session.csrf_headers)
        yield http


def text_field(field_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": field_id, "type": "text", "label": field_id.title(), **extra}
