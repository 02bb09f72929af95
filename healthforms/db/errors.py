"""The database's own failure, answered as 503 (see db/outage.py)."""

from __future__ import annotations


class DatabaseUnavailable(Exception):
    """The database did not answer; /health says 503."""
