"""Reading and deleting responses, always inside the caller's organisation.

Answers are decrypted only here (and for the PDF), never logged, and a ciphertext that
fails to open (altered, moved onto another row, or its master key missing) becomes a
clear 409 `response_unreadable` instead of a 500.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVarTuple

import structlog
from sqlalchemy import Select, and_, column, delete, func, or_, select, table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from healthforms.alerts.models import Alert
from healthforms.audit.events import RESPONSES_LISTED
from healthforms.audit.recorder import Auditor
from healthforms.clock import rfc3339
from healthforms.crypto.envelope import DecryptionFailed, Sealed, open_json, response_aad
from healthforms.crypto.keys import KeyRing
from healthforms.errors import HealthformsError, NotFound, ValidationFailed
from healthforms.forms.models import Form, FormVersion
from healthforms.forms.service import STATUS_ARCHIVED
from healthforms.responses.models import (
    ResponseIdentity,
    ResponseNote,
    ResponsePdf,
    ResponseRow,
    ResponseScores,
    ResponseSearchToken,
)
from healthforms.responses.patients import (
    PatientIdentity,
    PatientSearch,
    matching_ids,
    read_identities,
)
from healthforms.responses.scores import read_scores

log = structlog.get_logger("healthforms.responses")

RESOURCE_TYPE = "response"

Ts = TypeVarTuple("Ts")


class ResponseUnreadable(HealthformsError):
    status_code, code = 409, "response_unreadable"
    message = (
        "This stored record cannot be decrypted: it was altered, "
        "or the key that encrypted it is not configured."
    )


@dataclass(frozen=True, slots=True)
class ResponseContent:
    """The decrypted payload: answers, signature evidence and calculated scores
    (forms/scores.py), each by field id."""

    answers: dict[str, Any]
    signatures: dict[str, Any]
    scores: dict[str, Any] = field(default_factory=dict)


# A response's identity could not be decrypted: the list says so instead of failing.
UNREADABLE_PATIENT = {"name": None, "birthDate": None, "unreadable": True}


def response_json(
    row: ResponseRow,
    content: ResponseContent | None = None,
    names: dict[str, str] | None = None,
    patients: dict[str, PatientIdentity | None] | None = None,
    scores: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """API.md's Response; without `content` the list shape (no answers). The review
    fields (docs/responses.md) name who reviewed and filed it, from `names`; `patient`
    is who it is from (docs/responses.md), null when the form marks no such field."""

    def person(user_id: str | None) -> dict[str, str | None] | None:
        if user_id is None:
            return None
        return {"id": user_id, "name": (names or {}).get(user_id)}

    body: dict[str, Any] = {
        "id": row.id,
        "formId": row.form_id,
        "formVersion": row.form_version,
        "submittedAt": rfc3339(row.submitted_at),
        "confirmation": row.confirmation,
        "status": row.review_status,
        "reviewedBy": person(row.reviewed_by),
        "reviewedAt": rfc3339(row.reviewed_at) if row.reviewed_at else None,
        "filedBy": person(row.filed_by),
        "filedAt": rfc3339(row.filed_at) if row.filed_at else None,
    }
    if patients is not None:
        if row.id not in patients:
            body["patient"] = None
        else:
            identity = patients[row.id]
            body["patient"] = UNREADABLE_PATIENT if identity is None else identity.as_json()
    # Calculated scores (docs/scores.md), only on a response that has any: the list's
    # from their sealed copy (responses/scores.py), a read's from the answers' payload.
    if scores is not None and row.id in scores:
        body["scores"] = scores[row.id]
    if content is not None:
        body["answers"] = content.answers
        if content.scores:
            body["scores"] = content.scores
    return body


async def get_form(session: AsyncSession, organization_id: str, form_id: str) -> Form:
    form = (
        await session.execute(
            select(Form).where(Form.id == form_id, Form.organization_id == organization_id)
        )
    ).scalar_one_or_none()
    if form is None:
        raise NotFound()
    return form


async def forms_with_response_counts(
    session: AsyncSession, organization_id: str
) -> list[tuple[Form, int]]:
    """The organisation's forms that are not archived, each with how many responses it
    holds, most recently updated first (the staff forms list)."""
    counts = (
        select(ResponseRow.form_id, func.count().label("n"))
        .where(ResponseRow.organization_id == organization_id)
        .group_by(ResponseRow.form_id)
        .subquery()
    )
    rows = await session.execute(
        select(Form, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.form_id == Form.id)
        .where(Form.organization_id == organization_id)
        .where(Form.status != STATUS_ARCHIVED)
        .order_by(Form.updated_at.desc())
    )
    return [(form, int(count)) for form, count in rows]


@dataclass(frozen=True, slots=True)
class ResponsePage:
    rows: list[ResponseRow]
    next_cursor: str | None  # pass as `after` for the next page; None on the last


def _cursor(row: ResponseRow) -> str:
    raw = f"{row.submitted_at.astimezone(UTC).isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names; 422 for anything this service did not write."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, row_id = raw.partition("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not row_id.startswith("rsp_"):
            raise ValueError(cursor)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ValidationFailed({"after": "not a cursor this list gave"}) from None
    return when.astimezone(UTC), row_id


@dataclass(frozen=True, slots=True)
class ResponseFilter:
    """Which of a form's responses a view holds: one review status, and submitted in
    [since, until). The list and the exports apply the same one, so an export holds
    exactly what the list shows (parsed from a request by responses/filters.py)."""

    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Whose responses (name words, date of birth): what was searched, and the ids its
    # blind indexes match (responses/patients.py), built for the caller's organisation.
    search: PatientSearch = PatientSearch()
    patients: Select[str] | None = None

    def apply(self, query: Select[*Ts]) -> Select[*Ts]:
        if self.patients is not None:
            query = query.where(ResponseRow.id.in_(self.patients))
        if self.status is not None:
            query = query.where(ResponseRow.review_status == self.status)
        if self.since is not None:
            query = query.where(ResponseRow.submitted_at >= self.since)
        if self.until is not None:
            query = query.where(ResponseRow.submitted_at < self.until)
        return query


def _form_responses(
    query: Select[*Ts], organization_id: str, form_id: str, filters: ResponseFilter
) -> Select[*Ts]:
    """`query` narrowed to the form's responses that `filters` keeps, newest first."""
    query = query.where(
        ResponseRow.form_id == form_id, ResponseRow.organization_id == organization_id
    )
    return filters.apply(query).order_by(ResponseRow.submitted_at.desc(), ResponseRow.id.desc())


