"""The audit tests' key ring (the suite's master key) and a database of their own."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from tests.conftest import TEST_ENCRYPTION_KEY


@pytest.fixture
def keys() -> KeyRing:
    return KeyRing(current=base64.b64decode(TEST_ENCRYPTION_KEY))


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[Database]:
    database = Database.connect(fresh_database_url)
    try:
        yield database
    finally:
        await database.dispose()
