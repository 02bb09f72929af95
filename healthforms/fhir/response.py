"""A stored response as a FHIR R4 QuestionnaireResponse (docs/fhir.md).

`questionnaire_response(...)` is the one entry point (the staff read, the NDJSON export
and the webhooks all call it). It decrypts the response, so its caller audits the read.

Attachments: a signature is inline (`data`, base64 PNG, with `size` and the SHA-1
`hash` FHIR defines), because it is part of the sealed answers, small (at most the
signature limit) and the evidence of what was signed. Uploaded files are referenced
by `url` to the staff file endpoint (GET /api/responses/{id}/files/{fileId}) with their
type and size: they reach 20 MiB each, every byte of one is a PHI read audited on its
own (uploads/routes.py), and an NDJSON export of thousands of responses must not carry
them all.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import rfc3339
from healthforms.crypto.keys import KeyRing
from healthforms.errors import NotFound
from healthforms.fhir.codes import canonical_url, option_code
from healthforms.fhir.questionnaire import is_multiple, is_yes_no, score_is_integer
from healthforms.forms.models import FormVersion
from healthforms.forms.schema import FieldDef, FieldType, fields_from_json
from healthforms.responses.models import ResponseRow
from healthforms.responses.service import (
    ResponseContent,
    ResponseUnreadable,
    get_response,
    get_version,
    open_response,
)
from healthforms.state import AppState
from healthforms.uploads.models import Upload
from healthforms.uploads.service import StoredUpload, response_files

JsonObject = dict[str, Any]
SIGNATURE_PREFIX = "data:image/png;base64,"
IDENTIFIER_SYSTEM_PATH = "/fhir/responses"


def public_base(state: AppState, request_base: str | None = None) -> str:
    """The address the service is reached at: HEALTHFORMS_PUBLIC_URL when set, else the
    request's, else the local default (a worker without a request)."""
    if state.settings.public_url or not request_base:
        return state.settings.public_base
    return request_base.rstrip("/")


def _attachment_of_signature(value: str, signed: Mapping[str, Any] | None) -> JsonObject | None:
    if not value.startswith(SIGNATURE_PREFIX):
        return None
    data = value[len(SIGNATURE_PREFIX) :]
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        return None
    attachment: JsonObject = {
        "contentType": "image/png",
        "data": data,
        "size": len(raw),
        # FHIR R4 Attachment.hash: the base64 SHA-1 of the data.
        "hash": base64.b64encode(hashlib.sha1(raw).digest()).decode("ascii"),  # noqa: S324
        "title": "Signature",
    }
    signed_at = (signed or {}).get("signedAt")
    if isinstance(signed_at, str):
        attachment["creation"] = signed_at
    return attachment


def _attachment_of_file(base_url: str, response_id: str, stored: StoredUpload) -> JsonObject:
    return {
        "contentType": stored.media_type,
        "url": f"{base_url}/api/responses/{response_id}/files/{stored.id}",
        "size": stored.size_bytes,
        "title": f"{stored.field_id}-{stored.id[-6:]}",
    }


def _choice(field: FieldDef, value: object) -> JsonObject:
    options = field.options or []
    if isinstance(value, str) and value in options:
        return {"valueCoding": {"code": option_code(value, options.index(value)), "display": value}}
    return {"valueString": str(value)}


def answers_of(
    field: FieldDef,
    value: object,
    *,
    content: ResponseContent,
    files: Mapping[str, StoredUpload],
    base_url: str,
    response_id: str,
) -> list[JsonObject]:
    """The typed answers of one field (empty when it has none)."""
    kind = field.type
    if value is None or value == "" or value == []:
        return []
    if kind in (FieldType.TEXT, FieldType.TEXTAREA, FieldType.EMAIL, FieldType.PHONE):
        return [{"valueString": str(value)}]
    if kind is FieldType.NUMBER and isinstance(value, int | float) and not isinstance(value, bool):
        return [{"valueDecimal": value}]
    if kind is FieldType.DATE and isinstance(value, str):
        return [{"valueDate": value}]
    if kind in (FieldType.SELECT, FieldType.RADIO):
        return [_choice(field, value)]
    if is_multiple(field) and isinstance(value, list):
        return [_choice(field, v) for v in value]
    if is_yes_no(field) and isinstance(value, bool):
        return [{"valueBoolean": value}]
    if kind is FieldType.SIGNATURE and isinstance(value, str):
        signed = content.signatures.get(field.id)
        attachment = _attachment_of_signature(value, signed if isinstance(signed, dict) else None)
        return [{"valueAttachment": attachment}] if attachment else []
    if kind is FieldType.FILE and isinstance(value, list):
        return [
            {"valueAttachment": _attachment_of_file(base_url, response_id, files[file_id])}
            for file_id in value
            if isinstance(file_id, str) and file_id in files
        ]
    return [{"valueString": str(value)}]  # pragma: no cover - validated answers


