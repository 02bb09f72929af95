from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from healthforms.security.principal import Role
from tests.forms.helpers import GENEROUS_RATE, Staff, StaffDirectory, signed_in
from tests.support.identity import GENEROUS_AUTH_RATE


@pytest.fixture
def staff_directory(app: FastAPI) -> StaffDirectory:
    return StaffDirectory(app)


@pytest.fixture
async def editor_http(
    app: FastAPI, staff_directory: StaffDirectory
) -> AsyncIterator[httpx.AsyncClient]:
    editor: Staff = await staff_directory.user(Role.EDITOR)
    async with signed_in(app, staff_directory, editor) as http:
        yield http


@pytest.fixture
async def admin_http(
    app: FastAPI, staff_directory: StaffDirectory
) -> AsyncIterator[httpx.AsyncClient]:
    # The same organisation as editor_http's (the directory's "clinic").
    admin: Staff = await staff_directory.user(Role.ADMIN)
    async with signed_in(app, staff_directory, admin) as http:
        yield http


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "rate_limit_auth": GENEROUS_AUTH_RATE,
        "rate_limit_api": GENEROUS_RATE,
        "rate_limit_public": GENEROUS_RATE,
    }
