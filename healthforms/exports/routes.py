"""Exports (docs/exports.md): a form's responses as CSV or XLSX, and a selection's PDFs
as one ZIP. Editors and admins; the `pdf` rate limit besides `api`; ONE audit event per
export, committed before the first byte of the file leaves."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from healthforms.audit.events import (
    CSRF_REJECTED,
    RESPONSES_EXPORTED,
    RESPONSES_PDFS_EXPORTED,
    Outcome,
)
from healthforms.audit.recorder import AuditorDep
from healthforms.errors import CsrfRejected, ValidationFailed
from healthforms.exports.service import (
    FORM_RESOURCE,
    ZIP_MEDIA_TYPE,
    ExportFormat,
    ExportService,
    PdfExport,
    parse_selection,
    plan_export,
    today,
)
from healthforms.exports.sheets import CSV_MEDIA_TYPE, XLSX_MEDIA_TYPE
from healthforms.http.ratelimits import PdfRateLimit, take_policy_token
from healthforms.pdf.routes import NO_STORE, content_disposition
from healthforms.responses.filters import ResponseFilterDep
from healthforms.security.context import EditorPrincipal
from healthforms.security.csrf import REASON_CROSS_SITE
from healthforms.state import DbSessionDep, StateDep

log = structlog.get_logger("healthforms.security")

router = APIRouter(tags=["responses"])


async def _same_site(request: Request, auditor: AuditorDep) -> None:
    """Refuse an export that a page of another site started. The session cookie is
    SameSite=Lax, which a browser still sends on a top-level GET: without this, any
    site could make a signed-in member of staff download a file of patient data and
    put an export nobody chose in the audit trail. Fetch Metadata says so outright
    (requests without it, from non-browser clients, go on)."""
    site = request.headers.get("sec-fetch-site")
    if site is None or site.strip().lower() != "cross-site":
        return
    log.warning(
        "csrf_rejected",
        reason=REASON_CROSS_SITE,
        path=request.url.path,
        user_id=auditor.actor_id,
        request_id=auditor.context.request_id,
    )
    await auditor.record(
        CSRF_REJECTED,
        outcome=Outcome.DENIED,
        resource_type=FORM_RESOURCE,
        resource_id=request.path_params.get("form_id"),
    )
    raise CsrfRejected()


async def _export_format(
    file_format: str = Query(default="csv", alias="format", max_length=8),
) -> ExportFormat:
    try:
        return ExportFormat(file_format)
    except ValueError:
        raise ValidationFailed({"format": "format must be csv or xlsx"}) from None


SameSite = Annotated[None, Depends(_same_site)]
ExportFormatDep = Annotated[ExportFormat, Depends(_export_format)]


def _file_headers(filename: str) -> dict[str, str]:
    return {**NO_STORE, "Content-Disposition": content_disposition(filename)}


@router.get(
    "/api/forms/{form_id}/responses/export",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The file", "content": {CSV_MEDIA_TYPE: {}, XLSX_MEDIA_TYPE: {}}}
    },
)
async def export_responses(
    form_id: str,
    principal: EditorPrincipal,
    _site: SameSite,
    filters: ResponseFilterDep,
    file_format: ExportFormatDep,
    _: PdfRateLimit,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
) -> StreamingResponse:
    """The responses the list shows for the same `status`, `from` and `to`, as a CSV
    (streamed as it is written) or an XLSX file."""
    plan = await plan_export(session, principal.organization_id, form_id, filters)
    await session.commit()  # ends the read: the rows are read in sessions of their own
    exports = ExportService(state)

    async def record(ids: list[str]) -> None:
        await auditor.record(
            RESPONSES_EXPORTED,
            resource_type=FORM_RESOURCE,
            resource_id=plan.form_id,
            detail={"format": file_format.value, "count": len(ids), "responseIds": ids},
        )

    if file_format is ExportFormat.CSV:
        # Recorded before the first row is read: the file streams from here on.
        await record(plan.response_ids)
        return StreamingResponse(
            exports.csv_stream(plan),
            media_type=CSV_MEDIA_TYPE,
            headers=_file_headers(plan.filename("responses", "csv", today())),
        )
    built = await exports.xlsx_file(plan)
    try:
        # Written whole, not yet sent: the event names exactly the rows it holds.
        await record(built.written)
    except BaseException:
        built.cleanup()
        raise
    return StreamingResponse(
        built.stream(),
        media_type=XLSX_MEDIA_TYPE,
        headers=_file_headers(plan.filename("responses", "xlsx", today())),
        background=BackgroundTask(built.cleanup),
    )


@router.post(
    "/api/forms/{form_id}/responses/export-pdfs",
    response_class=StreamingResponse,
    responses={200: {"description": "The ZIP", "content": {ZIP_MEDIA_TYPE: {}}}},
)
async def export_pdfs(
    form_id: str,
    request: Request,
    principal: EditorPrincipal,
    _: PdfRateLimit,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
    body: Any = Body(None),  # noqa: B008
) -> StreamingResponse:
    """A ZIP with the PDF of each selected response (`{"responseIds": [...]}`)."""
    ids = parse_selection(body)
    export = PdfExport(state)
    title, rows = await export.select(session, principal.organization_id, form_id, ids)
    await session.commit()  # ends the read: renders below take their own sessions

    async def spend_token() -> object:
        return await take_policy_token("pdf", request, principal.user_id, state)

    selection = await export.prepare(principal, title, rows, auditor, spend_token)
    included = selection.included
    detail: dict[str, object] = {"count": len(included), "responseIds": included}
    if selection.left_out:
        detail["leftOutIds"] = list(selection.left_out)
    await auditor.record(
        RESPONSES_PDFS_EXPORTED, resource_type=FORM_RESOURCE, resource_id=form_id, detail=detail
    )
    return StreamingResponse(
        export.zip_stream(principal, selection),
        media_type=ZIP_MEDIA_TYPE,
        headers=_file_headers(selection.filename(today())),
    )