def build(
    row: ResponseRow,
    version: FormVersion,
    content: ResponseContent,
    files: Sequence[StoredUpload],
    *,
    base_url: str,
) -> JsonObject:
    """The QuestionnaireResponse of one decrypted response (pure)."""
    fields = fields_from_json([f for f in version.fields or [] if f.get("type") in set(FieldType)])
    by_id = {f.id: f for f in fields}
    integer_scores = {
        f.id for f in fields if f.type is FieldType.SCORE and f.score and score_is_integer(f, by_id)
    }
    by_file = {f.id: f for f in files}
    top: list[JsonObject] = []
    page: JsonObject | None = None
    for field in fields:
        if field.type is FieldType.PAGE_BREAK:
            page = {"linkId": field.id, "text": field.label, "item": []}
            top.append(page)
            continue
        if not field.takes_answer and field.type is not FieldType.SCORE:
            continue
        if field.type is FieldType.SCORE:
            answers = _score_answers(field, content, field.id in integer_scores)
        else:
            answers = answers_of(
                field,
                content.answers.get(field.id),
                content=content,
                files=by_file,
                base_url=base_url,
                response_id=row.id,
            )
        if not answers:
            continue
        item = {"linkId": field.id, "text": field.label, "answer": answers}
        (page["item"] if page is not None else top).append(item)
    items = [i for i in top if i.get("item") != []]  # a page with nothing answered
    body: JsonObject = {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": f"{base_url}{IDENTIFIER_SYSTEM_PATH}", "value": row.id},
        "questionnaire": f"{canonical_url(base_url, row.form_id)}|{row.form_version}",
        "status": "completed",
        "authored": rfc3339(row.submitted_at),
        "language": row.language or "en",
    }
    if items:
        body["item"] = items
    return body


def _score_answers(field: FieldDef, content: ResponseContent, integer: bool) -> list[JsonObject]:
    stored = content.scores.get(field.id)
    number = stored.get("value") if isinstance(stored, dict) else None
    if isinstance(number, bool) or not isinstance(number, int | float):
        return []  # incomplete: no total (forms/scores.py)
    if integer and float(number).is_integer():
        return [{"valueInteger": int(number)}]
    return [{"valueDecimal": number}]


async def questionnaire_response(
    session: AsyncSession,
    state: AppState,
    organization_id: str,
    response_id: str,
    *,
    base_url: str | None = None,
) -> JsonObject:
    """The QuestionnaireResponse of one of the organisation's responses, as a JSON-ready
    dict. Raises NotFound (not the organisation's, or gone) and ResponseUnreadable (will
    not decrypt). It reads PHI: the caller records the audit event. `base_url` defaults
    to HEALTHFORMS_PUBLIC_URL (else http://127.0.0.1:8000)."""
    row = await get_response(session, organization_id, response_id)
    return await questionnaire_response_of_row(
        session, state.keys, row, base_url=base_url or public_base(state)
    )


async def files_of(
    session: AsyncSession, response_ids: Sequence[str]
) -> dict[str, list[StoredUpload]]:
    """The files attached to each of these responses (one query), in upload order."""
    found: dict[str, list[StoredUpload]] = {}
    if not response_ids:
        return found
    rows = await session.execute(
        select(Upload)
        .where(Upload.response_id.in_(list(response_ids)))
        .order_by(Upload.created_at, Upload.id)
    )
    for upload in rows.scalars():
        found.setdefault(str(upload.response_id), []).append(StoredUpload.of(upload))
    return found


def build_or_unreadable(
    keys: KeyRing,
    row: ResponseRow,
    version: FormVersion,
    files: Sequence[StoredUpload],
    *,
    base_url: str,
) -> JsonObject | None:
    """`build` after decrypting (CPU: run in a worker thread); None when the record will
    not decrypt (open_response logs it by id)."""
    try:
        content = open_response(keys, row)
    except ResponseUnreadable:
        return None
    return build(row, version, content, files, base_url=base_url)


async def questionnaire_response_of_row(
    session: AsyncSession, keys: KeyRing, row: ResponseRow, *, base_url: str
) -> JsonObject:
    content = open_response(keys, row)
    version = await get_version(session, row)
    files = await response_files(session, row.id)
    return build(row, version, content, files, base_url=base_url)


# What the webhooks dispatcher takes as its `body_source` (webhooks/service.py BodySource):
# (session, keys, organization_id, response_id) -> the resource, or None.
ResponseBodySource = Callable[[AsyncSession, KeyRing, str, str], Awaitable[JsonObject | None]]


def webhook_body_source(base_url: str) -> ResponseBodySource:
    """The QuestionnaireResponse builder for webhook bodies, with the service's public
    address bound: None (no body) for a response that is gone or will not decrypt, so a
    delivery still goes out with ids and links only. It decrypts PHI; the endpoint's
    opt-in to bodies is what the webhooks feature audits."""

    async def body(
        session: AsyncSession, keys: KeyRing, organization_id: str, response_id: str
    ) -> JsonObject | None:
        try:
            row = await get_response(session, organization_id, response_id)
            return await questionnaire_response_of_row(session, keys, row, base_url=base_url)
        except (NotFound, ResponseUnreadable):
            return None

    return body
