"""The audit chains on a real database: keyed links, one chain per organisation,
checkpoints outside the database, concurrency, and every way of cutting them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from healthforms.audit.checkpoints import CheckpointWriter, read_checkpoints, write_checkpoint
from healthforms.audit.events import AuditEvent, Outcome
from healthforms.audit.models import AuditEventRow
from healthforms.audit.store import (
    GENESIS_HASH,
    LEGACY_CHAIN,
    ChainHead,
    append_event,
    append_in,
    canonical,
    chain_hash,
    take_touched_chains,
    verify_chains,
)
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from tests.support.servers import REPO_ROOT

APPENDER = """
import asyncio, base64, sys
from healthforms.audit.events import AuditEvent
from healthforms.audit.store import append_event
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database

async def main(url: str, count: int, tag: str, key: str) -> None:
    db = Database.connect(url)
    keys = KeyRing(current=base64.b64decode(key))
    try:
        await asyncio.gather(*(
            append_event(db, keys, AuditEvent(action="test.append", organization_id="org_1",
                                              resource_id=f"{tag}-{i}"))
            for i in range(count)
        ))
    finally:
        await db.dispose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
"""


async def chain_rows(db: Database, chain: str = "org_1") -> list[AuditEventRow]:
    async with db.sessions() as session:
        query = select(AuditEventRow).where(AuditEventRow.chain == chain)
        return list((await session.execute(query.order_by(AuditEventRow.seq))).scalars())


def event(i: int, org: str | None = "org_1", **kwargs: object) -> AuditEvent:
    return AuditEvent(action="test.append", organization_id=org, resource_id=f"r-{i}", **kwargs)  # type: ignore[arg-type]


async def fill(db: Database, keys: KeyRing, count: int, org: str | None = "org_1") -> None:
    for i in range(count):
        action = "response.viewed" if i % 2 else "form.updated"
        await append_event(
            db, keys, AuditEvent(action=action, organization_id=org, resource_id=f"r-{i}")
        )


async def verify(db: Database, keys: KeyRing, path: Path | None = None) -> list[str]:
    heads = read_checkpoints(keys, path).heads if path is not None else []
    result = await verify_chains(db, keys, heads, batch=4)
    return [b.describe() for b in result.breaks]


async def test_events_link_to_their_predecessor_under_a_key(db: Database, keys: KeyRing) -> None:
    for i in range(3):
        await append_event(
            db,
            keys,
            event(
                i,
                actor_id="usr_1",
                outcome=Outcome.DENIED,
                ip="203.0.113.9",
                user_agent="UA/1.0",
                request_id="req-12345678",
                client_request_id="client-req-1",
            ),
        )
    rows = await chain_rows(db)
    assert [r.seq for r in rows] == [1, 2, 3]
    assert rows[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    assert all(r.key_id == keys.current_id for r in rows)
    assert rows[0].client_request_id == "client-req-1" and rows[0].request_id == "req-12345678"
    # Keyed: the stored hash is not what anyone can compute from the row alone.
    assert rows[0].hash != hashlib.sha256(canonical(rows[0])).hexdigest()
    assert chain_hash(rows[0], keys.hmac_key("audit-chain")) == rows[0].hash
    assert await verify(db, keys) == []


async def test_each_organisation_has_its_own_chain(db: Database, keys: KeyRing) -> None:
    await asyncio.gather(
        *(append_event(db, keys, event(i, org=("org_a", "org_b", None)[i % 3])) for i in range(30))
    )
    for chain in ("org_a", "org_b", "-"):
        rows = await chain_rows(db, chain)
        assert [r.seq for r in rows] == list(range(1, 11)), chain
        assert rows[0].prev_hash == GENESIS_HASH
    result = await verify_chains(db, keys)
    assert (result.checked, result.chains, result.breaks) == (30, 3, [])


async def test_one_organisations_open_append_does_not_hold_up_another(
    db: Database, keys: KeyRing
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has one writer for the whole file: every append queues there")
    await append_event(db, keys, event(0, org="org_a"))
    async with db.sessions() as slow, slow.begin():
        # org_a's chain stays locked until this transaction ends...
        await append_in(slow, keys, event(1, org="org_a"))
        # ...while org_b appends at once, and a second org_a append waits for it.
        await asyncio.wait_for(append_event(db, keys, event(2, org="org_b")), timeout=10)
        waiting = asyncio.ensure_future(append_event(db, keys, event(3, org="org_a")))
        await asyncio.sleep(0.5)
        assert not waiting.done()
    await asyncio.wait_for(waiting, timeout=10)
    assert [r.seq for r in await chain_rows(db, "org_a")] == [1, 2, 3]
    assert await verify(db, keys) == []


async def test_concurrent_tasks_never_fork_the_chain(db: Database, keys: KeyRing) -> None:
    await asyncio.gather(*(append_event(db, keys, event(i)) for i in range(40)))
    rows = await chain_rows(db)
    assert [r.seq for r in rows] == list(range(1, 41))
    assert sorted(r.resource_id or "" for r in rows) == sorted(f"r-{i}" for i in range(40))
    assert await verify(db, keys) == []


@pytest.mark.multiprocess
async def test_two_processes_appending_at_once_never_fork_the_chain(
    db: Database, keys: KeyRing, fresh_database_url: str
) -> None:
    await append_event(db, keys, event(-1))
    key = base64.b64encode(keys.current).decode()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, fresh_database_url, "25", tag, key],
            cwd=REPO_ROOT,
            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
            stderr=subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    for writer in writers:
        _, err = await asyncio.to_thread(writer.communicate, timeout=120)
        assert writer.returncode == 0, err.decode()[-2000:]
    rows = await chain_rows(db)
    assert [r.seq for r in rows] == list(range(1, 52))
    assert {(r.resource_id or "")[:2] for r in rows[1:]} == {"a-", "b-"}
    assert await verify(db, keys) == []


async def test_altered_row_is_named(db: Database, keys: KeyRing) -> None:
    await fill(db, keys, 5)
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(AuditEventRow)
            .where(AuditEventRow.chain == "org_1", AuditEventRow.seq == 3)
            .values(actor_id="usr_evil")
        )
    assert await verify(db, keys) == [
        f"chain org_1 event 3 (id {(await chain_rows(db))[2].id}): "
        "content altered or re-chained (MAC mismatch)"
    ]


async def test_an_events_detail_is_chained_and_cannot_be_edited(
    db: Database, keys: KeyRing
) -> None:
    """An event about many records names them in its detail (ids, never PHI); the MAC
    covers it, so removing an id from a list-view or export event is caught."""
    await fill(db, keys, 2)
    await append_event(db, keys, event(9, detail={"count": 2, "responseIds": ["rsp_a", "rsp_b"]}))
    await fill(db, keys, 1)
    assert await verify(db, keys) == []
    stored = (await chain_rows(db))[2]
    assert stored.detail == '{"count":2,"responseIds":["rsp_a","rsp_b"]}'
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(AuditEventRow)
            .where(AuditEventRow.id == stored.id)
            .values(detail='{"count":1,"responseIds":["rsp_a"]}')
        )
    assert await verify(db, keys) == [
        f"chain org_1 event 3 (id {stored.id}): content altered or re-chained (MAC mismatch)"
    ]


async def test_removed_row_is_named(db: Database, keys: KeyRing) -> None:
    await fill(db, keys, 6)
    async with db.sessions() as session, session.begin():
        await session.execute(
            delete(AuditEventRow).where(AuditEventRow.chain == "org_1", AuditEventRow.seq == 4)
        )
    assert await verify(db, keys) == ["chain org_1 event 4: event(s) 4 missing"]


async def rechain(db: Database, key: bytes | None, *, unkeyed: bool = False) -> None:
    """What a forger with write access does after deleting rows: renumber and re-link
    what is left with the service's own hash function (and a key of their own)."""
    async with db.sessions() as session, session.begin():
        rows = (
            await session.execute(
                select(AuditEventRow)
                .where(AuditEventRow.chain == "org_1")
                .order_by(AuditEventRow.seq)
            )
        ).scalars()
        prev = GENESIS_HASH
        for seq, row in enumerate(list(rows), start=1):
            row.seq = seq + 1000  # out of the way of the UNIQUE(chain, seq) while moving
            await session.flush()
            row.seq = seq
            row.prev_hash = prev
            if unkeyed:
                row.key_id = None
            row.hash = chain_hash(row, key)
            prev = row.hash


