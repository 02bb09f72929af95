"""Signed-in staff clients for the responses and PDF tests: real accounts, real sessions.

Each client signs in through POST /api/auth/session-login (session cookie, CSRF token)
and sends its CSRF token on every request, as the staff pages do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from healthforms.identity.models import Organization
from healthforms.security.principal import Role
from tests.support.identity import Staff, create_staff, login, new_client


async def organization_name(app: FastAPI, organization_id: str) -> str:
    async with app.state.hf.db.sessions() as session:
        org = await session.get(Organization, organization_id)
        assert org is not None, organization_id
        name: str = org.name
        return name


@asynccontextmanager
async def signed_in_client(
    app: FastAPI, organization_id: str, role: Role = Role.ADMIN, *, name: str = "Test Staff"
) -> AsyncIterator[tuple[httpx.AsyncClient, Staff]]:
    """A new browser signed in as a new user of `role` in that organisation."""
    staff = await create_staff(
        app, role=role, organization=await organization_name(app, organization_id), name=name
    )
    async with new_client(app) as http:
        signed_in = await login(http, staff)
        http.headers.update(signed_in.csrf_headers)
        yield http, staff
