"""SQLite's writer slot and the write tracking, on real databases.

The slot tests use a private SQLite file on every leg (the slot exists only for SQLite);
the tracking tests run on the leg's database (SQLite on leg A, PostgreSQL on leg B).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text

from healthforms.db.engine import Database
from healthforms.db.errors import DatabaseUnavailable
from healthforms.db.migrate import upgrade
from healthforms.db.writer import WriterSlot, has_uncommitted_writes, writer_slot
from healthforms.identity.models import Organization


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'writer.db'}"
    upgrade(url)
    return url


@pytest.fixture
async def sqlite_db(sqlite_url: str) -> AsyncIterator[Database]:
    db = Database.connect(sqlite_url)
    yield db
    await db.dispose()


def _org(name: str) -> dict[str, str]:
    return {"id": f"org_{name}", "name": name}


async def test_concurrent_writers_take_turns_in_arrival_order(sqlite_db: Database) -> None:
    order: list[int] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def writer(index: int) -> None:
        async with sqlite_db.sessions() as session:
            await session.execute(insert(Organization).values(**_org(f"w{index}")))
            order.append(index)
            if index == 0:
                first_in.set()
                await release_first.wait()  # hold the slot while the others queue
            await session.commit()

    first = asyncio.create_task(writer(0))
    await first_in.wait()
    async with sqlite_db.sessions() as probe:
        slot = writer_slot(probe)
    assert slot is not None
    others = []
    for index in range(1, 12):  # within the pool (15): each one waits at the slot
        others.append(asyncio.create_task(writer(index)))
        async with asyncio.timeout(10):
            while slot.waits < index:  # queued at the slot before the next one starts
                await asyncio.sleep(0.001)
    assert order == [0]  # nobody wrote past the holder, and nobody failed
    release_first.set()
    await asyncio.gather(first, *others)
    assert order == list(range(12))
    async with sqlite_db.sessions() as session:
        names = (await session.execute(select(Organization.name))).scalars().all()
    assert sorted(names) == sorted(f"w{i}" for i in range(12))


async def test_reads_do_not_wait_for_the_writer(sqlite_db: Database) -> None:
    async with sqlite_db.sessions() as writing:
        await writing.execute(insert(Organization).values(**_org("held")))
        async with sqlite_db.sessions() as reading:
            # WAL: a reader sees the last commit while the writer holds the slot.
            count = (await reading.execute(text("select count(*) from organizations"))).scalar()
        assert count == 0
        await writing.commit()


async def test_a_writer_that_waits_too_long_goes_ahead() -> None:
    """A holder that never lets go (a connection lost outside the pool) must not stop
    every writer: after the wait the next one takes the slot, and SQLite's own lock
    decides."""
    slot = WriterSlot(timeout_s=0.3)
    stuck, waiter, later = object(), object(), object()
    await slot.acquire(stuck)
    await asyncio.create_task(slot.acquire(waiter))
    assert slot.takeovers == 1
    slot.release(stuck)  # the old holder's late release frees nothing now
    queued = asyncio.create_task(slot.acquire(later))
    await asyncio.sleep(0.05)
    assert not queued.done()
    slot.release(waiter)
    await asyncio.wait_for(queued, 2)


async def test_a_task_writing_on_two_connections_fails_at_once(sqlite_db: Database) -> None:
    async with sqlite_db.sessions() as outer:
        await outer.execute(insert(Organization).values(**_org("outer")))
        async with sqlite_db.sessions() as inner:
            with pytest.raises(DatabaseUnavailable, match="nested write"):
                await inner.execute(insert(Organization).values(**_org("inner")))
        await outer.commit()


async def test_a_release_from_another_thread_wakes_the_next_writer() -> None:
    slot = WriterSlot(timeout_s=5)
    first, second = object(), object()
    await slot.acquire(first)

    async def second_writer() -> None:
        await slot.acquire(second)

    waiting = asyncio.create_task(second_writer())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    # The pool may hand back a connection collected on another thread.
    thread = threading.Thread(target=slot.release, args=(first,))
    thread.start()
    thread.join()
    await asyncio.wait_for(waiting, 2)
    assert slot.held


async def test_a_cancelled_writer_passes_the_slot_on() -> None:
    slot = WriterSlot(timeout_s=5)
    first, second, third = object(), object(), object()
    await slot.acquire(first)
    cancelled = asyncio.create_task(slot.acquire(second))
    third_in = asyncio.create_task(slot.acquire(third))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    slot.release(first)
    await asyncio.wait_for(third_in, 2)
    assert cancelled.cancelled()
    slot.release(third)
    assert not slot.held


async def test_the_slot_is_freed_when_a_transaction_rolls_back(sqlite_db: Database) -> None:
    async with sqlite_db.sessions() as session:
        await session.execute(insert(Organization).values(**_org("gone")))
        slot = writer_slot(session)
        assert slot is not None and slot.held
        await session.rollback()
    assert not slot.held
    async with sqlite_db.sessions() as session:
        await session.execute(insert(Organization).values(**_org("kept")))
        await session.commit()
    assert not slot.held


async def test_uncommitted_writes_are_tracked_per_transaction(database_url: str) -> None:
    db = Database.connect(database_url)
    try:
        async with db.sessions() as session:
            assert not await has_uncommitted_writes(session)
            await session.execute(select(Organization.id).limit(1))
            assert not await has_uncommitted_writes(session)  # a read is not a write
            session.add(Organization(id="org_tracked_pending", name="pending"))
            assert await has_uncommitted_writes(session)  # pending, not yet flushed
            await session.flush()
            assert await has_uncommitted_writes(session)  # flushed, not committed
            await session.rollback()
            assert not await has_uncommitted_writes(session)
            await session.execute(insert(Organization).values(**_org("tracked_core")))
            assert await has_uncommitted_writes(session)  # Core DML counts too
            await session.commit()
            assert not await has_uncommitted_writes(session)
    finally:
        await db.dispose()


async def test_a_connection_lost_inside_a_transaction_rolls_back_cleanly(
    database_url: str,
) -> None:
    """What a server that went away mid-transaction leaves: an invalidated connection.
    Ending its transaction must not trip over it (a PendingRollbackError became a 500
    in the PostgreSQL-stopped drill), and the next writer must get through."""
    db = Database.connect(database_url)
    try:
        async with db.sessions() as session:
            await session.execute(insert(Organization).values(**_org("lost_mid_write")))
            connection = await session.connection()
            await connection.invalidate()
            await session.rollback()
        async with db.sessions() as session:
            await session.execute(insert(Organization).values(**_org("after_the_loss")))
            await session.commit()
            names = (await session.execute(select(Organization.name))).scalars().all()
        assert "after_the_loss" in names and "lost_mid_write" not in names
    finally:
        await db.dispose()