@pytest.mark.parametrize("forger", ["guessed key", "plain sha-256"])
async def test_deleting_the_phi_reads_and_rechaining_is_detected(
    db: Database, keys: KeyRing, forger: str
) -> None:
    await fill(db, keys, 8)
    async with db.sessions() as session, session.begin():
        await session.execute(
            delete(AuditEventRow).where(AuditEventRow.action == "response.viewed")
        )
    await rechain(db, b"x" * 32, unkeyed=forger == "plain sha-256")
    assert len(await chain_rows(db)) == 4
    breaks = await verify(db, keys)
    assert len(breaks) == 1 and breaks[0].startswith("chain org_1 event 1 ")
    assert "re-chained" in breaks[0]


async def test_removing_the_newest_events_after_a_checkpoint_is_named(
    db: Database, keys: KeyRing, tmp_path: Path
) -> None:
    path = tmp_path / "checkpoints.jsonl"
    await fill(db, keys, 5)
    await fill(db, keys, 2, org="org_2")
    written = await write_checkpoint(db, keys, path)
    assert {(h.chain, h.seq) for h in written} == {("org_1", 5), ("org_2", 2)}
    assert path.stat().st_mode & 0o077 == 0
    assert await verify(db, keys, path) == []
    # Cut the two newest events: the chain left is consistent in itself...
    async with db.sessions() as session, session.begin():
        await session.execute(
            delete(AuditEventRow).where(AuditEventRow.chain == "org_1", AuditEventRow.seq > 3)
        )
    assert await verify(db, keys) == []
    # ...but not with the checkpoint.
    breaks = await verify(db, keys, path)
    assert len(breaks) == 1
    assert breaks[0].startswith("chain org_1 event 4: event(s) 4-5 missing: removed after")


