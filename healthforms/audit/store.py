"""The append-only audit trail: one HMAC-linked chain per organisation.

Each event stores the keyed hash of the one before it in its chain, so an event cannot
be altered, removed from the middle, or the chain re-linked after a removal without
the audit key, which is derived from the master key and never stored in the database
(crypto/keys.py, purpose "audit-chain"; the row names the master key's id). Removing the
newest events leaves a chain that is consistent in itself: the signed checkpoints
written outside the database (checkpoints.py) are what `audit verify` compares the
heads with.

One chain per organisation (`-` for events of none) keeps one clinic's traffic from
queueing behind another's: appends are serialised per chain only (a transaction-scoped
advisory lock on PostgreSQL; SQLite has one writer anyway), and (chain, seq) is UNIQUE,
so two writers that read the same tail cannot both insert.

`append_in` writes an event inside the caller's transaction, so a write of patient
data and its audit event commit together or not at all; `append_event` writes one in
its own transaction, `append_events` several (the group commit of batch.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import structlog
from sqlalchemy import Select, Table, bindparam, func, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import AuditEvent
from healthforms.audit.models import AuditEventRow
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.db.writer import claim_writer

log = structlog.get_logger("healthforms.audit")

GENESIS_HASH = "0" * 64
CHAIN_KEY_PURPOSE = "audit-chain"
LEGACY_CHAIN = "legacy"  # rows written before chains were keyed (migration 0005)
NO_ORGANIZATION_CHAIN = "-"
# Any constant: the namespace of the per-chain advisory locks (the chain name's
# hashtext() is the second half; two chains that collide merely share a queue).
_ADVISORY_LOCK_NAMESPACE = 0x6866  # "hf"
_UA_LIMIT = 256


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_of(organization_id: str | None) -> str:
    return organization_id or NO_ORGANIZATION_CHAIN


def _fields(row: AuditEventRow) -> dict[str, object]:
    return {
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


def canonical(row: AuditEventRow) -> bytes:
    """The bytes that are MACed: every field but the hash and the storage id, in a fixed
    order; the chain position (chain, seq) and the key id are part of it."""
    if row.key_id is None:
        fields = {"id": row.seq, **_fields(row)}  # the legacy form, unchanged
    else:
        fields = {
            "chain": row.chain,
            "seq": row.seq,
            "keyId": row.key_id,
            "clientRequestId": row.client_request_id,
            **_fields(row),
        }
        if row.detail is not None:  # absent from events written before details existed
            fields["detail"] = row.detail
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def chain_hash(row: AuditEventRow, key: bytes | None) -> str:
    """HMAC-SHA256 under the audit key; plain SHA-256 for a legacy row (key None)."""
    if row.key_id is None:
        return hashlib.sha256(canonical(row)).hexdigest()
    if key is None:
        raise ValueError("a keyed row needs its key")
    return hmac.new(key, canonical(row), hashlib.sha256).hexdigest()


# Statements built once, their values bound at execution: building a statement with
# its values in it per request (new bind parameters, a new cache key) cost more CPU
# than running it (py-spy of the public submit, bench/database.py).
_NEWEST = (
    select(AuditEventRow.seq, AuditEventRow.hash)
    .where(AuditEventRow.chain == bindparam("chain"))
    .order_by(AuditEventRow.seq.desc())
    .limit(1)
)
_LOCK_CHAIN = text("SELECT pg_advisory_xact_lock(:ns, hashtext(:chain))")


def _newest(chain: str) -> tuple[Select[int, str], dict[str, str]]:
    """(seq, hash) of a chain's newest event: one index lookup (chain, seq)."""
    return _NEWEST, {"chain": chain}


