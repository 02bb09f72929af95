"""Signed checkpoints of the audit chains' heads, kept outside the database.

A chain's HMAC links stop anyone without the audit key from altering or re-linking
events, but deleting the newest events leaves a shorter chain that is consistent in
itself. So at a fixed cadence (HEALTHFORMS_AUDIT_CHECKPOINT_INTERVAL, 60 s) every
process appends the heads that moved since its last checkpoint to a JSON-lines file
(HEALTHFORMS_AUDIT_CHECKPOINT_PATH, by default `audit-checkpoints.jsonl` in the data
directory; point it at append-only or shipped storage in production) and writes the
same lines to the log stream, where a log shipper keeps a copy the database's owner
cannot reach. `audit verify` reads the file back: a checkpointed event that is missing
or different is reported by chain and position. What can still vanish unnoticed is at
most one interval of the newest events (written again at shutdown).

Each line is MACed with a key derived from the master key (purpose "audit-checkpoint"):
a forged or edited line is reported, never trusted. Several processes may write the
same head twice; that is harmless. Lines are appended with one write() on an O_APPEND
descriptor, so concurrent writers do not interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from healthforms.audit.store import ChainHead, chain_heads, take_touched_chains, touch_chains
from healthforms.clock import rfc3339, utcnow
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.files import PRIVATE_FILE, private_dir

log = structlog.get_logger("healthforms.audit")

CHECKPOINT_KEY_PURPOSE = "audit-checkpoint"
CHECKPOINT_LOG_EVENT = "audit_checkpoint"


def _signed_fields(head: ChainHead, at: str, kid: str) -> bytes:
    fields = {"chain": head.chain, "seq": head.seq, "hash": head.hash, "at": at, "keyId": kid}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def checkpoint_line(keys: KeyRing, head: ChainHead, at: str) -> dict[str, object]:
    kid = keys.current_id
    mac = hmac.new(
        keys.hmac_key(CHECKPOINT_KEY_PURPOSE), _signed_fields(head, at, kid), hashlib.sha256
    ).hexdigest()
    return {
        "chain": head.chain,
        "seq": head.seq,
        "hash": head.hash,
        "at": at,
        "keyId": kid,
        "mac": mac,
    }


def _append_lines(path: Path, lines: Iterable[dict[str, object]]) -> None:
    data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    if not path.parent.exists():
        private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
    try:
        os.write(fd, data.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


async def write_checkpoint(
    db: Database,
    keys: KeyRing,
    path: Path,
    *,
    after: dict[str, int] | None = None,
    chains: Iterable[str] | None = None,
) -> list[ChainHead]:
    """Append (and log) a signed line for every head of `chains` (default: all) that
    moved since `after` (chain -> seq last written; updated in place). Returns the
    heads written."""
    seen = after if after is not None else {}
    heads = [h for h in await chain_heads(db, chains) if seen.get(h.chain) != h.seq]
    if not heads:
        return []
    at = rfc3339(utcnow())
    lines = [checkpoint_line(keys, head, at) for head in heads]
    await asyncio.to_thread(_append_lines, path, lines)
    for line in lines:
        log.info(CHECKPOINT_LOG_EVENT, **line)
    for head in heads:
        seen[head.chain] = head.seq
    return heads


@dataclass(frozen=True, slots=True)
class CheckpointFile:
    """A checkpoint file as `audit verify` reads it: the trusted heads, and the lines
    it could not trust (number and why)."""

    heads: list[tuple[ChainHead, str]]
    rejected: list[tuple[int, str]]


def read_checkpoints(keys: KeyRing, path: Path) -> CheckpointFile:
    heads: list[tuple[ChainHead, str]] = []
    rejected: list[tuple[int, str]] = []
    if not path.exists():
        return CheckpointFile(heads, rejected)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                head = ChainHead(str(line["chain"]), int(line["seq"]), str(line["hash"]))
                at, kid, mac = str(line["at"]), str(line["keyId"]), str(line["mac"])
            except (ValueError, KeyError, TypeError):
                rejected.append((number, "not a checkpoint line"))
                continue
            key = keys.hmac_key_for(kid, CHECKPOINT_KEY_PURPOSE)
            if key is None:
                rejected.append((number, f"signed with master key {kid}, not configured"))
                continue
            expected = hmac.new(key, _signed_fields(head, at, kid), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, mac):
                rejected.append((number, "signature invalid (forged or edited)"))
                continue
            heads.append((head, at))
    return CheckpointFile(heads, rejected)


STOP_WAIT_S = 10.0  # a checkpoint write in progress at shutdown may take this long


class CheckpointWriter:
    """The background task of one process: a checkpoint every interval, one at exit."""

    def __init__(self, db: Database, keys: KeyRing, path: Path, interval_s: float) -> None:
        self.db = db
        self.keys = keys
        self.path = path
        self.interval_s = interval_s
        self._written: dict[str, int] = {}
        self._first = True
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def write_now(self) -> list[ChainHead]:
        """Every chain's head the first time (one grouped query), then only the chains
        this process appended to since (an index lookup each): the other processes'
        writers cover theirs."""
        chains = None if self._first else take_touched_chains()
        if chains is not None and not chains:
            return []
        try:
            written = await write_checkpoint(
                self.db, self.keys, self.path, after=self._written, chains=chains
            )
        except Exception as exc:  # noqa: BLE001 - retried at the next interval
            log.warning("audit_checkpoint_failed", error_type=type(exc).__name__)
            if chains is not None:
                touch_chains(chains)  # not lost: looked at again next time
            return []
        self._first = False
        return written

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
            if self._stopping.is_set():
                return
            await self.write_now()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="audit-checkpoints")

    async def stop(self) -> None:
        if self._task is not None:
            # Let a write in progress finish: a query cancelled half-way leaves its
            # pooled connection in a state the next user trips over.
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_S)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        await self.write_now()
