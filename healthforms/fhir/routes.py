"""FHIR endpoints (docs/fhir.md): a form version as a Questionnaire, a response as a
QuestionnaireResponse (audited like the staff read), a form's responses as NDJSON
(audited like the CSV export), and a Questionnaire imported as a draft form.

Roles mirror the endpoints they parallel: the Questionnaire and one response for any
signed-in staff member (GET /api/forms/{id}, GET /api/responses/{id}); the bulk export
and the import for editors and admins (the CSV export, POST /api/forms).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from healthforms.audit.events import FORM_CREATED, RESPONSE_VIEWED, RESPONSES_EXPORTED, Outcome
from healthforms.audit.recorder import AuditorDep
from healthforms.errors import BadRequest, Conflict
from healthforms.exports.routes import SameSite
from healthforms.exports.service import FORM_RESOURCE, ExportPlan, plan_export, today
from healthforms.fhir.importer import import_questionnaire, validate_questionnaire
from healthforms.fhir.questionnaire import questionnaire, version_status
from healthforms.fhir.response import (
    build_or_unreadable,
    files_of,
    public_base,
    questionnaire_response_of_row,
)
from healthforms.forms.models import FormVersion
from healthforms.forms.service import FormService, form_json
from healthforms.http.ratelimits import PdfRateLimit
from healthforms.pdf.routes import content_disposition
from healthforms.responses.filters import ResponseFilterDep
from healthforms.responses.models import ResponseRow
from healthforms.responses.service import (
    RESOURCE_TYPE,
    ResponseUnreadable,
    get_response,
    get_version,
    responses_by_id,
)
from healthforms.security.context import CurrentPrincipal, EditorPrincipal
from healthforms.state import AppState, DbSessionDep, StateDep
from healthforms.uploads.service import StoredUpload

router = APIRouter(tags=["fhir"])

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Responses read, decrypted and written per database session of the NDJSON stream.
NDJSON_BATCH = 64


class NotPublished(Conflict):
    code = "not_published"
    message = "The form has no published version yet: publish it first."


def _base(state: AppState, request: Request) -> str:
    return public_base(state, str(request.base_url))


def _fhir(body: dict[str, Any], *, phi: bool = False, status_code: int = 200) -> JSONResponse:
    return JSONResponse(
        body, status_code=status_code, media_type=FHIR_JSON, headers=NO_STORE if phi else None
    )


@router.get("/api/forms/{form_id}/fhir")
async def form_questionnaire(
    form_id: str,
    request: Request,
    principal: CurrentPrincipal,
    session: DbSessionDep,
    state: StateDep,
    version: int | None = Query(default=None, ge=1, le=1_000_000),
) -> JSONResponse:
    """The Questionnaire of a frozen version (default: the latest published)."""
    service = FormService(session, principal)
    form = await service.get(form_id)
    number = version if version is not None else form.version
    if number == 0:
        raise NotPublished()
    frozen = await service.version(form_id, number)
    status = version_status(frozen, form.version, form.status)
    return _fhir(questionnaire(frozen, base_url=_base(state, request), status=status))


@router.get("/api/responses/{response_id}/fhir")
async def response_questionnaire_response(
    response_id: str,
    request: Request,
    principal: CurrentPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
) -> JSONResponse:
    """One response as a QuestionnaireResponse: a PHI read, audited as the staff read is
    (responses/routes.py read_response), with the format in its detail."""
    row = await get_response(session, principal.organization_id, response_id)
    try:
        body = await questionnaire_response_of_row(
            session, state.keys, row, base_url=_base(state, request)
        )
    except ResponseUnreadable:
        await auditor.record(
            RESPONSE_VIEWED,
            outcome=Outcome.FAILURE,
            resource_type=RESOURCE_TYPE,
            resource_id=row.id,
            detail={"format": "fhir"},
        )
        raise
    await auditor.record(
        RESPONSE_VIEWED, resource_type=RESOURCE_TYPE, resource_id=row.id, detail={"format": "fhir"}
    )
    return _fhir(body, phi=True)


def _unreadable(response_id: str) -> dict[str, Any]:
    """What an NDJSON line says of a response that will not decrypt (no PHI: its id)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "exception",
                "diagnostics": f"response {response_id} could not be decrypted",
            }
        ],
    }


