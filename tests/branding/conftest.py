"""A clinic with a published form, and signed-in staff of each role (tests/support)."""

from tests.support.response_fixtures import (
    StaffFactory,
    admin,
    app_with,
    clinic,
    db,
    keys,
    settings_overrides,
    staff,
)

__all__ = [
    "StaffFactory",
    "admin",
    "app_with",
    "clinic",
    "db",
    "keys",
    "settings_overrides",
    "staff",
]
