"""A patient's saved drafts (docs/drafts.md): no session; the token or the code is the key.

Under /api/public/, so the `public` rate limit applies to every call (http/ratelimits.py);
typing a code takes a `draft_code` token (per client address) and a `draft_code_form`
token (per form) as well, before anything is looked up. Every answer is no-store (it
carries answers or the draft's secrets) and no-referrer like every answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import JSONResponse

from healthforms.audit.recorder import PatientAuditorDep
from healthforms.clock import rfc3339
from healthforms.errors import RateLimited
from healthforms.http.ratelimits import client_identifier, record_refusal
from healthforms.security.context import RequestStateDep
from healthforms.state import AppState, DbSessionDep, StateDep
from healthforms.submissions.drafts import service
from healthforms.submissions.drafts.service import DraftView, ResumedDraft
from healthforms.submissions.service import current_published, published_form

router = APIRouter(prefix="/api/public", tags=["public"])

PRIVATE = {"Cache-Control": "no-store"}


def resume_url(state: AppState, request: Request, view: DraftView) -> str:
    """The link that opens the draft: the form's page with the token in the fragment,
    which a browser never sends to a server (no token in an access log or a Referer)."""
    base = (state.settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}/f/{view.public_id}#draft={view.token}"


def draft_json(state: AppState, request: Request, view: DraftView) -> dict[str, Any]:
    return {
        "token": view.token,
        "code": service.display_code(view.code),
        "expiresAt": rfc3339(view.expires_at),
        "resumeUrl": resume_url(state, request, view),
    }


def resumed_json(state: AppState, request: Request, resumed: ResumedDraft) -> dict[str, Any]:
    return {
        "draft": draft_json(state, request, resumed.view),
        "form": {"publicId": resumed.form.public_id, "version": resumed.form.version},
        "answers": resumed.answers,
        "dropped": resumed.dropped,
        "files": {
            field_id: [upload.as_json() for upload in uploads]
            for field_id, uploads in resumed.files.items()
        },
    }


@router.post("/forms/{public_id}/drafts")
async def save_draft(
    public_id: str,
    request: Request,
    state: StateDep,
    session: DbSessionDep,
    auditor: PatientAuditorDep,
    body: Any = Body(None),  # noqa: B008
) -> JSONResponse:
    form = await current_published(state, session, public_id)
    saved = await service.save_draft(state, session, form, body, auditor)
    return JSONResponse(
        {"draft": draft_json(state, request, saved.view), "canEmail": state.settings.mail_enabled},
        status_code=201 if saved.created else 200,
        headers=PRIVATE,
    )


@router.post("/forms/{public_id}/drafts/resume")
async def resume_by_code(
    public_id: str,
    request: Request,
    current: RequestStateDep,
    state: StateDep,
    session: DbSessionDep,
    auditor: PatientAuditorDep,
    body: Any = Body(None),  # noqa: B008
) -> JSONResponse:
    form = await published_form(state, session, public_id)
    # Both buckets at once, before any lookup: a guess costs a token whether or not it
    # names a draft, per client address (one guesser) and per form (many addresses).
    verdict = await state.limiter.check(
        [
            ("draft_code", client_identifier(state, current), 1),
            ("draft_code_form", form.form_id, 1),
        ]
    )
    current.note_rate(verdict)
    if not verdict.allowed:
        await record_refusal(state, current, verdict, organization_id=form.organization_id)
        raise RateLimited()
    code = body.get("code") if isinstance(body, dict) else None
    nonce = body.get("nonce") if isinstance(body, dict) else None
    resumed = await service.resume_by_code(state, session, form, code, auditor, nonce)
    return JSONResponse(resumed_json(state, request, resumed), headers=PRIVATE)


@router.get("/drafts/{token}")
async def resume_by_link(
    token: str,
    request: Request,
    state: StateDep,
    session: DbSessionDep,
    auditor: PatientAuditorDep,
    nonce: str | None = None,
) -> JSONResponse:
    # `?nonce=`: the page's own, to bind the draft's files to (a nonce is no secret).
    resumed = await service.resume_by_token(state, session, token, auditor, nonce)
    return JSONResponse(resumed_json(state, request, resumed), headers=PRIVATE)


@router.post("/drafts/{token}/email", status_code=202)
async def email_link(
    token: str,
    state: StateDep,
    session: DbSessionDep,
    auditor: PatientAuditorDep,
    body: Any = Body(None),  # noqa: B008
) -> JSONResponse:
    await service.email_link(state, session, token, body, auditor)
    return JSONResponse({"queued": True}, status_code=202, headers=PRIVATE)


@router.delete("/drafts/{token}", status_code=204)
async def discard_draft(
    token: str, state: StateDep, session: DbSessionDep, auditor: PatientAuditorDep
) -> Response:
    await service.discard_draft(state, session, token, auditor)
    return Response(status_code=204, headers=PRIVATE)