async def list_form_responses(
    session: AsyncSession,
    organization_id: str,
    form_id: str,
    filters: ResponseFilter = ResponseFilter(),  # noqa: B008 - frozen, never mutated
    *,
    limit: int | None = None,
    after: str | None = None,
) -> ResponsePage:
    """A form's responses, newest first, those `filters` keeps; another organisation's
    form is 404. With `limit`, one page of a keyset pagination: `after` is the previous
    page's cursor (stable while new responses arrive, unlike an offset)."""
    await get_form(session, organization_id, form_id)
    query = _form_responses(select(ResponseRow), organization_id, form_id, filters)
    if after is not None:
        at, row_id = _after(after)
        query = query.where(
            or_(
                ResponseRow.submitted_at < at,
                and_(ResponseRow.submitted_at == at, ResponseRow.id < row_id),
            )
        )
    if limit is not None:
        query = query.limit(limit + 1)  # one more: is there a next page?
    rows = list((await session.execute(query)).scalars())
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        return ResponsePage(rows, _cursor(rows[-1]))
    return ResponsePage(rows, None)


async def form_response_ids(
    session: AsyncSession,
    organization_id: str,
    form_id: str,
    filters: ResponseFilter,
    *,
    limit: int,
) -> list[str]:
    """The ids of the form's responses that `filters` keeps, in the list's order, at most
    `limit` of them; another organisation's form is 404."""
    await get_form(session, organization_id, form_id)
    query = _form_responses(select(ResponseRow.id), organization_id, form_id, filters)
    return list((await session.execute(query.limit(limit))).scalars())


async def responses_by_id(
    session: AsyncSession, organization_id: str, form_id: str, ids: Sequence[str]
) -> list[ResponseRow]:
    """The form's responses among `ids`, in the list's order (an id that is not one of
    them, or no longer exists, is left out)."""
    if not ids:
        return []
    query = _form_responses(select(ResponseRow), organization_id, form_id, ResponseFilter()).where(
        ResponseRow.id.in_(list(ids))
    )
    return list((await session.execute(query)).scalars())


def normalise_confirmation(code: str) -> str | None:
    """A confirmation code as typed or read out ("7zg9 ehd-36u") in its stored form, or
    None when it cannot be one (4-32 letters and digits once spaces and dashes go)."""
    cleaned = "".join(ch for ch in code.upper() if ch not in " -\t")
    if not 4 <= len(cleaned) <= 32 or not cleaned.isascii() or not cleaned.isalnum():
        return None
    return cleaned


