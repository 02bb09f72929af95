"""Responses API (list, read, delete, PDF) and the PDF download of the staff pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from healthforms.audit.events import RESPONSE_VIEWED, Outcome
from healthforms.audit.recorder import AuditorDep
from healthforms.errors import Unauthenticated
from healthforms.pdf.service import DeliveredPdf, PdfService
from healthforms.responses.service import (
    RESOURCE_TYPE,
    RESPONSE_DELETED,
    ResponseUnreadable,
    delete_response,
    get_response,
    list_form_responses,
    open_response,
    response_json,
)
from healthforms.security.locks import LockServiceDep
from healthforms.security.principal import AdminPrincipal, CurrentPrincipal, get_principal
from healthforms.security.ratelimit import PdfRateLimit, get_ratelimiter, policy_dependency
from healthforms.state import DbSessionDep, StateDep

router = APIRouter(tags=["responses"])

# The download link may generate too, so it spends a `pdf` token like generate-pdf;
# called by hand there, after the signed-out redirect.
_take_pdf_token = policy_dependency("pdf")

# PHI: never kept by a browser or proxy cache.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _phi_json(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=NO_STORE)


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266)."""
    fallback = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _pdf_response(pdf: DeliveredPdf) -> Response:
    return Response(
        content=pdf.content,
        media_type="application/pdf",
        headers={
            **NO_STORE,
            "Content-Disposition": content_disposition(pdf.filename),
            "X-Content-SHA256": pdf.sha256,
        },
    )


@router.get("/api/forms/{form_id}/responses")
async def list_responses(
    form_id: str, principal: CurrentPrincipal, session: DbSessionDep
) -> JSONResponse:
    rows = await list_form_responses(session, principal.organization_id, form_id)
    return _phi_json({"responses": [response_json(row) for row in rows]})


@router.get("/api/responses/{response_id}")
async def read_response(
    response_id: str,
    principal: CurrentPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
) -> JSONResponse:
    row = await get_response(session, principal.organization_id, response_id)
    try:
        content = open_response(state.keys, row)
    except ResponseUnreadable:
        await auditor.record(
            RESPONSE_VIEWED,
            outcome=Outcome.FAILURE,
            resource_type=RESOURCE_TYPE,
            resource_id=row.id,
        )
        raise
    # Reads of PHI are audited like writes.
    await auditor.record(RESPONSE_VIEWED, resource_type=RESOURCE_TYPE, resource_id=row.id)
    return _phi_json(response_json(row, content))


@router.delete("/api/responses/{response_id}", status_code=204)
async def remove_response(
    response_id: str, principal: AdminPrincipal, session: DbSessionDep, auditor: AuditorDep
) -> Response:
    await delete_response(session, principal.organization_id, response_id)
    await session.commit()
    await auditor.record(RESPONSE_DELETED, resource_type=RESOURCE_TYPE, resource_id=response_id)
    return Response(status_code=204)


@router.post("/api/responses/{response_id}/generate-pdf")
async def generate_pdf(
    response_id: str,
    principal: CurrentPrincipal,
    _: PdfRateLimit,
    state: StateDep,
    locks: LockServiceDep,
    auditor: AuditorDep,
) -> Response:
    pdf = await PdfService(state, locks).deliver(principal, response_id, auditor)
    return _pdf_response(pdf)


@router.get("/responses/{response_id}/pdf", include_in_schema=False)
async def download_pdf(
    response_id: str,
    request: Request,
    state: StateDep,
    locks: LockServiceDep,
    auditor: AuditorDep,
) -> Response:
    """The staff page's download link: the PDF as an attachment named after the form."""
    try:
        principal = get_principal(request)
    except Unauthenticated:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    await _take_pdf_token(request, principal, await get_ratelimiter(request))
    pdf = await PdfService(state, locks).deliver(principal, response_id, auditor)
    return _pdf_response(pdf)
