"""Responses API (API.md "Responses"): list, read (audited), delete; the review (status,
notes: docs/responses.md). PDFs: pdf/routes.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response

from healthforms.audit.events import (
    RESPONSE_DELETED,
    RESPONSE_NOTES_VIEWED,
    RESPONSE_VIEWED,
    Outcome,
)
from healthforms.audit.recorder import AuditorDep
from healthforms.errors import ValidationFailed
from healthforms.responses import review
from healthforms.responses.filters import ResponseFilterDep
from healthforms.responses.patients import parse_search, read_identities
from healthforms.responses.service import (
    RESOURCE_TYPE,
    ResponseUnreadable,
    delete_response,
    find_by_confirmation,
    find_by_patient,
    get_response,
    list_form_responses,
    listed_of,
    normalise_confirmation,
    open_response,
    patients_of,
    response_json,
)
from healthforms.security.context import AdminPrincipal, CurrentPrincipal, EditorPrincipal
from healthforms.state import DbSessionDep, StateDep

router = APIRouter(tags=["responses"])

# PHI: never kept by a browser or proxy cache.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _phi_json(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=NO_STORE)


@router.get("/api/forms/{form_id}/responses")
async def list_responses(
    form_id: str,
    principal: CurrentPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
    filters: ResponseFilterDep,
    limit: int | None = Query(default=None, ge=1, le=500),
    after: str | None = Query(default=None, max_length=200),
) -> JSONResponse:
    page = await list_form_responses(
        session, principal.organization_id, form_id, filters, limit=limit, after=after
    )
    names = await review.people(session, page.rows)
    listed = await listed_of(
        session, state.keys, auditor, page.rows, filters.search, form_id=form_id, with_scores=True
    )
    body: dict[str, Any] = {
        "responses": [
            response_json(row, names=names, patients=listed.patients, scores=listed.scores)
            for row in page.rows
        ]
    }
    if limit is not None:
        body["next"] = page.next_cursor
    return _phi_json(body)


@router.get("/api/responses")
async def find_responses(
    principal: CurrentPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
    confirmation: str | None = Query(default=None, max_length=64),
    name: str | None = Query(default=None, max_length=400),
    birth_date: str | None = Query(default=None, alias="birthDate", max_length=40),
) -> JSONResponse:
    """The responses a patient's confirmation code, or their name and/or date of birth,
    name, across the clinic's forms (docs/responses.md)."""
    search = parse_search(name, birth_date)
    if confirmation is not None:
        code = normalise_confirmation(confirmation)
        if code is None:
            raise ValidationFailed(
                {"confirmation": "Enter the confirmation code (letters and digits)."}
            )
        rows = await find_by_confirmation(session, principal.organization_id, code)
    elif not search.is_empty():
        rows = await find_by_patient(session, state.keys, principal.organization_id, search)
    else:
        raise ValidationFailed(
            {"confirmation": "Give a confirmation code, a name or a date of birth."}
        )
    names = await review.people(session, rows)
    patients = await patients_of(session, state.keys, auditor, rows, search)
    return _phi_json(
        {"responses": [response_json(row, names=names, patients=patients) for row in rows]}
    )


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
    names = await review.people(session, [row])
    patients = await read_identities(session, state.keys, [row.id])
    # Reads of PHI are audited like writes.
    await auditor.record(RESPONSE_VIEWED, resource_type=RESOURCE_TYPE, resource_id=row.id)
    return _phi_json(response_json(row, content, names, patients))


@router.post("/api/responses/{response_id}/status")
async def set_review_status(
    response_id: str,
    principal: EditorPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
    state: StateDep,
    body: Any = Body(None),  # noqa: B008
) -> JSONResponse:
    target = review.parse_status(body)
    row = await review.set_status(
        session, principal.organization_id, principal.user_id, response_id, target, auditor
    )
    state.outbox.nudge()  # a response.reviewed message, if it was one
    return _phi_json(response_json(row, names=await review.people(session, [row])))


@router.get("/api/responses/{response_id}/notes")
async def read_notes(
    response_id: str,
    principal: CurrentPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
) -> JSONResponse:
    notes = await review.list_notes(session, state.keys, principal.organization_id, response_id)
    # Notes are PHI: their read is audited like the answers'.
    await auditor.record(
        RESPONSE_NOTES_VIEWED, resource_type=RESOURCE_TYPE, resource_id=response_id
    )
    return _phi_json({"notes": [note.as_json() for note in notes]})


@router.post("/api/responses/{response_id}/notes")
async def add_note(
    response_id: str,
    principal: EditorPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
    body: Any = Body(None),  # noqa: B008
) -> JSONResponse:
    text = review.parse_note(body)
    note = await review.add_note(
        session, state.keys, principal.organization_id, principal.user_id, response_id, text,
        auditor,
    )  # fmt: skip
    written = review.Note(
        id=note.id,
        author={"id": principal.user_id, "name": None},
        created_at=note.created_at,
        text=text,
    )
    return JSONResponse(written.as_json(), status_code=201, headers=NO_STORE)


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
