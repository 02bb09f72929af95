"""Patients' files: received, checked by content, sealed, attached once, swept, served.

The life of an upload (docs/uploads.md):

    received (pending: bound to the page's nonce and one file field, until expires_at)
      --the response that names it is stored-->  attached (response_id set, no expiry)
      --expires_at passes unattached-->          swept (rows and bytes deleted)

Uploading does not touch the nonce (nothing in Redis): only the submission claims it.
Attaching runs in the response's own transaction (submissions/service.py), with an
UPDATE that only takes pending uploads of that nonce, field and form: an id that is
another page's, already attached or expired is refused with a 422 and nothing is
stored. Deleting a response deletes its files with it (responses/service.py
RESPONSE_RECORDS).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import utcnow
from healthforms.crypto.envelope import DecryptionFailed, open_sealed, seal, upload_aad
from healthforms.crypto.keys import KeyRing
from healthforms.db.base import new_id
from healthforms.errors import NotFound, ValidationFailed
from healthforms.forms.schema import MAX_SIZE_MB_RANGE, FieldDef, FieldType
from healthforms.images import IMAGE_TYPES, PDF, CleanFile, UnsafeFile, check_pdf, clean_image
from healthforms.images import sniff as sniff_type
from healthforms.languages import N_
from healthforms.responses.service import ResponseUnreadable
from healthforms.uploads.models import Upload
from healthforms.uploads.storage import FILE_STORE, FileStore

log = structlog.get_logger("healthforms.uploads")

# A pending upload outlives its page's nonce by this much (a submission sent just before
# the nonce expired is still being stored); then it is swept.
PENDING_GRACE: Final = timedelta(minutes=10)
# A page may replace a field's files: up to this many times its maxFiles are kept
# pending per nonce and field, so one page cannot fill the database.
PENDING_PER_FILE: Final = 3
SWEEP_BATCH: Final = 200
# The most any file field takes (maxSizeMb at its largest): what an upload reads at most.
MAX_FILE_BYTES: Final = MAX_SIZE_MB_RANGE[1] * 1024 * 1024

NOT_A_FILE_FIELD = N_("is not a file question of this form")
STALE_UPLOAD = N_(
    "a file is no longer available (it expired or belongs to another page): "
    "remove it and upload it again"
)
TOO_MANY_PENDING = N_("too many files were sent for this question; reload the page")


@dataclass(frozen=True, slots=True)
class StoredUpload:
    id: str
    field_id: str
    media_type: str
    size_bytes: int
    width: int | None
    height: int | None
    pages: int | None

    @classmethod
    def of(cls, row: Upload) -> StoredUpload:
        return cls(
            row.id, row.field_id, row.media_type, row.size_bytes, row.width, row.height, row.pages
        )

    @property
    def is_image(self) -> bool:
        return self.media_type in IMAGE_TYPES

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "id": self.id,
            "fieldId": self.field_id,
            "mediaType": self.media_type,
            "sizeBytes": self.size_bytes,
        }
        if self.is_image:
            body["width"], body["height"] = self.width, self.height
        else:
            body["pages"] = self.pages
        return body


def too_large(size: int) -> str:
    return N_("is too large (at most {size} MB per file)", size=size // (1024 * 1024))


def kinds_message(kinds: Sequence[str]) -> str:
    if tuple(kinds) == ("image",):
        return N_("must be a photo (JPEG, PNG or WebP)")
    if tuple(kinds) == ("pdf",):
        return N_("must be a PDF document")
    return N_("must be a photo (JPEG, PNG or WebP) or a PDF document")


def check_content(field: FieldDef, data: bytes) -> CleanFile:
    """The file to keep (images re-encoded without metadata) or ValueError with the
    patient's message. The type is the content's, whatever the name or declared type."""
    if not data:
        raise ValueError(N_("is an empty file"))
    if len(data) > field.file_size_limit:
        raise ValueError(too_large(field.file_size_limit))
    kinds = field.file_kinds
    kind = sniff_type(data)
    try:
        if kind in IMAGE_TYPES and "image" in kinds:
            return clean_image(data)
        if kind == PDF and "pdf" in kinds:
            return check_pdf(data)
    except UnsafeFile as exc:
        raise ValueError(exc.args[0] if exc.args else "") from None
    raise ValueError(kinds_message(kinds))


def file_field(fields: Sequence[FieldDef], field_id: str) -> FieldDef:
    for field in fields:
        if field.id == field_id and field.type is FieldType.FILE:
            return field
    raise ValidationFailed({"field": NOT_A_FILE_FIELD})


async def receive_upload(
    session: AsyncSession,
    keys: KeyRing,
    *,
    organization_id: str,
    form_id: str,
    field: FieldDef,
    scope: str,
    nonce_id: str,
    nonce_expires_at: datetime,
    data: bytes,
    store: FileStore = FILE_STORE,
) -> StoredUpload:
    """Check, seal and keep one file for a page's field; commit. 422 keyed by the field
    id with the patient's message when the file is refused."""
    try:
        # Decoding a photo is CPU work (a 48 MP JPEG takes about a second): off the loop.
        clean = await asyncio.to_thread(check_content, field, data)
    except ValueError as exc:
        # The Message itself (not str()): the answer translates it (languages.py).
        raise ValidationFailed({field.id: exc.args[0] if exc.args else ""}) from None
    pending = (
        await session.execute(
            select(func.count())
            .select_from(Upload)
            .where(
                Upload.nonce_id == nonce_id,
                Upload.field_id == field.id,
                Upload.response_id.is_(None),
            )
        )
    ).scalar_one()
    if pending >= PENDING_PER_FILE * field.file_count_limit:
        raise ValidationFailed({field.id: TOO_MANY_PENDING})
    now = utcnow()
    upload_id = new_id("upl_")
    row = Upload(
        id=upload_id,
        organization_id=organization_id,
        form_id=form_id,
        field_id=field.id,
        scope=scope,
        nonce_id=nonce_id,
        media_type=clean.media_type,
        size_bytes=len(clean.data),
        width=clean.width,
        height=clean.height,
        pages=clean.pages,
        created_at=now,
        expires_at=nonce_expires_at + PENDING_GRACE,
    )
    session.add(row)
    await session.flush()  # the row before its bytes: the blob's foreign key names it
    await store.put(session, upload_id, seal(keys, clean.data, upload_aad(upload_id)))
    await session.commit()
    log.info("upload_received", upload_id=upload_id, form_id=form_id, size=len(clean.data))
    return StoredUpload.of(row)


