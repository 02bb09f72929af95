"""Staff reads of the files attached to a response (docs/uploads.md).

Every byte served is a PHI read, audited like the answers. A file is served so that no
browser runs or renders it as anything but what it is: nosniff, a sandboxing CSP, never
cached, and PDFs as attachments (a PDF viewer in the page's origin is script surface).
"""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from healthforms.audit.events import RESPONSE_FILE_VIEWED
from healthforms.audit.recorder import AuditorDep
from healthforms.errors import NotFound
from healthforms.responses.service import RESOURCE_TYPE, get_response
from healthforms.security.context import CurrentPrincipal
from healthforms.state import DbSessionDep, StateDep
from healthforms.uploads.service import open_file, response_files

router = APIRouter(tags=["responses"])

# Ids are URL-safe tokens: anything else (a NUL byte, which PostgreSQL refuses in text,
# a 3000-character path segment) is a 404 before it reaches the database.
_ID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check_ids(*ids: str) -> None:
    if not all(_ID_SHAPE.fullmatch(value) for value in ids):
        raise NotFound()


NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The edge layer adds nosniff and the pages' CSP to every answer; this second policy
# narrows it further for a file (a browser enforces both).
FILE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@router.get("/api/responses/{response_id}/files")
async def list_files(
    response_id: str, principal: CurrentPrincipal, session: DbSessionDep
) -> JSONResponse:
    """What is attached (type, size, pages): no content, so not a PHI read."""
    _check_ids(response_id)
    row = await get_response(session, principal.organization_id, response_id)
    files = await response_files(session, row.id)
    return JSONResponse({"files": [f.as_json() for f in files]}, headers=NO_STORE)


@router.get("/api/responses/{response_id}/files/{file_id}")
async def read_file(
    response_id: str,
    file_id: str,
    principal: CurrentPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
) -> Response:
    _check_ids(response_id, file_id)
    row = await get_response(session, principal.organization_id, response_id)
    stored, data = await open_file(session, state.keys, row.id, file_id)
    await auditor.record(
        RESPONSE_FILE_VIEWED,
        resource_type=RESOURCE_TYPE,
        resource_id=row.id,
        detail={"fileId": stored.id},
    )
    disposition = "inline" if stored.is_image else "attachment"
    extension = {"application/pdf": "pdf", "image/png": "png"}.get(stored.media_type, "jpg")
    # A neutral name: the patient's own file name is never stored.
    name = f"{stored.field_id}-{stored.id[-6:]}.{extension}"
    headers = {**FILE_HEADERS, "Content-Disposition": f'{disposition}; filename="{name}"'}
    return Response(data, media_type=stored.media_type, headers=headers)