def _bounded(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None


# Chains this process appended to since the checkpoint writer last looked: it reads
# only their heads (an index lookup each) instead of grouping the whole table.
_touched_chains: set[str] = set()


def touch_chains(chains: Iterable[str]) -> None:
    _touched_chains.update(chains)


def take_touched_chains() -> set[str]:
    taken = set(_touched_chains)
    _touched_chains.difference_update(taken)
    return taken


async def append_in(session: AsyncSession, keys: KeyRing, event: AuditEvent) -> AuditEventRow:
    """Append `event` to its organisation's chain inside the caller's transaction."""
    return (await append_many_in(session, keys, [event]))[0]


async def append_many_in(
    session: AsyncSession, keys: KeyRing, events: Sequence[AuditEvent]
) -> list[AuditEventRow]:
    """Append `events` (in their order within each chain) inside the caller's
    transaction: one lock and one tail read per chain, one INSERT for all."""
    by_chain: dict[str, list[AuditEvent]] = {}
    for event in events:
        by_chain.setdefault(chain_of(event.organization_id), []).append(event)
    _touched_chains.update(by_chain)
    if session.get_bind().dialect.name == "postgresql":
        for chain in sorted(by_chain):  # one order for every writer: no deadlock
            await session.execute(_LOCK_CHAIN, {"ns": _ADVISORY_LOCK_NAMESPACE, "chain": chain})
    else:
        # SQLite: the process's writer slot first (and a pending write, the patient
        # data this event goes with, takes the file's lock), so no writer of this
        # process moves the tail between our read and our insert; another process's
        # writer can, and UNIQUE(chain, seq) catches it (append_events retries).
        await session.flush()
        await claim_writer(session)
    key = keys.hmac_key(CHAIN_KEY_PURPOSE)
    rows: list[AuditEventRow] = []
    for chain, chained in by_chain.items():
        tail = (await session.execute(*_newest(chain))).first()
        seq, prev_hash = (tail[0], tail[1]) if tail else (0, GENESIS_HASH)
        for event in chained:
            seq += 1
            row = _row(event, chain, seq, prev_hash, keys.current_id)
            row.hash = prev_hash = chain_hash(row, key)
            rows.append(row)
    # A Core INSERT (one statement for the batch), not session.add + flush: the ORM's
    # unit of work cost more than the statement on every audited request (py-spy,
    # bench/database.py). The row objects stay transient: they are what was written.
    if len(rows) == 1:
        await session.execute(_INSERT_EVENT, _columns(rows[0]))
    else:
        await session.execute(_INSERT_EVENT, [_columns(row) for row in rows])
    return rows


def _row(event: AuditEvent, chain: str, seq: int, prev_hash: str, key_id: str) -> AuditEventRow:
    return AuditEventRow(
        chain=chain,
        seq=seq,
        key_id=key_id,
        # Microsecond precision survives both backends, so the canonical form is stable.
        at=event.at.astimezone(UTC),
        organization_id=event.organization_id,
        actor_id=event.actor_id,
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        outcome=event.outcome.value,
        ip=_bounded(event.ip, 64),
        user_agent=_bounded(event.user_agent, _UA_LIMIT),
        request_id=_bounded(event.request_id, 64),
        client_request_id=_bounded(event.client_request_id, 64),
        detail=(
            None
            if event.detail is None
            else json.dumps(event.detail, sort_keys=True, separators=(",", ":"))
        ),
        prev_hash=prev_hash,
        hash="",
    )


def _columns(row: AuditEventRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in _INSERTED}


_INSERTED = tuple(column.key for column in AuditEventRow.__table__.columns if column.key != "id")
_INSERT_EVENT = insert(cast(Table, AuditEventRow.__table__))


async def append_event(
    db: Database, keys: KeyRing, event: AuditEvent, *, attempts: int = 20
) -> AuditEventRow:
    """Append one event in its own transaction; retry when another writer took the slot."""
    return (await append_events(db, keys, [event], attempts=attempts))[0]


async def append_events(
    db: Database, keys: KeyRing, events: Sequence[AuditEvent], *, attempts: int = 20
) -> list[AuditEventRow]:
    """Append `events` in one transaction; retry when another writer took a slot."""
    delay = 0.005
    for attempt in range(attempts):
        try:
            async with db.sessions() as session, session.begin():
                return await append_many_in(session, keys, events)
        except (IntegrityError, OperationalError):
            if attempt + 1 == attempts:
                log.error("audit_append_failed", actions=sorted({e.action for e in events}))
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class ChainBreak:
    chain: str
    seq: int
    reason: str
    event_id: int | None = None  # the stored row's id, when there is one

    def describe(self) -> str:
        where = f"chain {self.chain} event {self.seq}"
        if self.event_id is not None:
            where += f" (id {self.event_id})"
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ChainHead:
    chain: str
    seq: int
    hash: str


@dataclass
class Verification:
    """What `audit verify` found: events checked, chains walked, the first break of
    each broken chain, and how many checkpoints the heads were compared with."""

    checked: int = 0
    chains: int = 0
    checkpoints: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.breaks


async def chain_names(db: Database) -> list[str]:
    async with db.sessions() as session:
        return list((await session.execute(select(AuditEventRow.chain).distinct())).scalars().all())


async def chain_heads(db: Database, chains: Iterable[str] | None = None) -> list[ChainHead]:
    """The newest event of each of `chains`, or of every chain (what a checkpoint
    records). The unkeyed legacy chain is included: once checkpointed, it cannot be cut
    or re-chained either."""
    if chains is not None:
        heads = []
        async with db.sessions() as session:
            for chain in sorted(chains):
                found = (await session.execute(*_newest(chain))).first()
                if found is not None:
                    heads.append(ChainHead(chain, found[0], found[1]))
        return heads
    newest = (
        select(AuditEventRow.chain, func.max(AuditEventRow.seq).label("seq"))
        .group_by(AuditEventRow.chain)
        .subquery()
    )
    query = select(AuditEventRow.chain, AuditEventRow.seq, AuditEventRow.hash).join(
        newest, (AuditEventRow.chain == newest.c.chain) & (AuditEventRow.seq == newest.c.seq)
    )
    async with db.sessions() as session:
        return [ChainHead(c, s, h) for c, s, h in (await session.execute(query)).all()]


async def _verify_one(
    db: Database,
    keys: KeyRing,
    chain: str,
    anchored: dict[int, tuple[str, str]],
    batch: int,
) -> tuple[int, ChainBreak | None]:
    """Walk one chain in order; (events checked, first break). `anchored`: seq ->
    (hash, what anchored it) from the checkpoints of this chain."""
    checked = 0
    expected_prev = GENESIS_HASH
    expected_seq = 1
    chain_keys: dict[str, bytes | None] = {}
    async with db.sessions() as session:
        while True:
            rows = (
                (
                    await session.execute(
                        select(AuditEventRow)
                        .where(AuditEventRow.chain == chain, AuditEventRow.seq >= expected_seq)
                        .order_by(AuditEventRow.seq)
                        .limit(batch)
                    )
                )
                .scalars()
                .all()
            )
            if not rows:
                break
            for row in rows:
                if row.seq != expected_seq:
                    gap = f"{expected_seq}" + (
                        f"-{row.seq - 1}" if row.seq - 1 > expected_seq else ""
                    )
                    return checked, ChainBreak(chain, expected_seq, f"event(s) {gap} missing")
                key: bytes | None = None
                if (row.key_id is None) != (chain == LEGACY_CHAIN):
                    # An unkeyed row outside the legacy chain is a forger's re-chaining
                    # with plain SHA-256; a keyed one inside it was moved there.
                    return checked, ChainBreak(
                        chain, row.seq, "keyed and unkeyed rows mixed (re-chained)", row.id
                    )
                if row.key_id is not None:
                    if row.key_id not in chain_keys:
                        chain_keys[row.key_id] = keys.hmac_key_for(row.key_id, CHAIN_KEY_PURPOSE)
                    key = chain_keys[row.key_id]
                    if key is None:
                        return checked, ChainBreak(
                            chain,
                            row.seq,
                            f"signed with master key {row.key_id}, which is not configured "
                            "(add it to HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS)",
                            row.id,
                        )
                if row.prev_hash != expected_prev:
                    return checked, ChainBreak(chain, row.seq, "link to previous broken", row.id)
                if not hmac.compare_digest(chain_hash(row, key), row.hash):
                    return checked, ChainBreak(
                        chain, row.seq, "content altered or re-chained (MAC mismatch)", row.id
                    )
                anchor = anchored.get(row.seq)
                if anchor is not None and not hmac.compare_digest(anchor[0], row.hash):
                    return checked, ChainBreak(
                        chain, row.seq, f"differs from the checkpoint of {anchor[1]}", row.id
                    )
                expected_prev = row.hash
                expected_seq = row.seq + 1
                checked += 1
            session.expunge_all()
    if anchored:
        newest = max(anchored)
        if newest >= expected_seq:
            gap = f"{expected_seq}" + (f"-{newest}" if newest > expected_seq else "")
            return checked, ChainBreak(
                chain,
                expected_seq,
                f"event(s) {gap} missing: removed after the checkpoint of {anchored[newest][1]}",
            )
    return checked, None


async def verify_chains(
    db: Database,
    keys: KeyRing,
    checkpoints: Iterable[tuple[ChainHead, str]] = (),
    *,
    batch: int = 1000,
) -> Verification:
    """Check every chain, and each checkpointed head (head, when) against the rows."""
    anchors: dict[str, dict[int, tuple[str, str]]] = {}
    result = Verification()
    for head, when in checkpoints:
        anchors.setdefault(head.chain, {})[head.seq] = (head.hash, when)
        result.checkpoints += 1
    names = set(await chain_names(db)) | set(anchors)
    for chain in sorted(names):
        checked, broken = await _verify_one(db, keys, chain, anchors.get(chain, {}), batch)
        result.checked += checked
        result.chains += 1
        if broken is not None:
            result.breaks.append(broken)
    return result


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
    """The API.md shape of one event; an event about many records (a list view, an
    export, a purge) adds its `detail` (ids and counts)."""
    body: dict[str, object] = {
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
    if row.detail is not None:
        body["detail"] = json.loads(row.detail)
    return body


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
    """One exported line: the API shape plus what an auditor needs to re-check the chain
    (with the audit key: `audit verify`)."""
    return {
        **event_json(row),
        "at": _iso(row.at),
        "organizationId": row.organization_id,
        "chain": row.chain,
        "seq": row.seq,
        "keyId": row.key_id,
        "clientRequestId": row.client_request_id,
        "prevHash": row.prev_hash,
        "hash": row.hash,
    }
