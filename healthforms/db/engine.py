"""Async engine and sessions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from healthforms.db.errors import DatabaseUnavailable
from healthforms.db.writer import WriterSlot, track_writes

__all__ = ["Database", "DatabaseUnavailable", "backend_name", "create_engine"]


def backend_name(url: str) -> str:
    """`sqlite` or `postgresql`, as /health reports it."""
    return "sqlite" if make_url(url).get_backend_name() == "sqlite" else "postgresql"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; busy_timeout queues writers
    # (several workers share the file) instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# How long a writer waits for SQLite's writer slot (as long as its busy handler waits
# for another process's writer); then 503, as for any other database outage.
SQLITE_WRITE_WAIT_S = 10.0


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    backend = backend_name(url)
    if backend == "sqlite":
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_WRITE_WAIT_S}, pool_timeout=SQLITE_WRITE_WAIT_S
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        track_writes(engine, sqlite_slot=WriterSlot(timeout_s=SQLITE_WRITE_WAIT_S))
        return engine
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=5,
        connect_args={"timeout": 3, "command_timeout": 30},
    )
    _ping_when_idle(engine)
    track_writes(engine, sqlite_slot=None)
    return engine


# A pooled PostgreSQL connection that answered less than this long ago is handed out
# without a ping. SQLAlchemy's pool_pre_ping pings on every checkout (asyncpg's ping
# is BEGIN, SELECT 1, ROLLBACK: three round trips, and a request checks out once per
# transaction); under load a connection is back in use within milliseconds. One that
# lost its server while in use fails that request (503, the client retries) and the
# dialect then invalidates the whole pool, so the next checkouts reconnect.
PING_AFTER_IDLE_S = 1.0
_IDLE_SINCE = "healthforms.idle_since"


def _ping_when_idle(engine: AsyncEngine) -> None:
    pool = engine.sync_engine.pool

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return  # just connected, or answered a moment ago
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool drops this connection and checks out another (a fresh one if
            # need be), as pool_pre_ping would.
            raise DisconnectionError() from exc

    event.listen(pool, "checkin", checked_in)
    event.listen(pool, "checkout", checked_out)


@dataclass(eq=False)  # an identity, not a value: hashable, so caches can key on it
class Database:
    """The engine plus a session factory; one per process."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    url: str
    _answered_at: float = field(default=float("-inf"), repr=False)  # last good ping

    @classmethod
    def connect(cls, url: str) -> Database:
        engine = create_engine(url)
        return cls(
            engine=engine,
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            url=url,
        )

    @property
    def backend(self) -> str:
        return backend_name(self.url)

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    async def ping(self, timeout_s: float = 2.0) -> str:
        """Return the server version; raise DatabaseUnavailable if it does not answer."""
        if self.is_sqlite:
            # An open pooled connection keeps answering after its file was deleted or
            # its directory removed; the data is gone all the same.
            database = make_url(self.url).database
            if database and database != ":memory:" and not Path(database).is_file():
                raise DatabaseUnavailable("database file missing")
        try:
            async with asyncio.timeout(timeout_s), self.engine.connect() as conn:
                if self.is_sqlite:
                    version = (await conn.execute(text("select sqlite_version()"))).scalar_one()
                else:
                    version = (await conn.execute(text("show server_version"))).scalar_one()
        except (OperationalError, DBAPIError, OSError, TimeoutError) as exc:
            self._answered_at = float("-inf")
            raise DatabaseUnavailable(type(exc).__name__) from exc
        self._answered_at = time.monotonic()
        return str(version)

    async def answers(self, *, trust_s: float, timeout_s: float = 2.0) -> bool:
        """Whether the database answers; a good ping is trusted for `trust_s` seconds
        (so a probe under load costs no query per call), a failure never is."""
        if time.monotonic() - self._answered_at < trust_s:
            return True
        try:
            await self.ping(timeout_s=timeout_s)
        except DatabaseUnavailable:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
