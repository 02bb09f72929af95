"""Fixtures of tests/responses and tests/pdf: a clinic with a published form, staff clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.security.principal import Role
from tests.support.apps import running_app
from tests.support.identity import GENEROUS_AUTH_RATE, identity_settings
from tests.support.response_factory import PublishedForm, create_form, create_organization
from tests.support.staff import signed_in_client

StaffFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
AppWith = Callable[..., AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
def app_with(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> AppWith:
    """An app of this test alone with settings overrides (e.g. rate_limit_pdf="2/min+0"),
    inside its lifespan. (redis_client: its teardown deletes this test's keys.)"""

    @asynccontextmanager
    async def running(**overrides: Any) -> AsyncIterator[FastAPI]:
        settings = identity_settings(
            database_url=database_url,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            data_dir=tmp_path / "data",
            **overrides,
        )
        async with running_app(settings) as application:
            yield application

    return running


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """The default test settings, with room for several sign-ins from one address."""
    return {"rate_limit_auth": GENEROUS_AUTH_RATE}


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
    """`async with staff(org_id, Role.VIEWER) as http:` a browser signed in as that role."""

    @asynccontextmanager
    async def factory(
        organization_id: str, role: Role = Role.ADMIN
    ) -> AsyncIterator[httpx.AsyncClient]:
        async with signed_in_client(app, organization_id, role) as (http, _):
            yield http

    return factory


@pytest.fixture
async def admin(staff: StaffFactory, clinic: PublishedForm) -> AsyncIterator[httpx.AsyncClient]:
    async with staff(clinic.organization_id, Role.ADMIN) as http:
        yield http
