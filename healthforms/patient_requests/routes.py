"""Staff API of requests to a patient (docs/requests.md): create, reissue, mark handed
over, cancel, list. Parse, call the service, render; the link and its QR code are in
the answer of create and reissue only (the service keeps the token's hash alone)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse

from healthforms.audit.events import REQUESTS_LISTED
from healthforms.audit.recorder import AuditorDep
from healthforms.clock import utcnow
from healthforms.config import Settings
from healthforms.errors import ValidationFailed
from healthforms.patient_requests import service
from healthforms.patient_requests.service import IssuedRequest, Moved
from healthforms.security.context import CurrentPrincipal, EditorPrincipal
from healthforms.state import DbSessionDep, StateDep

router = APIRouter(tags=["requests"])

# Names, emails, phones, and once a link: never kept by a browser or proxy cache.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def public_base(request: Request, settings: Settings) -> str:
    """The address patients reach the service at: HEALTHFORMS_PUBLIC_URL when set (behind
    a proxy the request's own host may be an internal one), else this request's."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def link_of(request: Request, settings: Settings, token: str) -> str:
    return f"{public_base(request, settings)}/r/{token}"


def _issued(request: Request, settings: Settings, issued: IssuedRequest) -> JSONResponse:
    link = link_of(request, settings, issued.token)
    body = {
        "request": service.request_json(issued.row, issued.contact, utcnow()),
        "link": link,
        "qrSvg": service.qr_svg(link),
    }
    return JSONResponse(body, status_code=201, headers=NO_STORE)


@router.post("/api/forms/{form_id}/requests")
async def create_request(
    form_id: str,
    request: Request,
    principal: EditorPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
    body: Any = Body(None),  # noqa: B008
) -> JSONResponse:
    issued = await service.create_request(
        state, session, principal.organization_id, principal.user_id, form_id, body, auditor
    )
    return _issued(request, state.settings, issued)


@router.get("/api/forms/{form_id}/requests")
async def list_requests(
    form_id: str,
    principal: CurrentPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
    state_filter: str | None = Query(default=None, alias="state", max_length=16),
) -> JSONResponse:
    if state_filter is not None and state_filter not in service.STATES:
        raise ValidationFailed({"state": f"state must be one of {', '.join(service.STATES)}"})
    now = utcnow()
    rows = await service.list_requests(
        session, principal.organization_id, form_id, state_filter, now
    )
    contacts = {row.id: service.open_contact(state.keys, row) for row in rows}
    if rows:
        # The names and contacts of patients were shown: one event naming the requests.
        await auditor.record(
            REQUESTS_LISTED,
            resource_type="form",
            resource_id=form_id,
            detail={"count": len(rows), "requestIds": sorted(contacts)},
        )
    return JSONResponse(
        {"requests": [service.request_json(row, contacts[row.id], now) for row in rows]},
        headers=NO_STORE,
    )


@router.post("/api/requests/{request_id}/reissue")
async def reissue_request(
    request_id: str,
    request: Request,
    principal: EditorPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
    body: Any = Body(None),  # noqa: B008
) -> JSONResponse:
    issued = await service.reissue_request(
        state, session, principal.organization_id, request_id, body, auditor
    )
    return _issued(request, state.settings, issued)


async def _moved(
    moved: Moved, session: DbSessionDep, state: StateDep, auditor: AuditorDep
) -> JSONResponse:
    await session.commit()
    if moved.event is not None:
        auditor.committed(moved.event)
    contact = service.open_contact(state.keys, moved.row)
    return JSONResponse(
        {"request": service.request_json(moved.row, contact, utcnow())}, headers=NO_STORE
    )


@router.post("/api/requests/{request_id}/sent")
async def mark_sent(
    request_id: str,
    principal: EditorPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
) -> JSONResponse:
    """Staff handed the link over (printed, showed the QR code, read it out)."""
    moved = await service.mark_sent(
        session, request_id, organization_id=principal.organization_id, auditor=auditor
    )
    return await _moved(moved, session, state, auditor)


@router.post("/api/requests/{request_id}/cancel")
async def cancel_request(
    request_id: str,
    principal: EditorPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
) -> JSONResponse:
    moved = await service.cancel_request(
        session, request_id, organization_id=principal.organization_id, auditor=auditor
    )
    return await _moved(moved, session, state, auditor)
