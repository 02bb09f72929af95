"""Fixtures of the retention tests: a database of the test's own (a purge deletes across
every form of its database, and these tests count what it left), the suite's key ring;
and the clinic with staff of tests/support for the API and page tests."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.response_fixtures import (
    StaffFactory,
    admin,
    clinic,
    db,
    keys,
    settings_overrides,
    staff,
)

__all__ = ["StaffFactory", "admin", "clinic", "db", "keys", "settings_overrides", "staff"]


@pytest.fixture
def ring() -> KeyRing:
    """The master key the test servers and the CLI runs of these tests use."""
    return KeyRing(current=base64.b64decode(TEST_ENCRYPTION_KEY))


@pytest.fixture
async def own_db(fresh_database_url: str) -> AsyncIterator[Database]:
    database = Database.connect(fresh_database_url)
    try:
        yield database
    finally:
        await database.dispose()
