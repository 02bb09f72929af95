"""Group commit of audit events (audit/batch.py) on the leg's database."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from healthforms.audit.batch import GroupAppender
from healthforms.audit.events import AuditEvent
from healthforms.audit.models import AuditEventRow
from healthforms.audit.store import verify_chains
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from tests.audit.test_drills import accepting, refusing


def event(index: int, *, action: str = "response.viewed", org: str = "org_a") -> AuditEvent:
    return AuditEvent(
        action=action,
        organization_id=org,
        resource_type="response",
        resource_id=f"rsp_{index}",
    )


async def stored(db: Database) -> list[str]:
    async with db.sessions() as session:
        query = select(AuditEventRow.resource_id).order_by(AuditEventRow.id)
        return [row or "" for row in (await session.execute(query)).scalars()]


async def test_concurrent_events_share_transactions_and_keep_every_chain_intact(
    db: Database, keys: KeyRing
) -> None:
    appender = GroupAppender(db, keys)
    events = [event(i, org=("org_a", "org_b", "org_c")[i % 3]) for i in range(90)]
    await asyncio.gather(*(appender.append(e) for e in events))
    assert sorted(await stored(db)) == sorted(f"rsp_{i}" for i in range(90))
    assert appender.events == 90
    assert appender.batches < 90  # they were grouped (the first one goes alone)
    result = await verify_chains(db, keys)
    assert result.intact, result.breaks
    async with db.sessions() as session:
        per_chain = dict(
            (
                await session.execute(
                    select(AuditEventRow.chain, func.max(AuditEventRow.seq)).group_by(
                        AuditEventRow.chain
                    )
                )
            ).all()
        )
    assert per_chain == {"org_a": 30, "org_b": 30, "org_c": 30}


async def test_a_refused_event_fails_its_own_request_only(db: Database, keys: KeyRing) -> None:
    appender = GroupAppender(db, keys)
    await refusing(db, "pdf.served")
    events = [event(i, action="pdf.served" if i == 7 else "response.viewed") for i in range(20)]
    outcomes = await asyncio.gather(*(appender.append(e) for e in events), return_exceptions=True)
    failed = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, Exception)]
    assert failed == [7]
    assert sorted(await stored(db)) == sorted(f"rsp_{i}" for i in range(20) if i != 7)
    await accepting(db)
    result = await verify_chains(db, keys)
    assert result.intact, result.breaks


async def test_a_caller_that_goes_away_still_gets_its_event_written(
    db: Database, keys: KeyRing
) -> None:
    appender = GroupAppender(db, keys)
    first = asyncio.create_task(appender.append(event(1)))
    gone = asyncio.create_task(appender.append(event(2)))
    await asyncio.sleep(0)
    gone.cancel()
    await first
    await appender.close()
    assert sorted(await stored(db)) == ["rsp_1", "rsp_2"]
