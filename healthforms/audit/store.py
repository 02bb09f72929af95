"""The append-only audit chain: each event stores the hash of the one before it.

Appends are serialised so concurrent writers cannot fork the chain: the event id is
the chain position (previous id + 1) and the primary key, so two writers that read
the same tail cannot both insert; on PostgreSQL a transaction-scoped advisory lock
queues them first, on SQLite the single writer does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import AuditEvent
from healthforms.audit.models import AuditEventRow
from healthforms.db.engine import Database

log = structlog.get_logger("healthforms.audit")

GENESIS_HASH = "0" * 64
# Any constant; identifies "the audit chain" among advisory locks.
_ADVISORY_LOCK_KEY = 0x6865616C7468  # "health"
_UA_LIMIT = 256


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: AuditEventRow) -> bytes:
    """The bytes that are hashed: every field but the hash itself, in a fixed order."""
    fields = {
        "id": row.id,
        "at": _iso(row.at),
        "organizationId": row.organization_id,
        "actorId": row.actor_id,
        "action": row.action,
        "resourceType": row.resource_type,
        "resourceId": row.resource_id,
        "outcome": row.outcome,
        "ip": row.ip,
        "userAgent": row.user_agent,
        "requestId": row.request_id,
        "prevHash": row.prev_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def chain_hash(row: AuditEventRow) -> str:
    return hashlib.sha256(canonical(row)).hexdigest()


async def _append_once(session: AsyncSession, event: AuditEvent) -> AuditEventRow:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
    tail = (
        await session.execute(
            select(AuditEventRow.id, AuditEventRow.hash).order_by(AuditEventRow.id.desc()).limit(1)
        )
    ).first()
    prev_id, prev_hash = (tail[0], tail[1]) if tail else (0, GENESIS_HASH)
    # Microsecond precision survives both backends, so the canonical form is stable.
    at = event.at.astimezone(UTC)
    row = AuditEventRow(
        id=prev_id + 1,
        at=at,
        organization_id=event.organization_id,
        actor_id=event.actor_id,
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        outcome=event.outcome.value,
        ip=event.ip,
        user_agent=event.user_agent[:_UA_LIMIT] if event.user_agent else None,
        request_id=event.request_id,
        prev_hash=prev_hash,
        hash="",
    )
    row.hash = chain_hash(row)
    session.add(row)
    await session.flush()
    return row


async def append_event(db: Database, event: AuditEvent, *, attempts: int = 20) -> AuditEventRow:
    """Append one event in its own transaction; retry when another writer took the slot."""
    delay = 0.005
    for attempt in range(attempts):
        try:
            async with db.sessions() as session, session.begin():
                return await _append_once(session, event)
        except (IntegrityError, OperationalError):
            if attempt + 1 == attempts:
                log.error("audit_append_failed", action=event.action)
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class ChainBreak:
    event_id: int
    reason: str


async def verify_chain(db: Database, batch: int = 1000) -> tuple[int, ChainBreak | None]:
    """Walk the chain in order; return (events checked, first break or None)."""
    checked = 0
    expected_prev = GENESIS_HASH
    expected_id = 1
    last_id = 0
    async with db.sessions() as session:
        while True:
            rows = (
                (
                    await session.execute(
                        select(AuditEventRow)
                        .where(AuditEventRow.id > last_id)
                        .order_by(AuditEventRow.id)
                        .limit(batch)
                    )
                )
                .scalars()
                .all()
            )
            if not rows:
                return checked, None
            for row in rows:
                if row.id != expected_id:
                    return checked, ChainBreak(expected_id, "event missing (removed)")
                if row.prev_hash != expected_prev:
                    return checked, ChainBreak(row.id, "previous-hash link broken")
                if chain_hash(row) != row.hash:
                    return checked, ChainBreak(row.id, "content altered (hash mismatch)")
                expected_prev = row.hash
                expected_id = row.id + 1
                last_id = row.id
                checked += 1
            session.expunge_all()


async def iter_events(
    db: Database,
    *,
    organization_id: str | None = None,
    action: str | None = None,
    actor_id: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    ascending: bool = False,
) -> AsyncIterator[AuditEventRow]:
    """Events filtered as GET /api/audit and `audit export` need them."""
    query = select(AuditEventRow)
    if organization_id is not None:
        query = query.where(AuditEventRow.organization_id == organization_id)
    if action:
        query = query.where(AuditEventRow.action == action)
    if actor_id:
        query = query.where(AuditEventRow.actor_id == actor_id)
    if since is not None:
        query = query.where(AuditEventRow.at >= since)
    order = AuditEventRow.id.asc() if ascending else AuditEventRow.id.desc()
    query = query.order_by(order).limit(limit)
    async with db.sessions() as session:
        for row in (await session.execute(query)).scalars():
            yield row


def event_json(row: AuditEventRow) -> dict[str, object]:
    """The API.md shape of one event."""
    return {
        "id": str(row.id),
        "at": row.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "actorId": row.actor_id,
        "action": row.action,
        "resourceType": row.resource_type,
        "resourceId": row.resource_id,
        "outcome": row.outcome,
        "ip": row.ip,
        "userAgent": row.user_agent,
        "requestId": row.request_id,
    }


async def export_events(
    db: Database, *, since: datetime | None = None, batch: int = 1000
) -> AsyncIterator[AuditEventRow]:
    """Every event (of every organisation) from `since` on, oldest first, in batches."""
    last_id = 0
    while True:
        query = select(AuditEventRow).where(AuditEventRow.id > last_id)
        if since is not None:
            query = query.where(AuditEventRow.at >= since)
        query = query.order_by(AuditEventRow.id).limit(batch)
        async with db.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        if not rows:
            return
        for row in rows:
            yield row
        last_id = rows[-1].id


def export_json(row: AuditEventRow) -> dict[str, object]:
    """One exported line: the API shape plus what an auditor needs to re-check the chain."""
    return {
        **event_json(row),
        "at": _iso(row.at),
        "organizationId": row.organization_id,
        "prevHash": row.prev_hash,
        "hash": row.hash,
    }
