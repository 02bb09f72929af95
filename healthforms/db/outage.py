"""Whether an exception means the database is unreachable (answer 503 and let clients retry)."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from healthforms.db.engine import DatabaseUnavailable

_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    OperationalError,  # includes SQLite's "database is locked" after its busy timeout
    InterfaceError,
    PoolTimeout,
    ConnectionError,
    TimeoutError,
)


# SQLSTATE classes of a lost server: 08 connection exception, 57P01-03 admin/crash
# shutdown and "cannot connect now" (PostgreSQL stopping or starting).
_OUTAGE_SQLSTATES = ("08", "57P")


def _is_connection_sqlstate(driver_error: BaseException | None) -> bool:
    for candidate in (driver_error, getattr(driver_error, "__cause__", None)):
        sqlstate = getattr(candidate, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATES):
            return True
    return False


def is_database_outage(exc: BaseException) -> bool:
    """Whether an exception (or what it was raised from) means the database is unreachable."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, _OUTAGE_ERRORS):
            return True
        if isinstance(current, DBAPIError) and (
            current.connection_invalidated or _is_connection_sqlstate(current.orig)
        ):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False
