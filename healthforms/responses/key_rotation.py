"""`healthforms keys rotate`: re-wrap every data key under the current master key.

Only the small wrapped data keys change; the records themselves (answers, PDFs, staff
notes, TOTP secrets) are not re-encrypted, so a rotation is quick and reads never stop: the old
master key stays configured in HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS while the rows
move over, and every row decrypts with whichever key its `key_id` names. Work goes in
short batches, each its own transaction, and every update is conditional on the row
still carrying the key id it was read with, so a row rewritten meanwhile is left
alone. Running it again is safe: rows already under the current key are skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.crypto.envelope import DecryptionFailed, rewrap
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.identity.models import User
from healthforms.responses.models import (
    ResponseIdentity,
    ResponseNote,
    ResponsePdf,
    ResponseRow,
    ResponseScores,
    ResponseSearchToken,
)
from healthforms.responses.patients import open_identity, rebuild_tokens

log = structlog.get_logger("healthforms.keys")

DEFAULT_BATCH = 500


@dataclass(slots=True)
class RotationCount:
    """What happened to one kind of record."""

    name: str
    rewrapped: int = 0
    current: int = 0  # already under the current key
    failed: int = 0  # its key is not configured, or it does not unwrap
    changed: int = 0  # rewritten by someone else between read and update

    def line(self) -> str:
        text = (
            f"{self.name}: {self.rewrapped} re-wrapped, {self.current} already current, "
            f"{self.failed} failed"
        )
        return text + (f", {self.changed} changed meanwhile" if self.changed else "")


async def _rotate_columns(
    db: Database,
    keys: KeyRing,
    model: type[Any],
    batch: int,
    prefix: str = "",
) -> RotationCount:
    """Rows with their own `wrapped_key` and `key_id` columns (responses, PDFs, notes,
    patient identities, scores, and the `also` models of rotate_keys), or a pair of
    them named `<prefix>wrapped_key`/`<prefix>key_id` (a webhook's current and previous
    secret); a row whose pair is empty (no previous secret) is skipped."""
    # Keyed by their one primary-key column: `id`, or `response_id` (PDFs, identities),
    # or `upload_id` (uploads/ blobs).
    (key_column,) = model.__table__.primary_key.columns
    pk = getattr(model, key_column.key)
    wrapped_column = getattr(model, f"{prefix}wrapped_key")
    key_id_column = getattr(model, f"{prefix}key_id")
    count = RotationCount(model.__tablename__ + (f".{prefix.rstrip('_')}" if prefix else ""))
    last = ""
    while True:
        async with db.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(pk, wrapped_column, key_id_column)
                    .where(pk > last)
                    .order_by(pk)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return count
            for row_id, wrapped, key_id in rows:
                if wrapped is None:
                    continue
                if key_id == keys.current_id:
                    count.current += 1
                    continue
                try:
                    new_wrapped, new_id = rewrap(keys, wrapped, key_id)
                except DecryptionFailed as exc:
                    count.failed += 1
                    log.error("rewrap_failed", table=count.name, id=row_id, reason=str(exc))
                    continue
                result = await session.execute(
                    update(model)
                    .where(pk == row_id, key_id_column == key_id)
                    .values({wrapped_column: new_wrapped, key_id_column: new_id})
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(result) == 1:
                    count.rewrapped += 1
                else:
                    count.changed += 1
            last = rows[-1][0]


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _rewrap_totp_blob(keys: KeyRing, blob: bytes) -> bytes | None:
    """Re-wrap identity's sealed TOTP secret (JSON {"k","w","c"}); None if current."""
    try:
        data = json.loads(blob)
        key_id = str(data["k"])
        wrapped = base64.b64decode(data["w"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise DecryptionFailed("not a sealed TOTP secret") from exc
    if key_id == keys.current_id:
        return None
    new_wrapped, new_id = rewrap(keys, wrapped, key_id)
    return json.dumps(
        {"k": new_id, "w": base64.b64encode(new_wrapped).decode(), "c": data["c"]}
    ).encode()


async def _rotate_totp(db: Database, keys: KeyRing, batch: int) -> RotationCount:
    count = RotationCount("users.totp_secret_encrypted")
    last = ""
    while True:
        async with db.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(User.id, User.totp_secret_encrypted)
                    .where(User.id > last, User.totp_secret_encrypted.is_not(None))
                    .order_by(User.id)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return count
            for user_id, blob in rows:
                if blob is not None:
                    await _rotate_one_totp(session, keys, count, user_id, blob)
            last = rows[-1][0]


async def _rotate_one_totp(
    session: AsyncSession, keys: KeyRing, count: RotationCount, user_id: str, blob: bytes
) -> None:
    try:
        new_blob = _rewrap_totp_blob(keys, blob)
    except DecryptionFailed as exc:
        count.failed += 1
        log.error("rewrap_failed", table=count.name, id=user_id, reason=str(exc))
        return
    if new_blob is None:
        count.current += 1
        return
    result = await session.execute(
        update(User)
        .where(User.id == user_id, User.totp_secret_encrypted == blob)
        .values(totp_secret_encrypted=new_blob)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) == 1:
        count.rewrapped += 1
    else:
        count.changed += 1


async def rotate_keys(
    db: Database,
    keys: KeyRing,
    *,
    batch: int = DEFAULT_BATCH,
    also: Sequence[type[Any] | tuple[type[Any], str]] = (),
) -> list[RotationCount]:
    """Re-wrap responses, PDFs and TOTP secrets under `keys.current`; return the counts.
    `also`: other features' sealed rows (an `id` key, `wrapped_key` and `key_id`
    columns, or (model, column prefix)), which this module cannot import (cli.py passes
    patient requests, uploads and webhook secrets)."""
    return [
        await _rotate_columns(db, keys, ResponseRow, batch),
        await _rotate_columns(db, keys, ResponsePdf, batch),
        await _rotate_columns(db, keys, ResponseNote, batch),
        await _rotate_columns(db, keys, ResponseIdentity, batch),
        await _rotate_columns(db, keys, ResponseScores, batch),
        await _rotate_search_tokens(db, keys, batch),
        await _rotate_totp(db, keys, batch),
        *[
            await (
                _rotate_columns(db, keys, item[0], batch, item[1])
                if isinstance(item, tuple)
                else _rotate_columns(db, keys, item, batch)
            )
            for item in also
        ],
    ]


async def _rotate_search_tokens(db: Database, keys: KeyRing, batch: int) -> RotationCount:
    """Blind indexes are MACs, not wrapped keys: rebuild those of every response that
    has one under an older key from its (decrypted) identity."""
    count = RotationCount(ResponseSearchToken.__tablename__)
    last = ""
    while True:
        async with db.sessions() as session, session.begin():
            stale = (
                select(ResponseSearchToken.response_id)
                .where(ResponseSearchToken.key_id != keys.current_id)
                .distinct()
                .subquery()
            )
            rows = (
                (
                    await session.execute(
                        select(ResponseIdentity)
                        .where(
                            ResponseIdentity.response_id > last,
                            ResponseIdentity.response_id.in_(select(stale.c.response_id)),
                        )
                        .order_by(ResponseIdentity.response_id)
                        .limit(batch)
                    )
                )
                .scalars()
                .all()
            )
            if not rows:
                return count
            for row in rows:
                identity = open_identity(keys, row)
                if identity is None:
                    count.failed += 1
                    continue
                await rebuild_tokens(session, keys, row.organization_id, row.response_id, identity)
                count.rewrapped += 1
            last = rows[-1].response_id
