"""A clinic with a published form, and signed-in staff of each role (tests/support)."""

from typing import Any

import pytest

from tests.support.identity import GENEROUS_AUTH_RATE
from tests.support.response_fixtures import StaffFactory, admin, clinic, db, keys, staff

__all__ = ["StaffFactory", "admin", "clinic", "db", "keys", "staff"]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_auth": GENEROUS_AUTH_RATE, "rate_limit_pdf": "1000/min+100"}
