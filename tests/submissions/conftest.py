from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from healthforms.config import Settings
from healthforms.identity.models import Role
from tests.forms.helpers import Staff, StaffDirectory, feature_settings, signed_in


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


@pytest.fixture
def settings(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    return feature_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
    )
