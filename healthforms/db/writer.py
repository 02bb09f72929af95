"""Who is writing: SQLite's one writer slot per process, and whether a connection wrote.

SQLite lets one connection write at a time. Left alone, concurrent writers in one
process race for the file's lock and sleep in SQLite's busy handler (1, 2, 5 ... 100 ms
naps), so 50 concurrent saves crawl and then fail with "database is locked". Here every
connection of the process queues for one asyncio slot before its first write statement
and keeps it until its transaction ends (the connection goes back to the pool), so
in-process writers take turns in FIFO order without sleeping, and SQLite's busy handler
only arbitrates between processes (several workers on one file stay correct, serialised
by SQLite, just slower).

The slot is taken where SQLite takes its lock: the driver (pysqlite's legacy mode) sends
BEGIN right before the first INSERT/UPDATE/DELETE, and reads outside a write run in
autocommit. A read-then-write transaction therefore never holds a stale snapshot.

On every backend each connection also records whether its open transaction wrote, so a
caller can tell whether committing now would commit someone else's work
(`has_uncommitted_writes`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from weakref import WeakKeyDictionary

import structlog
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.util import await_only

from healthforms.db.errors import DatabaseUnavailable

log = structlog.get_logger("healthforms.db")

_WROTE = "healthforms.wrote"  # connection record info: the open transaction wrote
_HOLDS_SLOT = "healthforms.writer_slot"
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _is_write(statement: str) -> bool:
    return statement.lstrip()[:7].upper().startswith(_WRITE_VERBS)


class WriterSlot:
    """One writer at a time in this process, first come first served.

    Not an asyncio.Lock: the pool may hand a connection back from another thread (a
    connection collected after its task died), and a slot released there must still
    wake the next writer on the loop's own thread.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._owner: object | None = None  # the connection record's info dict
        self._owner_task: asyncio.Task[Any] | None = None
        self._waiters: deque[tuple[asyncio.Future[None], object]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.waits = 0  # writers that found the slot taken
        self.takeovers = 0  # writers that waited timeout_s and went ahead

    @property
    def held(self) -> bool:
        return self._owner is not None

    async def acquire(self, owner: object) -> None:
        if self._owner is owner:
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (tests run several): nothing from the old one can wait.
            self._loop, self._owner, self._owner_task = loop, None, None
            self._waiters.clear()
        task = asyncio.current_task()
        if self._owner is None and not self._waiters:
            self._owner, self._owner_task = owner, task
            return
        if task is not None and task is self._owner_task:
            # This task already writes on another connection and would wait for itself.
            raise DatabaseUnavailable("nested write on a second SQLite connection")
        self.waits += 1
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append((waiter, owner))
        try:
            async with asyncio.timeout(self.timeout_s):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self._owner_task = task  # handed over just as the wait ran out: ours
                return
            # The slot orders writers; SQLite's own lock keeps them correct. A holder
            # this slow (or a connection lost without going back to the pool) must not
            # stop every writer: take the slot over and let SQLite arbitrate (its busy
            # timeout answers "database is locked", a 503, if the file is still locked).
            self._drop(waiter)
            log.warning("sqlite_writer_slot_taken_over", waited_s=self.timeout_s)
            self.takeovers += 1
            self._owner, self._owner_task = owner, task
            return
        except BaseException:
            self._drop(waiter)
            raise
        self._owner_task = task

    def _drop(self, waiter: asyncio.Future[None]) -> None:
        """A waiter that gave up: out of the queue, or pass the slot on if it was given."""
        if waiter.done() and not waiter.cancelled() and self._owner is not None:
            self._hand_over()
            return
        self._waiters = deque(item for item in self._waiters if item[0] is not waiter)

    def release(self, owner: object) -> None:
        if self._owner is not owner:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed() and not _on_loop(loop):
            loop.call_soon_threadsafe(self.release, owner)
            return
        self._hand_over()

    def _hand_over(self) -> None:
        self._owner, self._owner_task = None, None
        while self._waiters:
            waiter, owner = self._waiters.popleft()
            if not waiter.done():
                self._owner = owner
                waiter.set_result(None)
                return


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # another thread (the pool collecting a lost connection)
        return False


_SLOTS: WeakKeyDictionary[Engine, WriterSlot] = WeakKeyDictionary()


def writer_slot(session: AsyncSession) -> WriterSlot | None:
    """The SQLite writer slot of the engine `session` uses; None on PostgreSQL."""
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    return _SLOTS.get(engine)


def track_writes(engine: AsyncEngine, *, sqlite_slot: WriterSlot | None) -> None:
    """Install the write tracking (and, for SQLite, the writer slot) on `engine`."""
    sync_engine = engine.sync_engine
    if sqlite_slot is not None:
        _SLOTS[sync_engine] = sqlite_slot

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before_execute(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if not _is_write(statement):
            return
        info = conn.info
        if sqlite_slot is not None and not info.get(_HOLDS_SLOT):
            await_only(sqlite_slot.acquire(info))
            info[_HOLDS_SLOT] = True
        info[_WROTE] = True

    def _transaction_ended(conn: Connection) -> None:
        if conn.invalidated:
            # Lost under the transaction (the server went away): `info` would try to
            # revalidate it and raise; the pool's invalidate event frees the slot.
            return
        conn.info.pop(_WROTE, None)

    event.listen(sync_engine, "commit", _transaction_ended)
    event.listen(sync_engine, "rollback", _transaction_ended)

    def _returned(_dbapi_connection: Any, record: Any, *_args: Any) -> None:
        # Back in the pool: the transaction is over (committed, or rolled back by the
        # pool's reset), so the next writer may go.
        info = record.info if record is not None else None
        if info is None:
            return
        info.pop(_WROTE, None)
        if sqlite_slot is not None and info.pop(_HOLDS_SLOT, None):
            sqlite_slot.release(info)

    pool = sync_engine.pool
    for name in ("checkin", "invalidate", "soft_invalidate", "close"):
        event.listen(pool, name, _returned)


def _info(connection: AsyncConnection) -> dict[Any, Any]:
    """The connection record's info dict (the pool keeps it with the DBAPI connection)."""
    sync = connection.sync_connection
    if sync is None:  # pragma: no cover - a session's connection is always started
        raise RuntimeError("connection not started")
    return sync.info


async def has_uncommitted_writes(session: AsyncSession) -> bool:
    """Whether committing `session` now would commit writes made before this call."""
    if session.new or session.dirty or session.deleted:
        return True
    if not session.in_transaction():
        return False
    return bool(_info(await session.connection()).get(_WROTE))


async def claim_writer(session: AsyncSession) -> None:
    """Take the SQLite writer slot for `session`'s connection now, before a read that
    the coming write depends on (the audit chain's tail); a no-op elsewhere."""
    slot = writer_slot(session)
    if slot is None:
        return
    info = _info(await session.connection())
    if not info.get(_HOLDS_SLOT):
        await slot.acquire(info)
        info[_HOLDS_SLOT] = True
