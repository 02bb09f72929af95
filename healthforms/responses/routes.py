"""Responses API (API.md "Responses"): list, read (audited), delete. PDFs: pdf/routes.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from healthforms.audit.events import RESPONSE_DELETED, RESPONSE_VIEWED, Outcome
from healthforms.audit.recorder import AuditorDep
from healthforms.responses.service import (
    RESOURCE_TYPE,
    ResponseUnreadable,
    delete_response,
    get_response,
    list_form_responses,
    open_response,
    response_json,
)
from healthforms.security.context import AdminPrincipal, CurrentPrincipal
from healthforms.state import DbSessionDep, StateDep

router = APIRouter(tags=["responses"])

# PHI: never kept by a browser or proxy cache.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _phi_json(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=NO_STORE)


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
    # The deletion and its audit event commit together, or neither does.
    event = auditor.event(RESPONSE_DELETED, resource_type=RESOURCE_TYPE, resource_id=response_id)
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    return Response(status_code=204)