async def find_by_confirmation(
    session: AsyncSession, organization_id: str, code: str
) -> list[ResponseRow]:
    """The organisation's responses with this confirmation code (one, in practice)."""
    rows = await session.execute(
        select(ResponseRow)
        .where(ResponseRow.organization_id == organization_id, ResponseRow.confirmation == code)
        .order_by(ResponseRow.submitted_at.desc())
        .limit(10)
    )
    return list(rows.scalars())


async def find_by_patient(
    session: AsyncSession, keys: KeyRing, organization_id: str, search: PatientSearch
) -> list[ResponseRow]:
    """The organisation's responses (of any form) from the patient `search` names,
    newest first, at most 100."""
    rows = await session.execute(
        select(ResponseRow)
        .where(
            ResponseRow.organization_id == organization_id,
            ResponseRow.id.in_(matching_ids(keys, organization_id, search)),
        )
        .order_by(ResponseRow.submitted_at.desc(), ResponseRow.id.desc())
        .limit(100)
    )
    return list(rows.scalars())


async def get_response(
    session: AsyncSession, organization_id: str, response_id: str
) -> ResponseRow:
    row = (
        await session.execute(
            select(ResponseRow).where(
                ResponseRow.id == response_id, ResponseRow.organization_id == organization_id
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound()
    return row


async def get_version(session: AsyncSession, row: ResponseRow) -> FormVersion:
    """The form version this response answered (its labels render the response)."""
    version = await session.get(FormVersion, row.form_version_id)
    if version is None:  # pragma: no cover - the foreign key forbids it
        raise NotFound()
    return version


def open_response(keys: KeyRing, row: ResponseRow) -> ResponseContent:
    """Decrypt a response; raise ResponseUnreadable (never a 500) when it will not open."""
    sealed = Sealed(ciphertext=row.ciphertext, wrapped_key=row.wrapped_key, key_id=row.key_id)
    try:
        payload = open_json(keys, sealed, response_aad(row.id, row.form_id))
    except (DecryptionFailed, UnicodeDecodeError, ValueError) as exc:
        # The reason names the failure class only; the payload is never logged.
        log.error("response_decrypt_failed", response_id=row.id, reason=type(exc).__name__)
        raise ResponseUnreadable() from None
    if not isinstance(payload, dict):
        log.error("response_decrypt_failed", response_id=row.id, reason="not an object")
        raise ResponseUnreadable()
    answers = payload.get("answers")
    signatures = payload.get("signatures")
    scores = payload.get("scores")
    return ResponseContent(
        answers=answers if isinstance(answers, dict) else {},
        signatures=signatures if isinstance(signatures, dict) else {},
        scores=scores if isinstance(scores, dict) else {},
    )


# Deletes one kind of record that belongs to a response, for these response ids, inside
# the caller's transaction (before the responses themselves: the foreign keys point at
# them).
RecordsDeleter = Callable[[AsyncSession, Sequence[str]], Awaitable[None]]


def rows_of(response_id: InstrumentedAttribute[Any]) -> RecordsDeleter:
    """The deleter of a table's rows whose `response_id` column names the response."""

    async def delete_rows(session: AsyncSession, response_ids: Sequence[str]) -> None:
        await session.execute(
            delete(response_id.class_)
            .where(response_id.in_(response_ids))
            .execution_options(synchronize_session=False)
        )

    return delete_rows


# Everything stored per response, deleted with it by the admin's delete and the retention
# purge alike (docs/retention.md). Explicit, not left to ON DELETE CASCADE: SQLite enforces
# it only with the pragma on. A feature that keeps more per response (patient requests,
# uploaded files) adds its line here: `rows_of(Model.response_id)` for a table, or its
# own RecordsDeleter (files kept outside the database: delete their rows here and the
# files once the transaction committed). Its model names `responses.id` as a string, so
# this module imports its models only and no import cycle forms.
def rows_named(table_name: str) -> RecordsDeleter:
    """The deleter of a table's rows whose `response_id` names the response, for a
    feature above this one (its model cannot be imported here without a cycle)."""
    target = table(table_name, column("response_id"))

    async def delete_rows(session: AsyncSession, response_ids: Sequence[str]) -> None:
        await session.execute(delete(target).where(target.c.response_id.in_(response_ids)))

    return delete_rows


def uploaded_files() -> RecordsDeleter:
    """The deleter of the files patients attached to the responses (uploads/): their
    sealed bytes, then their rows. The bytes live in the database (uploads/storage.py),
    so they go in the same transaction as the response."""
    uploads = table("uploads", column("id"), column("response_id"))
    blobs = table("upload_blobs", column("upload_id"))

    async def delete_rows(session: AsyncSession, response_ids: Sequence[str]) -> None:
        owned = select(uploads.c.id).where(uploads.c.response_id.in_(response_ids))
        await session.execute(delete(blobs).where(blobs.c.upload_id.in_(owned)))
        await session.execute(delete(uploads).where(uploads.c.response_id.in_(response_ids)))

    return delete_rows


RESPONSE_RECORDS: tuple[RecordsDeleter, ...] = (
    rows_of(ResponsePdf.response_id),
    rows_of(ResponseNote.response_id),
    rows_of(ResponseIdentity.response_id),
    rows_of(ResponseSearchToken.response_id),
    rows_of(ResponseScores.response_id),
    rows_of(Alert.response_id),
    # The request that asked for it (patient_requests/): it holds the patient's name and
    # contact details, which serve no purpose once the response is gone.
    rows_named("patient_requests"),
    # The photos and documents the patient attached (docs/uploads.md).
    uploaded_files(),
)


async def delete_responses(session: AsyncSession, response_ids: Sequence[str]) -> list[str]:
    """Delete these responses and all of RESPONSE_RECORDS of them inside the caller's
    transaction; return the ids it deleted (sorted): a response another transaction
    deleted first is not among them, so two deleters never both count it."""
    if not response_ids:
        return []
    # The responses are locked before their records, by every deleter in that order, so
    # an admin's delete and a purge of the same response queue instead of deadlocking
    # (PostgreSQL; SQLite has one writer and ignores FOR UPDATE).
    locked = list(
        (
            await session.execute(
                select(ResponseRow.id)
                .where(ResponseRow.id.in_(response_ids))
                .order_by(ResponseRow.id)
                .with_for_update()
            )
        ).scalars()
    )
    if not locked:
        return []
    for delete_records in RESPONSE_RECORDS:
        await delete_records(session, locked)
    deleted = (
        await session.execute(
            delete(ResponseRow)
            .where(ResponseRow.id.in_(locked))
            .returning(ResponseRow.id)
            .execution_options(synchronize_session=False)
        )
    ).scalars()
    return sorted(deleted)


async def delete_response(session: AsyncSession, organization_id: str, response_id: str) -> None:
    """Delete a response and all of its records (in the caller's transaction); 404 when
    it is not the organisation's, or was deleted meanwhile (a purge, another admin)."""
    row = await get_response(session, organization_id, response_id)
    if not await delete_responses(session, [row.id]):
        raise NotFound()


async def patients_of(
    session: AsyncSession,
    keys: KeyRing,
    auditor: Auditor,
    rows: list[ResponseRow],
    search: PatientSearch,
    *,
    form_id: str | None = None,
) -> dict[str, PatientIdentity | None]:
    """The patients of a list's rows, decrypted for the page, and the one audit event
    that says which responses' patients were shown (and that a search by name or date of
    birth was made: which criteria, never their values). A read that cannot be audited
    is refused like any other PHI read."""
    listed = await listed_of(session, keys, auditor, rows, search, form_id=form_id)
    return listed.patients


@dataclass(frozen=True, slots=True)
class Listed:
    """What a list shows of its rows beyond their metadata: PHI, decrypted."""

    patients: dict[str, PatientIdentity | None]
    scores: dict[str, dict[str, Any]]


async def listed_of(
    session: AsyncSession,
    keys: KeyRing,
    auditor: Auditor,
    rows: list[ResponseRow],
    search: PatientSearch,
    *,
    form_id: str | None = None,
    with_scores: bool = False,
) -> Listed:
    """`patients_of`, and with `with_scores` the rows' calculated scores too
    (responses/scores.py), under the same one audit event (`scoredIds` names the
    responses whose scores were shown)."""
    ids = [row.id for row in rows]
    patients = await read_identities(session, keys, ids)
    scores = await read_scores(session, keys, ids) if with_scores else {}
    if patients or scores or not search.is_empty():
        detail: dict[str, object] = {"count": len(patients), "responseIds": sorted(patients)}
        if scores:
            detail["scoredIds"] = sorted(scores)
        if not search.is_empty():
            detail["search"] = [
                term
                for term, given in (("name", search.words), ("birthDate", search.birth_date))
                if given
            ]
        await auditor.record(
            RESPONSES_LISTED,
            resource_type="form" if form_id else None,
            resource_id=form_id,
            detail=detail,
        )
    return Listed(patients, scores)
