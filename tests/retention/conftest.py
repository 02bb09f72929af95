"""A clinic with a published form, staff of each role, and the app's database and keys
(tests/support), for the retention tests."""

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