async def attach_uploads(
    session: AsyncSession,
    *,
    form_id: str,
    scope: str,
    nonce_id: str,
    response_id: str,
    files: Mapping[str, Sequence[str]],
    now: datetime,
) -> None:
    """Attach the pending uploads each file field names to the response, inside its
    transaction; ValidationFailed (nothing attached) when one is not this page's
    pending upload of that field."""
    for field_id, upload_ids in files.items():
        if not upload_ids:
            continue
        result = await session.execute(
            update(Upload)
            .where(
                Upload.id.in_(list(upload_ids)),
                Upload.form_id == form_id,
                Upload.field_id == field_id,
                Upload.scope == scope,
                Upload.nonce_id == nonce_id,
                Upload.response_id.is_(None),
                Upload.expires_at > now,
            )
            .values(response_id=response_id, expires_at=None)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != len(upload_ids):
            raise ValidationFailed({field_id: STALE_UPLOAD})


async def extend_pending(
    session: AsyncSession,
    upload_ids: Sequence[str],
    until: datetime,
    *,
    nonce_id: str | None = None,
    form_id: str | None = None,
) -> int:
    """Keep these pending uploads until `until` (e.g. while a saved draft lives), in the
    caller's transaction; return how many it kept. With `nonce_id`, they are bound to
    that nonce from now on (a resumed draft's page has a new one); with `form_id`, only
    that form's uploads are touched (a draft names ids a client sent). Attached uploads
    are never touched; an upload already past its time (swept or not) is not brought
    back."""
    if not upload_ids:
        return 0
    values: dict[str, object] = {"expires_at": until}
    if nonce_id is not None:
        values["nonce_id"] = nonce_id
    query = update(Upload).where(
        Upload.id.in_(list(upload_ids)),
        Upload.response_id.is_(None),
        Upload.expires_at > utcnow(),
    )
    if form_id is not None:
        query = query.where(Upload.form_id == form_id)
    result = await session.execute(
        query.values(**values).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


async def pending_uploads(
    session: AsyncSession,
    form_id: str,
    upload_ids: Sequence[str],
    now: datetime,
    *,
    nonce_id: str | None = None,
) -> dict[str, StoredUpload]:
    """The uploads of `upload_ids` still pending for `form_id` (not attached, not past
    their time; with `nonce_id`, that page's only), by id: what a page can still send."""
    if not upload_ids:
        return {}
    query = select(Upload).where(
        Upload.id.in_(list(upload_ids)),
        Upload.form_id == form_id,
        Upload.response_id.is_(None),
        Upload.expires_at > now,
    )
    if nonce_id is not None:
        query = query.where(Upload.nonce_id == nonce_id)
    rows = await session.execute(query)
    return {row.id: StoredUpload.of(row) for row in rows.scalars()}


async def sweep_expired(
    session: AsyncSession,
    now: datetime | None = None,
    *,
    limit: int = SWEEP_BATCH,
    store: FileStore = FILE_STORE,
) -> int:
    """Delete up to `limit` pending uploads past their time (rows and bytes) and commit;
    return how many."""
    at = now or utcnow()
    ids = list(
        (
            await session.execute(
                select(Upload.id)
                .where(Upload.response_id.is_(None), Upload.expires_at < at)
                .limit(limit)
            )
        ).scalars()
    )
    if not ids:
        return 0
    await store.delete(session, ids)
    await session.execute(
        delete(Upload)
        .where(Upload.id.in_(ids), Upload.response_id.is_(None))
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    log.info("uploads_swept", count=len(ids))
    return len(ids)


async def response_files(session: AsyncSession, response_id: str) -> list[StoredUpload]:
    """The files attached to a response, in upload order."""
    rows = await session.execute(
        select(Upload)
        .where(Upload.response_id == response_id)
        .order_by(Upload.created_at, Upload.id)
    )
    return [StoredUpload.of(row) for row in rows.scalars()]


async def open_file(
    session: AsyncSession,
    keys: KeyRing,
    response_id: str,
    upload_id: str,
    store: FileStore = FILE_STORE,
) -> tuple[StoredUpload, bytes]:
    """One attached file of a response, decrypted; 404 when it is not one of its files,
    409 response_unreadable when its bytes will not open."""
    row = (
        await session.execute(
            select(Upload).where(Upload.id == upload_id, Upload.response_id == response_id)
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound()
    sealed = await store.get(session, row.id)
    if sealed is None:
        log.error("upload_missing", upload_id=row.id)
        raise ResponseUnreadable()
    try:
        data = open_sealed(keys, sealed, upload_aad(row.id))
    except DecryptionFailed as exc:
        log.error("upload_decrypt_failed", upload_id=row.id, reason=type(exc).__name__)
        raise ResponseUnreadable() from None
    return StoredUpload.of(row), data


async def open_files(
    session: AsyncSession, keys: KeyRing, response_id: str
) -> list[tuple[StoredUpload, bytes | None]]:
    """Every file of a response with its bytes (None: unreadable), for the PDF."""
    opened: list[tuple[StoredUpload, bytes | None]] = []
    for meta in await response_files(session, response_id):
        try:
            opened.append(await open_file(session, keys, response_id, meta.id))
        except ResponseUnreadable:
            opened.append((meta, None))
    return opened
