"""The hash-chained audit trail on a real database: concurrency, tampering, removal."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, select, update

from healthforms.audit.events import AuditEvent, Outcome
from healthforms.audit.models import AuditEventRow
from healthforms.audit.store import GENESIS_HASH, append_event, chain_hash, verify_chain
from healthforms.db.engine import Database
from tests.support.servers import REPO_ROOT

APPENDER = """
import asyncio, sys
from healthforms.audit.events import AuditEvent
from healthforms.audit.store import append_event
from healthforms.db.engine import Database

async def main(url: str, count: int, tag: str) -> None:
    db = Database.connect(url)
    try:
        await asyncio.gather(*(
            append_event(db, AuditEvent(action="test.append", resource_id=f"{tag}-{i}"))
            for i in range(count)
        ))
    finally:
        await db.dispose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[Database]:
    database = Database.connect(fresh_database_url)
    try:
        yield database
    finally:
        await database.dispose()


async def all_rows(db: Database) -> list[AuditEventRow]:
    async with db.sessions() as session:
        return list(
            (await session.execute(select(AuditEventRow).order_by(AuditEventRow.id))).scalars()
        )


def event(i: int, **kwargs: object) -> AuditEvent:
    return AuditEvent(action="test.append", resource_id=f"r-{i}", **kwargs)  # type: ignore[arg-type]


async def test_events_link_to_their_predecessor(db: Database) -> None:
    for i in range(3):
        await append_event(
            db,
            event(
                i,
                actor_id="usr_1",
                organization_id="org_1",
                outcome=Outcome.DENIED,
                ip="203.0.113.9",
                user_agent="UA/1.0",
                request_id="req-12345678",
            ),
        )
    rows = await all_rows(db)
    assert [r.id for r in rows] == [1, 2, 3]
    assert rows[0].prev_hash == GENESIS_HASH
    assert rows[1].prev_hash == rows[0].hash and rows[2].prev_hash == rows[1].hash
    assert all(chain_hash(r) == r.hash for r in rows)
    assert await verify_chain(db) == (3, None)


async def test_empty_chain_verifies(db: Database) -> None:
    assert await verify_chain(db) == (0, None)


async def test_concurrent_tasks_never_fork_the_chain(db: Database) -> None:
    await asyncio.gather(*(append_event(db, event(i)) for i in range(40)))
    rows = await all_rows(db)
    assert [r.id for r in rows] == list(range(1, 41))
    assert sorted(r.resource_id or "" for r in rows) == sorted(f"r-{i}" for i in range(40))
    assert await verify_chain(db) == (40, None)


@pytest.mark.multiprocess
async def test_two_processes_appending_at_once_never_fork_the_chain(
    db: Database, fresh_database_url: str
) -> None:
    await append_event(db, event(-1))
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, fresh_database_url, "25", tag],
            cwd=REPO_ROOT,
            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
            stderr=subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    for writer in writers:
        _, err = await asyncio.to_thread(writer.communicate, timeout=120)
        assert writer.returncode == 0, err.decode()[-2000:]
    rows = await all_rows(db)
    assert [r.id for r in rows] == list(range(1, 52))
    tags = {(r.resource_id or "")[:2] for r in rows[1:]}
    assert tags == {"a-", "b-"}
    assert await verify_chain(db) == (51, None)


async def test_altered_row_is_named(db: Database) -> None:
    for i in range(5):
        await append_event(db, event(i, actor_id="usr_1"))
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(AuditEventRow).where(AuditEventRow.id == 3).values(actor_id="usr_evil")
        )
    checked, broken = await verify_chain(db)
    assert broken is not None
    assert broken.event_id == 3 and "altered" in broken.reason
    assert checked == 2


async def test_rehashed_row_breaks_the_next_link(db: Database) -> None:
    for i in range(5):
        await append_event(db, event(i))
    async with db.sessions() as session, session.begin():
        row = (
            await session.execute(select(AuditEventRow).where(AuditEventRow.id == 2))
        ).scalar_one()
        row.outcome = "success-forged"
        row.hash = chain_hash(row)  # the forger recomputes this row's hash...
    _, broken = await verify_chain(db)
    assert broken is not None and broken.event_id == 3  # ...and the next link gives it away
    assert "link" in broken.reason


async def test_removed_row_is_named(db: Database) -> None:
    for i in range(6):
        await append_event(db, event(i))
    async with db.sessions() as session, session.begin():
        await session.execute(delete(AuditEventRow).where(AuditEventRow.id == 4))
    checked, broken = await verify_chain(db)
    assert broken is not None
    assert broken.event_id == 4 and "removed" in broken.reason
    assert checked == 3


async def test_chain_survives_more_than_one_verify_batch(db: Database) -> None:
    for i in range(7):
        await append_event(db, event(i))
    assert await verify_chain(db, batch=3) == (7, None)