async def test_deleting_a_whole_chain_after_a_checkpoint_is_named(
    db: Database, keys: KeyRing, tmp_path: Path
) -> None:
    path = tmp_path / "checkpoints.jsonl"
    await fill(db, keys, 3, org="org_gone")
    await write_checkpoint(db, keys, path)
    async with db.sessions() as session, session.begin():
        await session.execute(delete(AuditEventRow))
    assert [b.split(":")[0] for b in await verify(db, keys, path)] == ["chain org_gone event 1"]


async def test_rewriting_with_the_key_still_differs_from_the_checkpoint(
    db: Database, keys: KeyRing, tmp_path: Path
) -> None:
    """Even a forger holding the master key cannot rewrite what a checkpoint covers."""
    path = tmp_path / "checkpoints.jsonl"
    await fill(db, keys, 6)
    await write_checkpoint(db, keys, path)
    async with db.sessions() as session, session.begin():
        await session.execute(
            delete(AuditEventRow).where(AuditEventRow.chain == "org_1", AuditEventRow.seq == 2)
        )
    await rechain(db, keys.hmac_key("audit-chain"))
    breaks = await verify(db, keys, path)
    assert len(breaks) == 1 and "checkpoint" in breaks[0]


async def test_checkpoints_only_note_heads_that_moved(
    db: Database, keys: KeyRing, tmp_path: Path
) -> None:
    path = tmp_path / "checkpoints.jsonl"
    seen: dict[str, int] = {}
    await fill(db, keys, 2)
    assert len(await write_checkpoint(db, keys, path, after=seen)) == 1
    assert await write_checkpoint(db, keys, path, after=seen) == []
    await fill(db, keys, 1)
    assert [h.seq for h in await write_checkpoint(db, keys, path, after=seen)] == [3]
    assert [h.seq for h, _ in read_checkpoints(keys, path).heads] == [2, 3]


def test_a_forged_or_edited_checkpoint_line_is_refused(keys: KeyRing, tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.jsonl"
    path.write_text(
        '{"chain":"org_1","seq":9,"hash":"ab","at":"2026-12-06T00:00:00Z",'
        f'"keyId":"{keys.current_id}","mac":"{"0" * 64}"}}\n'
        "not json\n"
    )
    found = read_checkpoints(keys, path)
    assert found.heads == []
    assert [n for n, _ in found.rejected] == [1, 2]
    assert "signature invalid" in found.rejected[0][1]


async def test_legacy_rows_verify_the_old_way_and_can_be_checkpointed(
    db: Database, keys: KeyRing, tmp_path: Path
) -> None:
    """Rows from before keyed chains (migration 0005) keep their SHA-256 links."""
    prev = GENESIS_HASH
    async with db.sessions() as session, session.begin():
        for seq in (1, 2, 3):
            row = AuditEventRow(
                chain=LEGACY_CHAIN,
                seq=seq,
                key_id=None,
                at=event(seq).at,
                action="form.updated",
                outcome="success",
                prev_hash=prev,
                hash="",
            )
            row.hash = chain_hash(row, None)
            prev = row.hash
            session.add(row)
    path = tmp_path / "checkpoints.jsonl"
    assert [h.chain for h in await write_checkpoint(db, keys, path)] == [LEGACY_CHAIN]
    assert await verify(db, keys, path) == []
    async with db.sessions() as session, session.begin():
        await session.execute(delete(AuditEventRow).where(AuditEventRow.seq == 3))
    assert "removed after the checkpoint" in (await verify(db, keys, path))[0]


async def test_an_event_signed_by_a_retired_key_names_the_key(db: Database, keys: KeyRing) -> None:
    old = KeyRing(current=b"o" * 32)
    await fill(db, old, 2)
    await fill(db, keys, 1)
    rotated = KeyRing(current=keys.current, previous=(old.current,))
    assert await verify(db, rotated) == []
    breaks = await verify(db, keys)
    assert len(breaks) == 1 and old.current_id in breaks[0]


async def test_checkpointed_head_type(db: Database, keys: KeyRing, tmp_path: Path) -> None:
    await fill(db, keys, 1)
    written = await write_checkpoint(db, keys, tmp_path / "c.jsonl")
    assert written == [ChainHead("org_1", 1, (await chain_rows(db))[0].hash)]


async def test_the_writer_checkpoints_every_chain_first_then_those_it_touched(
    db: Database, keys: KeyRing, tmp_path: Path
) -> None:
    await fill(db, keys, 2, org="org_a")
    await fill(db, keys, 1, org="org_b")
    take_touched_chains()  # as though another process had written them
    writer = CheckpointWriter(db, keys, tmp_path / "c.jsonl", interval_s=3600)
    assert {(h.chain, h.seq) for h in await writer.write_now()} == {("org_a", 2), ("org_b", 1)}
    await fill(db, keys, 1, org="org_b")
    assert [(h.chain, h.seq) for h in await writer.write_now()] == [("org_b", 2)]
    assert await writer.write_now() == []
