"""Distributed locks: Redis leases with fencing numbers, a database lease when Redis is down.

Guarantees (DESIGN.md "Algorithms", "When Redis is unavailable"):
- Mutual exclusion per key while Redis answers: `SET NX PX` inside acquire_lock.lua;
  release and renew are compare-then-act scripts, so only the holder ends or extends
  its lease.
- Every acquisition gets a fencing number from `fence:<kind>:{<id>}`. The protected
  write calls `fence_allows(session, lock.key, lock.fence)` in its own transaction and
  the database refuses a number lower than one already written, so a holder whose
  lease lapsed under a slow job (GC pause, network stall) cannot overwrite what a
  newer holder wrote. Numbers are at least the clock in microseconds, so they keep
  growing across a Redis FLUSH, a restart without persistence and the fallback.
- Fair under contention: `acquire(..., wait_ms=...)` waits in a FIFO queue kept in
  Redis beside the lock; while anyone waits, a free lock goes to the head of the
  queue only (plain non-waiting acquires included), so no waiter starves.
- Redis unavailable: leases move to the `lock_leases` table, taken by one conditional
  upsert. A lease row outlives the request (the form-edit lock spans requests, which
  a PostgreSQL advisory lock cannot), works on SQLite and PostgreSQL alike, and is
  seen by every instance. Each fallback decision is logged and counted in
  `healthforms_degraded_decisions_total{feature="locks"}`.
- Switching backends: for a while after this instance saw Redis fail, a Redis
  acquisition also checks `lock_leases` for a live lease of someone else; a lease taken
  in the database moves back to Redis on its next renewal. An instance that never
  saw the outage does not check, so a short overlap is possible there: the fencing
  check is what keeps the data safe in that window.
- An exhausted Redis pool is not an outage: Redis may hold the lock, so no fallback
  decides; `acquire`, `renew`, `holder` and `pttl` raise LockUnavailable (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, cast

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Table,
    and_,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import utcnow
from healthforms.db.base import UTCDateTime
from healthforms.db.engine import Database
from healthforms.errors import ServiceUnavailable
from healthforms.metrics import Metrics
from healthforms.redis.client import RedisService
from healthforms.redis.errors import PoolExhausted, RedisUnavailable
from healthforms.redis.scripts import LuaScript
from healthforms.security.fencing import LockFence, LockLease

log = structlog.get_logger("healthforms.security.locks")

PDF_LOCK_KEY = "lock:pdf-gen:{{{response_id}}}"  # braces: a Cluster hash tag; 5 min
FORM_EDIT_LOCK_KEY = "lock:form-edit:{{{form_id}}}"  # 2 min, renewed by the editor
PDF_LOCK_TTL_MS = 300_000
FORM_EDIT_LOCK_TTL_MS = 120_000

# The fencing counter lives 30 days past its last use. It must outlive every lease
# by far, yet a resource that is never locked again must not keep a key forever; if
# it does lapse, the next number restarts at the clock, still above every earlier one.
FENCE_TTL_MS = 30 * 24 * 3600 * 1000
# A waiter that has not polled for this long loses its place (crashed or gone).
WAITER_LEASE_MS = 1_500
# How often a waiter polls when no release in this process wakes it first.
WAITER_POLL_S = 0.01
# On the database fallback there is no queue: poll less often (with jitter) so that
# waiters do not hammer the single SQLite writer.
DB_POLL_S = 0.05
# After this instance saw Redis fail, Redis acquisitions also look for live database
# leases for this long (at least the longest lease handed out meanwhile).
OUTAGE_GRACE_S = PDF_LOCK_TTL_MS / 1000
MAX_KEY_LENGTH = 200

ACQUIRE_SCRIPT = LuaScript.beside(__file__, "acquire_lock.lua")
RELEASE_SCRIPT = LuaScript.beside(__file__, "release_lock.lua")
RENEW_SCRIPT = LuaScript.beside(__file__, "renew_lock.lua")

_FENCES = cast(Table, LockFence.__table__)
_LEASES = cast(Table, LockLease.__table__)

# Where a lock was acquired: Redis, or the lock_leases table while Redis was down.
LockBackend = Literal["redis", "database"]


@dataclass(frozen=True, slots=True)
class HeldLock:
    key: str  # unprefixed logical key, e.g. "lock:pdf-gen:{r1}"
    token: str
    fence: int  # fencing number of this acquisition (monotonic per resource)
    ttl_ms: int
    backend: LockBackend


class LockBusy(Exception):
    """Another holder has the lock; `holder` is its token (None if unknown or only queued)."""

    def __init__(self, holder: str | None = None, key: str = "") -> None:
        super().__init__(f"lock busy: {key}" if key else "lock busy")
        self.holder = holder
        self.key = key


class LockUnavailable(ServiceUnavailable):
    """No Redis connection became free in time (pool exhausted): answer 503, never guess.

    Redis itself may be fine and hold the lock, so the database fallback, which cannot
    see Redis leases, must not decide here.
    """

    message = "Locks are temporarily unavailable; try again shortly."


@dataclass(frozen=True, slots=True)
class _Attempt:
    lock: HeldLock | None
    holder: str | None
    exhausted: bool = False  # the pool had no free connection: nothing was decided


class _Line:
    """Waiters of one key in this process; the first one polls Redis for all of them."""

    __slots__ = ("released", "waiters")

    def __init__(self) -> None:
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.released = asyncio.Event()  # set by a release in this process


def new_token() -> str:
    """An unguessable lock token (128 bits): nobody can release a lock by guessing it."""
    return secrets.token_urlsafe(16)


def fence_key(key: str) -> str:
    """`lock:pdf-gen:{r1}` -> `fence:pdf-gen:{r1}`: same hash tag, so one script reaches both."""
    return "fence:" + key.removeprefix("lock:")


def _clock_fence() -> int:
    return time.time_ns() // 1000


def _decode(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# Statuses of acquire_lock.lua.
ACQUIRE_BUSY, ACQUIRE_NEW, ACQUIRE_REENTERED = 0, 1, 2
# Statuses of renew_lock.lua.
RENEW_LOST, RENEW_RENEWED, RENEW_TAKEN_BACK = 0, 1, 2


class LockAcquire(NamedTuple):
    """The reply of acquire_lock.lua, by name."""

    status: int  # ACQUIRE_NEW, ACQUIRE_REENTERED or ACQUIRE_BUSY
    fence: int  # the fencing number of this holding; 0 when busy
    holder: str  # busy: the holder's token ('' when none holds it); '' otherwise
    ttl_ms: int  # held: the lease just set; busy: the holder's remaining lease (0 if none)

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> LockAcquire:
        return cls(
            status=int(reply[0]),
            fence=int(reply[1]),
            holder=_decode(reply[2]),
            ttl_ms=int(reply[3]),
        )


class LockRenew(NamedTuple):
    """The reply of renew_lock.lua, by name."""

    status: int  # RENEW_RENEWED, RENEW_TAKEN_BACK or RENEW_LOST

    @classmethod
    def from_reply(cls, reply: Any) -> LockRenew:
        return cls(int(reply))

    @property
    def held(self) -> bool:
        """The token holds the Redis lock now (renewed or taken back)."""
        return self.status != RENEW_LOST


class LockRelease(NamedTuple):
    """The reply of release_lock.lua, by name."""

    released: bool  # False: not held by this token (lapsed, or a newer holder has it)

    @classmethod
    def from_reply(cls, reply: Any) -> LockRelease:
        return cls(bool(reply))


def _check(key: str, ttl_ms: int) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError("lock key must be 1-200 characters")
    if ttl_ms <= 0:
        raise ValueError("lock ttl_ms must be positive")


class LockService:
    """Locks shared by every instance; see the module docstring for the guarantees."""

    def __init__(self, redis: RedisService, db: Database, metrics: Metrics) -> None:
        self._redis = redis
        self._db = db
        self._metrics = metrics
        self._check_db_until = 0.0
        # Tokens of Redis locks whose lease moved to the database during an outage:
        # their next Redis renewal may take the free Redis key back.
        self._moved: set[str] = set()
        # Per key: the tasks of this process waiting for it, in arrival order.
        self._lines: dict[str, _Line] = {}

    # ----------------------------------------------------------------- public API

    async def acquire(
        self,
        key: str,
        ttl_ms: int,
        *,
        token: str | None = None,
        kind: str = "generic",
        wait_ms: int = 0,
    ) -> HeldLock | None:
        """The lock, or None while another holder has it.

        With `token` given (e.g. a user id), the same token re-enters: its lease is
        renewed and the lock returned with the fencing number it already had. With
        `wait_ms`, wait up to that long in the fair queue. Raises LockUnavailable (503)
        when no Redis connection became free in time.
        """
        attempt = await self._acquire(
            key, ttl_ms, token or new_token(), wait_ms, may_reenter=token is not None
        )
        if attempt.lock is None:
            self._metrics.lock_conflicts.labels(kind=kind).inc()
        return attempt.lock

    async def reenter(
        self, key: str, ttl_ms: int, token: str, *, kind: str = "generic"
    ) -> tuple[HeldLock | None, str | None]:
        """(the lock, holder): re-enter a lock `token` holds (lease renewed, same fence);
        never take a free one. (None, None) when free, (None, other) when held by another.

        One round trip where holder() + acquire(token=...) take two. During and shortly
        after a Redis outage it is exactly those two (they consult the database leases).
        """
        _check(key, ttl_ms)
        if not self._recently_degraded() and self._redis.available:
            keys = self._redis_keys(key)
            args: list[str | int] = [token, ttl_ms, FENCE_TTL_MS, 0, WAITER_LEASE_MS, 1]
            try:
                reply = await self._redis.pipelined(
                    lambda r: ACQUIRE_SCRIPT(r, keys=keys, args=args)
                )
            except PoolExhausted as exc:
                raise LockUnavailable() from exc
            except RedisUnavailable:
                self._note_outage(ttl_ms)
            else:
                acquired = LockAcquire.from_reply(reply)
                if acquired.status == ACQUIRE_BUSY:
                    return None, acquired.holder or None
                return HeldLock(key, token, acquired.fence, ttl_ms, backend="redis"), token
        holder = await self.holder(key)
        if holder != token:
            return None, holder
        return await self.acquire(key, ttl_ms, token=token, kind=kind), token

    async def renew(self, lock: HeldLock, ttl_ms: int | None = None) -> bool:
        """Extend the lease to `ttl_ms` (default: the lock's own); False if it is not ours now."""
        ttl = ttl_ms if ttl_ms is not None else lock.ttl_ms
        _check(lock.key, ttl)
        take_back = lock.backend == "database" or lock.token in self._moved
        try:
            renewed_here = LockRenew.from_reply(
                await self._redis.pipelined(
                    lambda r: RENEW_SCRIPT(
                        r, keys=[self._redis.key(lock.key)], args=[lock.token, ttl, int(take_back)]
                    ),
                    idempotent=True,
                )
            ).held
        except PoolExhausted as exc:
            raise LockUnavailable() from exc
        except RedisUnavailable:
            self._note_outage(ttl)
            if lock.backend == "database":
                renewed = await self._db_renew(lock, ttl)
            else:
                # Keep the guarantee through the outage: the lease moves to the database
                # with the fencing number it already has.
                claimed = await self._db_claim(lock.key, lock.token, ttl, lock.fence)
                renewed = claimed.lock is not None
                if renewed:
                    self._moved.add(lock.token)
            self._degraded("renew", "renewed" if renewed else "lost")
            return renewed
        if renewed_here and lock.backend == "database":
            # Back on Redis; keep the row live too for instances still on the fallback.
            with contextlib.suppress(SQLAlchemyError):
                await self._db_renew(lock, ttl)
        if renewed_here:
            self._moved.discard(lock.token)
        return renewed_here

    async def release(self, lock: HeldLock) -> bool:
        """Release the lock if this holder still owns it; return whether it did."""
        released = False
        redis_failed = False
        try:
            # Compare and delete in one script: a holder whose lease expired must not
            # delete the lock that a newer holder has taken since.
            released = LockRelease.from_reply(
                await self._redis.pipelined(
                    lambda r: RELEASE_SCRIPT(
                        r, keys=[self._redis.key(lock.key)], args=[lock.token]
                    ),
                    idempotent=True,
                )
            ).released
        except PoolExhausted:
            # Not released; the lease runs out by itself. The database cannot decide
            # for a lease that is in Redis.
            log.warning("lock_release_skipped", key=lock.key, reason="redis pool exhausted")
            return False
        except RedisUnavailable:
            redis_failed = True
            self._note_outage(lock.ttl_ms)
        if redis_failed or lock.backend == "database" or lock.token in self._moved:
            released = await self._db_release(lock) or released
            if redis_failed:
                self._degraded("release", "released" if released else "not_held")
        self._moved.discard(lock.token)
        self._wake(lock.key)
        return released

    async def holder(self, key: str) -> str | None:
        """The token of the current holder, None if the lock is free."""
        try:
            value = await self._redis.call(lambda r: r.get(self._redis.key(key)), idempotent=True)
        except PoolExhausted as exc:
            raise LockUnavailable() from exc
        except RedisUnavailable:
            self._note_outage(0)
            self._degraded("read", "database")
            lease = await self._db_lease(key)
            return lease[0] if lease else None
        if value is None and self._recently_degraded():
            # A lease taken or moved to the database during the outage is still the
            # lock until its holder's next renewal brings it back to Redis.
            lease = await self._db_lease(key)
            return lease[0] if lease else None
        return _decode(value) if value is not None else None

    async def pttl(self, key: str) -> int | None:
        """Remaining lease in ms, None if the lock is free."""
        try:
            ms = int(
                await self._redis.call(lambda r: r.pttl(self._redis.key(key)), idempotent=True)
            )
        except PoolExhausted as exc:
            raise LockUnavailable() from exc
        except RedisUnavailable:
            self._note_outage(0)
            self._degraded("read", "database")
            lease = await self._db_lease(key)
            return lease[1] if lease else None
        if ms < 0 and self._recently_degraded():
            lease = await self._db_lease(key)
            return lease[1] if lease else None
        # -2: no such key; -1 (no TTL) cannot happen for our keys, and is no lease.
        return ms if ms >= 0 else None

    def hold(
        self, key: str, ttl_ms: int, *, kind: str = "generic", wait_ms: int = 0
    ) -> AbstractAsyncContextManager[HeldLock]:
        """Hold the lock for the body, or raise LockBusy.

        The lease is renewed every ttl/3 in a background task while the body runs;
        on exit, exception or cancellation the renewal stops and the lock is released.
        """
        return self._hold(key, ttl_ms, kind, wait_ms)

    async def fence_allows(self, session: AsyncSession, resource: str, fence: int) -> bool:
        """Record `fence` for `resource` unless a higher number was recorded; True = write.

        Call it inside the transaction of the protected write, with `lock.key` as the
        resource, and write only on True. On PostgreSQL the upsert locks the row
        until that transaction ends, so two writers are ordered by their numbers,
        not by who commits first; SQLite has a single writer anyway.
        """
        table = _FENCES
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(table).values(resource=resource, fence=fence, updated_at=utcnow())
        upsert = stmt.on_conflict_do_update(
            index_elements=[table.c.resource],
            set_={"fence": stmt.excluded.fence, "updated_at": stmt.excluded.updated_at},
            where=table.c.fence <= stmt.excluded.fence,
        ).returning(table.c.fence)
        row = (await session.execute(upsert)).first()
        return row is not None

    # ------------------------------------------------------------- Redis paths

    def _redis_keys(self, key: str) -> list[str]:
        full = self._redis.key(key)
        return [full, self._redis.key(fence_key(key)), full + ":queue", full + ":alive"]

    async def _acquire(
        self, key: str, ttl_ms: int, token: str, wait_ms: int, *, may_reenter: bool
    ) -> _Attempt:
        """One attempt, then (with wait_ms) a wait in line: FIFO in this process, then FIFO
        in Redis among processes. Only the head of this process's line polls Redis, so
        many local waiters cost one poll loop, not a thundering herd on every release."""
        _check(key, ttl_ms)
        # A fresh random token that would only queue behind local waiters skips the
        # attempt (it would be refused: their head is in the shared queue). A given
        # token always tries first: a holder re-entering must not queue behind the
        # tasks that wait for it. queue=False: only a line's head joins the shared
        # queue (and keeps polling); while it is queued, Redis refuses newcomers.
        if wait_ms <= 0 or may_reenter or key not in self._lines:
            attempt = await self._try_acquire(key, ttl_ms, token, queue=False)
            if attempt.exhausted and wait_ms <= 0:
                raise LockUnavailable()
            if attempt.lock is not None or wait_ms <= 0:
                return attempt
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        turn: asyncio.Future[None] = loop.create_future()
        line.waiters.append(turn)
        if line.waiters[0] is turn:
            turn.set_result(None)
        attempt = _Attempt(None, None)
        queued = False
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await turn
            except TimeoutError:
                return attempt
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return attempt
                # The lock was just seen held: wait before polling. A release in this
                # process wakes the head at once; one elsewhere is seen at the next poll.
                poll_s = WAITER_POLL_S if self._redis.available else DB_POLL_S
                jittered = poll_s * (0.5 + random.random())  # noqa: S311 - jitter, not secrets
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(jittered, remaining)):
                        await line.released.wait()
                line.released.clear()
                queued = True
                attempt = await self._try_acquire(key, ttl_ms, token, queue=True)
                if attempt.lock is not None:
                    return attempt
        finally:
            self._leave_line(key, line, turn)
            if queued and attempt.lock is None:
                # Gave up (or cancelled): leave the shared queue now rather than holding
                # up the others until the waiter lease runs out.
                await asyncio.shield(self._leave_queue(key, token))

    def _leave_line(self, key: str, line: _Line, turn: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            line.waiters.remove(turn)
        if not turn.done():
            turn.cancel()
        if line.waiters:
            head = line.waiters[0]
            if not head.done():
                head.set_result(None)
        elif self._lines.get(key) is line:
            del self._lines[key]

    async def _try_acquire(self, key: str, ttl_ms: int, token: str, *, queue: bool) -> _Attempt:
        keys = self._redis_keys(key)
        args: list[str | int] = [token, ttl_ms, FENCE_TTL_MS, int(queue), WAITER_LEASE_MS]
        try:
            # Not idempotent (it hands out a fencing number): never replayed.
            reply = await self._redis.pipelined(lambda r: ACQUIRE_SCRIPT(r, keys=keys, args=args))
        except PoolExhausted:
            return _Attempt(None, None, exhausted=True)
        except RedisUnavailable:
            self._note_outage(ttl_ms)
            attempt = await self._db_claim(key, token, ttl_ms, None)
            self._degraded("acquire", "acquired" if attempt.lock else "busy")
            return attempt
        acquired = LockAcquire.from_reply(reply)
        if acquired.status == ACQUIRE_BUSY:
            return _Attempt(None, acquired.holder or None)
        lock = HeldLock(key=key, token=token, fence=acquired.fence, ttl_ms=ttl_ms, backend="redis")
        if acquired.status == ACQUIRE_NEW and self._recently_degraded():
            lease = await self._db_lease(key)
            if lease is not None and lease[0] != token:
                # Taken in the database during the outage and still live: not ours.
                await self._redis_release_quietly(lock)
                return _Attempt(None, lease[0])
        return _Attempt(lock, None)

    async def _leave_queue(self, key: str, token: str) -> None:
        _, _, queue_key, alive_key = self._redis_keys(key)

        async def leave(r: Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.zrem(queue_key, token)
                pipe.hdel(alive_key, token)
                await pipe.execute()

        with contextlib.suppress(RedisUnavailable, RedisError):
            await self._redis.call(leave, idempotent=True)

    async def _redis_release_quietly(self, lock: HeldLock) -> None:
        with contextlib.suppress(RedisUnavailable, RedisError):
            await self._redis.pipelined(
                lambda r: RELEASE_SCRIPT(r, keys=[self._redis.key(lock.key)], args=[lock.token]),
                idempotent=True,
            )

    def _wake(self, key: str) -> None:
        line = self._lines.get(key)
        if line is not None:
            line.released.set()

    # ------------------------------------------------------------- hold()

    @asynccontextmanager
    async def _hold(
        self, key: str, ttl_ms: int, kind: str, wait_ms: int
    ) -> AsyncIterator[HeldLock]:
        attempt = await self._acquire(key, ttl_ms, new_token(), wait_ms, may_reenter=False)
        if attempt.lock is None:
            self._metrics.lock_conflicts.labels(kind=kind).inc()
            raise LockBusy(attempt.holder, key)
        lock = attempt.lock
        renewer = asyncio.create_task(self._keep_renewed(lock), name=f"lock-renew:{key}")
        try:
            yield lock
        finally:
            renewer.cancel()
            try:
                # Wait for a renewal in flight, so it cannot land after the release.
                await asyncio.wait([renewer])
            finally:
                # Shielded: a second cancellation must not leave the lock held.
                await asyncio.shield(self._release_quietly(lock))

    async def _keep_renewed(self, lock: HeldLock) -> None:
        loop = asyncio.get_running_loop()
        interval_s = lock.ttl_ms / 3000
        next_at = loop.time() + interval_s
        while True:
            # A fixed cadence from the previous start: a slow round trip does not push
            # the following renewal later as well.
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = loop.time() + interval_s
            try:
                if not await self.renew(lock):
                    log.warning("lock_lost", key=lock.key, fence=lock.fence)
                    return
            except (RedisError, SQLAlchemyError, OSError, LockUnavailable) as exc:
                # Try again next round; the lease still has two thirds left.
                log.warning("lock_renew_failed", key=lock.key, error_type=type(exc).__name__)

    async def _release_quietly(self, lock: HeldLock) -> None:
        try:
            await self.release(lock)
        except (RedisError, SQLAlchemyError, OSError) as exc:
            # The lease runs out by itself; nothing else can be done here.
            log.warning("lock_release_failed", key=lock.key, error_type=type(exc).__name__)

    # ------------------------------------------------------- database fallback

    def _note_outage(self, ttl_ms: int) -> None:
        grace = max(OUTAGE_GRACE_S, ttl_ms / 1000)
        self._check_db_until = max(self._check_db_until, time.monotonic() + grace)

    def _recently_degraded(self) -> bool:
        return time.monotonic() < self._check_db_until

    def _degraded(self, operation: str, decision: str) -> None:
        log.warning("lock_fallback", operation=operation, decision=decision)
        self._metrics.degraded_decisions.labels(feature="locks", decision=decision).inc()

    @property
    def _is_postgres(self) -> bool:
        return not self._db.is_sqlite

    def _now(self) -> ColumnElement[datetime]:
        """The lease clock: PostgreSQL's on a shared server, the process clock on SQLite."""
        if self._is_postgres:
            return func.clock_timestamp().cast(UTCDateTime())
        return literal(utcnow(), UTCDateTime())

    def _expires(self, ttl_ms: int) -> ColumnElement[datetime]:
        if self._is_postgres:
            interval = func.make_interval(0, 0, 0, 0, 0, 0, literal(ttl_ms / 1000.0))
            return (func.clock_timestamp() + interval).cast(UTCDateTime())
        return literal(utcnow() + timedelta(milliseconds=ttl_ms), UTCDateTime())

    async def _db_claim(self, key: str, token: str, ttl_ms: int, fence: int | None) -> _Attempt:
        """Take or re-enter the database lease in one conditional upsert.

        fence None: a new acquisition (a fresh number above the lease's, the recorded
        fence's and the clock); otherwise the lease moves here with that number.
        The same live token keeps its number.
        """
        table = _LEASES
        insert = postgresql.insert if self._is_postgres else sqlite.insert
        greatest = func.greatest if self._is_postgres else func.max
        candidate: ColumnElement[int]
        if fence is None:
            # Above the clock and above the number last written under this key, in
            # the same statement (no read-then-write race, one SQLite write lock).
            recorded = select(_FENCES.c.fence).where(_FENCES.c.resource == key).scalar_subquery()
            candidate = greatest(
                literal(_clock_fence(), BigInteger()), func.coalesce(recorded, 0) + 1
            )
        else:
            candidate = literal(fence, BigInteger())
        async with self._db.sessions() as session, session.begin():
            now = self._now()
            stmt = insert(table).values(
                key=key, token=token, expires_at=self._expires(ttl_ms), fence=candidate
            )
            next_fence = (
                greatest(table.c.fence + 1, stmt.excluded.fence)
                if fence is None
                else stmt.excluded.fence
            )
            same_live = and_(table.c.token == stmt.excluded.token, table.c.expires_at > now)
            upsert = stmt.on_conflict_do_update(
                index_elements=[table.c.key],
                set_={
                    "token": stmt.excluded.token,
                    "expires_at": stmt.excluded.expires_at,
                    "fence": case((same_live, table.c.fence), else_=next_fence),
                },
                where=or_(table.c.expires_at <= now, table.c.token == stmt.excluded.token),
            ).returning(table.c.fence)
            row = (await session.execute(upsert)).first()
            if row is not None:
                lock = HeldLock(
                    key=key, token=token, fence=int(row[0]), ttl_ms=ttl_ms, backend="database"
                )
                return _Attempt(lock, None)
            holder = await session.scalar(select(table.c.token).where(table.c.key == key))
            return _Attempt(None, holder)

    async def _db_renew(self, lock: HeldLock, ttl_ms: int) -> bool:
        table = _LEASES
        async with self._db.sessions() as session, session.begin():
            result = await session.execute(
                update(table)
                .where(
                    table.c.key == lock.key,
                    table.c.token == lock.token,
                    table.c.expires_at > self._now(),
                )
                .values(expires_at=self._expires(ttl_ms))
            )
            return bool(cast(CursorResult[Any], result).rowcount)

    async def _db_release(self, lock: HeldLock) -> bool:
        table = _LEASES
        async with self._db.sessions() as session, session.begin():
            result = await session.execute(
                delete(table).where(
                    table.c.key == lock.key,
                    table.c.token == lock.token,
                    table.c.expires_at > self._now(),
                )
            )
            # A lapsed row of ours is dead weight: drop it too, but it was no release.
            await session.execute(
                delete(table).where(table.c.key == lock.key, table.c.token == lock.token)
            )
            return bool(cast(CursorResult[Any], result).rowcount)

    async def _db_lease(self, key: str) -> tuple[str, int] | None:
        """(token, remaining ms) of the live database lease on `key`, if any."""
        table = _LEASES
        async with self._db.sessions() as session:
            row = (
                await session.execute(
                    select(table.c.token, table.c.expires_at, self._now()).where(
                        table.c.key == key, table.c.expires_at > self._now()
                    )
                )
            ).first()
        if row is None:
            return None
        token, expires_at, now = row
        remaining = int((expires_at - now).total_seconds() * 1000)
        return str(token), max(remaining, 0)
