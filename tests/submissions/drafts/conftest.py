"""A clinic with a published intake form (tests/support), the limiters out of the way
unless a test sets its own (app_with); for the browser test, tests/web's server."""

from __future__ import annotations

from typing import Any

import pytest

from tests.forms.helpers import GENEROUS_RATE
from tests.support.identity import GENEROUS_AUTH_RATE
from tests.support.response_fixtures import app_with, clinic, db, keys
from tests.web.conftest import browser, mailbox, server, web_prefix

__all__ = [
    "app_with",
    "mailbox",
    "browser",
    "clinic",
    "db",
    "keys",
    "server",
    "settings_overrides",
    "web_prefix",
]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "rate_limit_auth": GENEROUS_AUTH_RATE,
        "rate_limit_api": GENEROUS_RATE,
        "rate_limit_public": GENEROUS_RATE,
    }
