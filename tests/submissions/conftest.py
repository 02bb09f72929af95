from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from healthforms.identity.models import Role
from tests.forms.helpers import Staff, StaffDirectory, signed_in


@pytest.fixture
def staff_directory(app: FastAPI) -> StaffDirectory:
    return StaffDirectory(app)


@pytest.fixture
async def editor(staff_directory: StaffDirectory) -> Staff:
    return await staff_directory.user(Role.EDITOR)


@pytest.fixture
async def editor_http(
    app: FastAPI, staff_directory: StaffDirectory, editor: Staff
) -> AsyncIterator[httpx.AsyncClient]:
    async with signed_in(app, staff_directory, editor) as http:
        yield http
