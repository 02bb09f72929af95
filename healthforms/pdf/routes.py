"""A response's PDF (API.md "Responses"): generate-pdf and the staff page's download link."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from healthforms.audit.recorder import AuditorDep
from healthforms.errors import Unauthenticated
from healthforms.http.ratelimits import PdfRateLimit, take_policy_token
from healthforms.pdf.service import DeliveredPdf, PdfService
from healthforms.security.context import CurrentPrincipal, get_principal
from healthforms.state import StateDep

router = APIRouter(tags=["responses"])

# PHI: never kept by a browser or proxy cache.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


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


@router.post("/api/responses/{response_id}/generate-pdf")
async def generate_pdf(
    response_id: str,
    principal: CurrentPrincipal,
    _: PdfRateLimit,
    state: StateDep,
    auditor: AuditorDep,
) -> Response:
    pdf = await PdfService(state).deliver(principal, response_id, auditor)
    return _pdf_response(pdf)


@router.get("/responses/{response_id}/pdf", include_in_schema=False)
async def download_pdf(
    response_id: str,
    request: Request,
    state: StateDep,
    auditor: AuditorDep,
) -> Response:
    """The staff page's download link: the PDF as an attachment named after the form."""
    try:
        principal = get_principal(request)
    except Unauthenticated:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    # It may generate too, so it spends a `pdf` token like generate-pdf (taken here,
    # after the signed-out redirect).
    await take_policy_token("pdf", request, principal.user_id, state)
    pdf = await PdfService(state).deliver(principal, response_id, auditor)
    return _pdf_response(pdf)