def _lines(
    state: AppState,
    rows: list[ResponseRow],
    versions: dict[str, FormVersion],
    files: dict[str, list[StoredUpload]],
    base_url: str,
) -> bytes:
    """Decrypt and write a batch (CPU: run in a worker thread)."""
    lines: list[str] = []
    for row in rows:
        body = build_or_unreadable(
            state.keys,
            row,
            versions[row.form_version_id],
            files.get(row.id, []),
            base_url=base_url,
        )
        lines.append(
            json.dumps(body or _unreadable(row.id), ensure_ascii=False, separators=(",", ":"))
        )
    return "".join(f"{line}\n" for line in lines).encode()


async def _ndjson(state: AppState, plan: ExportPlan, base_url: str) -> AsyncIterator[bytes]:
    """One QuestionnaireResponse per line, NDJSON_BATCH responses per short session (no
    pooled connection held by a slow download; at most one batch of answers in memory),
    in the export's order; decrypting and writing run in a worker thread."""
    ids = plan.response_ids
    for start in range(0, len(ids), NDJSON_BATCH):
        async with state.db.sessions() as session:
            rows = await responses_by_id(
                session, plan.organization_id, plan.form_id, ids[start : start + NDJSON_BATCH]
            )
            versions = {row.form_version_id: await get_version(session, row) for row in rows}
            files = await files_of(session, [row.id for row in rows])
        if rows:
            yield await asyncio.to_thread(_lines, state, rows, versions, files, base_url)


@router.get(
    "/api/forms/{form_id}/responses/fhir",
    response_class=StreamingResponse,
    responses={200: {"description": "NDJSON", "content": {FHIR_NDJSON: {}}}},
)
async def export_questionnaire_responses(
    form_id: str,
    request: Request,
    principal: EditorPrincipal,
    _site: SameSite,
    filters: ResponseFilterDep,
    _: PdfRateLimit,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
) -> StreamingResponse:
    """The responses the list shows for the same filters, as NDJSON: ONE audit event
    naming them, recorded before the first line leaves (as the CSV export)."""
    plan = await plan_export(session, principal.organization_id, form_id, filters)
    await session.commit()  # ends the read: the rows are read in sessions of their own
    await auditor.record(
        RESPONSES_EXPORTED,
        resource_type=FORM_RESOURCE,
        resource_id=plan.form_id,
        detail={
            "format": "fhir-ndjson",
            "count": len(plan.response_ids),
            "responseIds": plan.response_ids,
        },
    )
    filename = plan.filename("responses", "ndjson", today())
    return StreamingResponse(
        _ndjson(state, plan, _base(state, request)),
        media_type=FHIR_NDJSON,
        headers={**NO_STORE, "Content-Disposition": content_disposition(filename)},
    )


@router.post("/api/forms/import-fhir", status_code=201)
async def import_fhir(
    request: Request,
    principal: EditorPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
) -> JSONResponse:
    """A Questionnaire as a new draft form; the answer lists what was not imported."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest() from None
    # CPU-bound for a large body (up to ~0.5 s at the body limit): off the event loop.
    data = await asyncio.to_thread(validate_questionnaire, body)
    imported = await asyncio.to_thread(import_questionnaire, data)
    form = await FormService(session, principal).create(
        title=imported.title,
        description=imported.description,
        fields=imported.fields,
        translations=imported.translations,
    )
    await auditor.record(
        FORM_CREATED,
        resource_type="form",
        resource_id=form.id,
        detail={"importedFrom": "fhir", "unsupported": len(imported.unsupported)},
    )
    return JSONResponse(
        {
            "form": form_json(form),
            "unsupported": [f.as_json() for f in imported.unsupported],
            "notes": [f.as_json() for f in imported.notes],
        },
        status_code=201,
    )
