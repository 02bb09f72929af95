"""A clinic with a published form, and staff clients of each role (tests/support)."""

from tests.support.response_fixtures import StaffFactory, admin, clinic, db, keys, staff

__all__ = ["StaffFactory", "admin", "clinic", "db", "keys", "staff"]
