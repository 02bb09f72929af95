"""A clinic with a published form, signed-in staff (tests/support); for the browser test,
tests/web's running server and Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from tests.forms.helpers import GENEROUS_RATE
from tests.support.identity import GENEROUS_AUTH_RATE
from tests.support.response_fixtures import (
    StaffFactory,
    admin,
    app_with,
    clinic,
    db,
    keys,
    staff,
)
from tests.web.conftest import browser, mailbox, server, web_prefix

__all__ = [
    "StaffFactory",
    "admin",
    "app_with",
    "browser",
    "mailbox",
    "clinic",
    "db",
    "keys",
    "server",
    "settings_overrides",
    "staff",
    "web_prefix",
]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """The limiters out of the way: their own tests cover them."""
    return {
        "rate_limit_auth": GENEROUS_AUTH_RATE,
        "rate_limit_api": GENEROUS_RATE,
        "rate_limit_public": GENEROUS_RATE,
    }
