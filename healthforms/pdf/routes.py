"""A response's PDF (API.md "Responses"): POST /api/responses/{id}/generate-pdf.

The staff pages' routes (`GET /responses/{id}/pdf`, the stored PDF only, and the
button's `POST /responses/{id}/pdf`) are in web/routes.py and answer with
`pdf_response` too.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import Response

from healthforms.audit.recorder import AuditorDep
from healthforms.http.ratelimits import PdfRateLimit
from healthforms.pdf.service import DeliveredPdf, PdfService
from healthforms.security.context import CurrentPrincipal
from healthforms.state import StateDep

router = APIRouter(tags=["responses"])

# PHI: never kept by a browser or proxy cache.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def content_disposition(filename: str, ascii_name: str | None = None) -> str:
    """`attachment` with an ASCII name and the exact UTF-8 name (RFC 6266, RFC 5987).

    Without `ascii_name` the ASCII one is `filename` with '_' for what is not ASCII and
    the UTF-8 one always follows; with it, the UTF-8 one follows only when it differs."""
    if ascii_name is None:
        fallback = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    elif ascii_name == filename:
        return f'attachment; filename="{ascii_name}"'
    else:
        fallback = ascii_name
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def pdf_response(pdf: DeliveredPdf) -> Response:
    return Response(
        content=pdf.content,
        media_type="application/pdf",
        headers={
            **NO_STORE,
            "Content-Disposition": content_disposition(pdf.filename.exact, pdf.filename.ascii),
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
    return pdf_response(pdf)
