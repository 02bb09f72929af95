"""Public forms (API.md "Public forms"): no session; the nonce protects the POST.

Rate limiting of /api/public/* is applied by path in the rate-limit layer
(http/ratelimits.py); a submission's `public` token is taken together with its nonce
claim (see the service), through the request's RequestState.public_token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import JSONResponse

from healthforms.audit.recorder import PatientAuditorDep
from healthforms.clock import rfc3339
from healthforms.languages import negotiate
from healthforms.security.context import RequestStateDep
from healthforms.state import DbSessionDep, StateDep
from healthforms.submissions.drafts.service import DraftSent, forget_pointer
from healthforms.submissions.service import (
    SubmissionService,
    confirmation_json,
    current_published,
    published_form,
)

router = APIRouter(prefix="/api/public/forms", tags=["public"])

# Each GET hands out a fresh single-use nonce: no cache may keep or share it.
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/{public_id}")
async def get_public_form(public_id: str, state: StateDep, session: DbSessionDep) -> JSONResponse:
    form = await published_form(state, session, public_id)
    issued = SubmissionService(state).issue_nonce(form)
    body = {
        "form": form.public_json(),
        "nonce": issued.token,
        "nonceExpiresAt": rfc3339(issued.expires_at),
    }
    return JSONResponse(body, headers=NO_STORE)


@router.post("/{public_id}/responses")
async def submit_response(
    public_id: str,
    current: RequestStateDep,
    state: StateDep,
    session: DbSessionDep,
    auditor: PatientAuditorDep,
    body: Any = Body(None),  # noqa: B008
    accept_language: str | None = Header(None, include_in_schema=False),  # noqa: B008
) -> JSONResponse:
    form = await current_published(state, session, public_id)
    # A saved draft being sent (`draft`: its token) is deleted in the same transaction.
    draft = body.get("draft") if isinstance(body, dict) else None
    link = DraftSent(draft, form.form_id) if draft is not None else None
    # The response row and its `response.submitted` event commit in one transaction.
    result = await SubmissionService(state).submit(
        session,
        form,
        body,
        current.context,
        auditor,
        current.public_token,
        language=negotiate(accept_language),
        link=link,
    )
    if draft is not None:
        await forget_pointer(state, draft)
    return JSONResponse(
        confirmation_json(result),
        status_code=201 if result.created else 200,
        headers=NO_STORE,
    )


@router.post("/{public_id}/files")
async def upload_file(
    public_id: str, request: Request, state: StateDep, session: DbSessionDep
) -> JSONResponse:
    """One file for a file field of the page (docs/uploads.md): multipart `nonce`,
    `field`, `file`; the answer names the returned id."""
    form = await current_published(state, session, public_id)
    stored = await SubmissionService(state).upload(
        session, form, request.headers.get("content-type"), request.stream()
    )
    return JSONResponse(stored.as_json(), status_code=201, headers=NO_STORE)
