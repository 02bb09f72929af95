"""The patient's side of a request (docs/requests.md): the form behind a personal link,
and its submission. No session: the link's token and the nonce protect them.

Under /api/public/, so the `public` rate limit applies (http/ratelimits.py; a
submission's token is taken together with its nonce claim, as for public links). Every
answer is no-store (prefilled answers are PHI; the token is in the URL); like every
answer of the service it is no-referrer (http/edge.py), so the token never leaves in a
Referer header.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import JSONResponse

from healthforms.audit.recorder import PatientAuditorDep
from healthforms.clock import rfc3339
from healthforms.languages import negotiate
from healthforms.patient_requests import service
from healthforms.security.context import RequestStateDep
from healthforms.state import DbSessionDep, StateDep
from healthforms.submissions.service import SubmissionService, confirmation_json

router = APIRouter(prefix="/api/public/requests", tags=["public"])

PRIVATE = {"Cache-Control": "no-store"}


@router.get("/{token}")
async def get_request_form(
    token: str, state: StateDep, session: DbSessionDep, auditor: PatientAuditorDep
) -> JSONResponse:
    opened = await service.open_request(state, session, token, auditor)
    issued = SubmissionService(state).issue_nonce(
        opened.form, scope=service.nonce_scope(opened.row.id)
    )
    body = {
        "form": opened.form.public_json(),
        "nonce": issued.token,
        "nonceExpiresAt": rfc3339(issued.expires_at),
        "prefill": opened.prefill,
        "request": {"expiresAt": rfc3339(opened.row.expires_at)},
    }
    return JSONResponse(body, headers=PRIVATE)


@router.post("/{token}/responses")
async def submit_request_response(
    token: str,
    current: RequestStateDep,
    state: StateDep,
    session: DbSessionDep,
    auditor: PatientAuditorDep,
    body: Any = Body(None),  # noqa: B008
    accept_language: str | None = Header(None, include_in_schema=False),  # noqa: B008
) -> JSONResponse:
    # The response, the request's completion and both audit events commit together.
    result = await service.submit_to_request(
        state,
        session,
        token,
        body,
        current.context,
        auditor,
        current.public_token,
        language=negotiate(accept_language),
    )
    return JSONResponse(
        confirmation_json(result),
        status_code=201 if result.created else 200,
        headers=PRIVATE,
    )


@router.post("/{token}/files")
async def upload_request_file(
    token: str, request: Request, state: StateDep, session: DbSessionDep
) -> JSONResponse:
    """One file for a file field of the request's form (docs/uploads.md)."""
    row, form = await service.live_request(state, session, token)
    stored = await SubmissionService(state).upload(
        session,
        form,
        request.headers.get("content-type"),
        request.stream(),
        scope=service.nonce_scope(row.id),
    )
    return JSONResponse(stored.as_json(), status_code=201, headers=PRIVATE)
