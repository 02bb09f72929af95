"""Fixtures of tests/responses and tests/pdf: a clinic with a published form, staff clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from fastapi import FastAPI

from healthforms.db.engine import Database
from healthforms.identity.models import Role
from healthforms.security.keys import KeyRing
from tests.support.response_factory import (
    PublishedForm,
    create_form,
    create_organization,
    principal,
)
from tests.support.staff import staff_client

StaffFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def db(app: FastAPI) -> Database:
    database: Database = app.state.hf.db
    return database


@pytest.fixture
def keys(app: FastAPI) -> KeyRing:
    ring: KeyRing = app.state.hf.keys
    return ring


@pytest.fixture
async def clinic(db: Database) -> PublishedForm:
    organization_id = await create_organization(db)
    return (await create_form(db, organization_id))[0]


@pytest.fixture
def staff(app: FastAPI) -> StaffFactory:
    """`async with staff(org_id, Role.VIEWER) as http:` a client signed in as that role."""

    def factory(
        organization_id: str, role: Role = Role.ADMIN, user_id: str | None = None
    ) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return staff_client(app, principal(organization_id, role, user_id))

    return factory


@pytest.fixture
async def admin(staff: StaffFactory, clinic: PublishedForm) -> AsyncIterator[httpx.AsyncClient]:
    async with staff(clinic.organization_id, Role.ADMIN) as http:
        yield http
