"""Group commit of audit events: the events of concurrent requests share a transaction.

Every read of patient data writes an audit event, and each event's transaction holds
its chain (an advisory lock on PostgreSQL, the writer slot on SQLite) for a tail read,
an INSERT and a COMMIT. Fifty concurrent reads made fifty such transactions in a row.
Here a request hands its event to the process's GroupAppender and waits: one task
writes whatever has gathered in one transaction (one tail read per chain, one INSERT,
one COMMIT), then the next batch, so the cost per event falls as the load rises.

Nothing is weaker for it: a request still returns only after its event committed (or
fails with the error its batch got). A batch that keeps failing is written again one
event at a time, so one refused event cannot fail the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from weakref import WeakKeyDictionary

import structlog

from healthforms.audit.events import AuditEvent
from healthforms.audit.store import append_event, append_events
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database

log = structlog.get_logger("healthforms.audit")

MAX_BATCH = 200
# Attempts for each event of a batch that failed, written again one at a time.
RETRY_ALONE = 3


class GroupAppender:
    def __init__(self, db: Database, keys: KeyRing, *, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.keys = keys
        self.max_batch = max_batch
        self._pending: list[tuple[AuditEvent, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.events = 0

    async def append(self, event: AuditEvent) -> None:
        """Return once `event` is committed (raise what its transaction raised)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((event, done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="audit-group-commit")
        # A caller that goes away (client gone) does not cancel the write: the event
        # of a read that may have been served is written all the same.
        await asyncio.shield(done)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            await self._write(batch)

    async def _write(self, batch: list[tuple[AuditEvent, asyncio.Future[None]]]) -> None:
        events = [event for event, _ in batch]
        try:
            # append_events retries a lost race for a chain's tail by itself.
            await append_events(self.db, self.keys, events)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request(s)
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            log.warning("audit_batch_failed", size=len(batch), error_type=type(exc).__name__)
        else:
            self.batches += 1
            self.events += len(events)
            for _, done in batch:
                _settle(done, None)
            return
        for event, done in batch:
            try:
                await append_event(self.db, self.keys, event, attempts=RETRY_ALONE)
            except Exception as exc:  # noqa: BLE001 - this event's request gets it
                _settle(done, exc)
            else:
                _settle(done, None)

    async def close(self) -> None:
        """Let the events already handed over be written (at shutdown)."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await self._task


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


_APPENDERS: WeakKeyDictionary[Database, GroupAppender] = WeakKeyDictionary()


async def close_appender(db: Database) -> None:
    appender = _APPENDERS.pop(db, None)
    if appender is not None:
        await appender.close()


def group_appender(db: Database, keys: KeyRing) -> GroupAppender:
    """The process's appender for `db` (one per database: the group is its writers)."""
    appender = _APPENDERS.get(db)
    if appender is None or appender.keys is not keys:
        appender = _APPENDERS[db] = GroupAppender(db, keys)
    return appender
