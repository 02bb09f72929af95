"""Sign-in and sessions: session-login, logout, who am I, CSRF tokens, the session list.

`/api/auth/me`, `/api/auth/csrf-token` and `/api/csrf/diagnostics` are hot routes too
(http/hot_routes.py): the session layer answers them with the same handler, and the
FastAPI route here stays the contract for every case it does not take.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit import events
from healthforms.audit.recorder import AuditorDep
from healthforms.clock import ms_to_datetime, now_ms, rfc3339
from healthforms.errors import NotFound, ServiceUnavailable, Unauthenticated
from healthforms.http.hot_routes import HotRequest, from_request, hot_route
from healthforms.identity import service
from healthforms.identity.login import LoginService
from healthforms.identity.routes.cookies import clear_session_cookie, session_answer
from healthforms.identity.schemas import LoginBody, user_json
from healthforms.redis.errors import RedisUnavailable
from healthforms.security.context import (
    CurrentPrincipal,
    RequestContextDep,
    RequestState,
    RequestStateDep,
)
from healthforms.security.csrf import check_token
from healthforms.security.sessions import SessionInfo
from healthforms.state import AppState, DbSessionDep, StateDep

log = structlog.get_logger("healthforms.identity")

router = APIRouter()

_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")


@router.post("/api/auth/session-login")
async def session_login(
    body: LoginBody,
    state: StateDep,
    db: DbSessionDep,
    auditor: AuditorDep,
    context: RequestContextDep,
    request: RequestStateDep,
) -> JSONResponse:
    login = LoginService(state, db, auditor)
    signed_in = await login.sign_in(body)
    user = signed_in.user
    issued = await login.start_session(
        user, auth_method=signed_in.auth_method, mfa=signed_in.mfa, context=context
    )
    await auditor.record(
        events.AUTH_LOGIN,
        resource_type="session",
        resource_id=issued.info.id,
        actor_id=user.id,
        organization_id=user.organization_id,
    )
    await give_back_auth_token(state, request)
    return session_answer(state.settings, user, issued)


async def give_back_auth_token(state: AppState, request: RequestState) -> None:
    """A successful sign-in returns the `auth` token it took: a clinic whose staff share
    one public address is not locked out by its own sign-ins, while failed attempts keep
    counting 5/min + 2 per address. The bucket is the one the rate-limit layer charged
    for this request (its decision names the identifier), never one built here."""
    for decision in request.rate_decisions:
        if decision.policy == "auth" and decision.allowed:
            await state.limiter.give_back(decision)


async def end_session(state: AppState, db: AsyncSession, user_id: str, session_hash: str) -> bool:
    """End one session in Redis and record the end in the database, so it stays ended
    while Redis is down and after an outage that swallowed the Redis side; return
    whether Redis still had it live (False as well when Redis is down)."""
    ended = False
    try:
        ended = await state.sessions.end(user_id, session_hash)
    except RedisUnavailable:
        log.warning("session_end_degraded", session_id=session_hash)
    await service.revoke_session_in_db(
        db, user_id, session_hash, lifetime_s=state.settings.session_max_age
    )
    state.standings.forget(user_id)
    return ended


@router.post("/api/auth/logout", status_code=204)
async def logout(
    principal: CurrentPrincipal, state: StateDep, db: DbSessionDep, auditor: AuditorDep
) -> Response:
    await end_session(state, db, principal.user_id, principal.session_id)
    await auditor.record(
        events.AUTH_LOGOUT, resource_type="session", resource_id=principal.session_id
    )
    response = Response(status_code=204)
    clear_session_cookie(response, state.settings)
    return response


@router.post("/api/auth/logout-all", status_code=204)
async def logout_all(
    principal: CurrentPrincipal, state: StateDep, db: DbSessionDep, auditor: AuditorDep
) -> Response:
    user = await service.get_user(db, principal.user_id)
    if user is not None:
        await service.revoke_all_sessions_in_db(db, user)
    state.standings.forget(principal.user_id)
    try:
        await state.sessions.end_all(principal.user_id)
    except RedisUnavailable:
        log.warning("logout_all_degraded", user_id=principal.user_id)
    await auditor.record(events.AUTH_LOGOUT, resource_type="user", resource_id=principal.user_id)
    response = Response(status_code=204)
    clear_session_cookie(response, state.settings)
    return response


def _session_json(info: SessionInfo, at_ms: int, max_age_s: int) -> dict[str, Any]:
    body = info.to_json()
    # `expires_in_ms` was counted on Redis's clock a moment before `at_ms`: never past
    # the absolute lifetime, which is known exactly (a busy CI once showed 1 s more
    # than sign-in had said).
    absolute = ms_to_datetime(info.created_ms + max_age_s * 1000)
    expires = min(info.expires_at(at_ms), absolute)
    body["expiresAt"] = rfc3339(expires)
    return body


@hot_route("GET", "/api/auth/me")
async def me_hot(hot: HotRequest) -> dict[str, Any]:
    at_ms = now_ms()  # next to the session check, before the database is asked
    async with hot.state.db.sessions() as db:
        user = await service.current_user(db, hot.principal)
    max_age = hot.state.settings.session_max_age
    return {"user": user_json(user), "session": _session_json(hot.session, at_ms, max_age)}


@router.get("/api/auth/me")
async def me(request: Request, principal: CurrentPrincipal, state: StateDep) -> dict[str, Any]:
    return await me_hot(from_request(request.scope, state, principal))


@hot_route("GET", "/api/auth/csrf-token")
async def csrf_token_hot(hot: HotRequest) -> dict[str, str]:
    tokens = hot.state.csrf
    principal = hot.principal
    if principal.degraded:
        return {"csrfToken": tokens.issue_offline(principal.session_id)}
    try:
        token = await tokens.issue(principal.user_id, principal.session_id)
    except RedisUnavailable:
        return {"csrfToken": tokens.issue_offline(principal.session_id)}
    if token is None:
        raise Unauthenticated()
    return {"csrfToken": token}


@router.get("/api/auth/csrf-token")
async def csrf_token(
    request: Request, principal: CurrentPrincipal, state: StateDep
) -> dict[str, str]:
    return await csrf_token_hot(from_request(request.scope, state, principal))


@hot_route("GET", "/api/csrf/diagnostics")
async def csrf_diagnostics_hot(hot: HotRequest) -> dict[str, Any]:
    state, principal = hot.state, hot.principal
    sent = hot.header(b"x-csrf-token")
    checked = check_token(state.keys.hmac_key("csrf"), principal.session_id, sent)
    ttl_ms = 0
    if checked is not None:
        if principal.degraded:
            ttl_ms = max(0, checked.expires_s * 1000 - now_ms())
        else:
            try:
                ttl_ms = await state.csrf.remaining_ttl_ms(
                    principal.user_id, principal.session_id, checked.token_id
                )
            except RedisUnavailable:
                ttl_ms = max(0, checked.expires_s * 1000 - now_ms())
    valid = ttl_ms > 0
    return {
        "tokenPresent": bool(sent),
        "tokenValid": valid,
        "ttlSeconds": (ttl_ms + 999) // 1000 if valid else 0,
    }


@router.get("/api/csrf/diagnostics")
async def csrf_diagnostics(
    request: Request, principal: CurrentPrincipal, state: StateDep
) -> dict[str, Any]:
    return await csrf_diagnostics_hot(from_request(request.scope, state, principal))


@router.get("/api/auth/sessions")
async def list_sessions(principal: CurrentPrincipal, state: StateDep) -> dict[str, Any]:
    try:
        sessions = await state.sessions.list(principal.user_id)
    except RedisUnavailable:
        raise ServiceUnavailable() from None
    return {"sessions": [s.to_json(current_hash=principal.session_id) for s in sessions]}


@router.delete("/api/auth/sessions/{session_id}", status_code=204)
async def revoke_session(
    session_id: str,
    principal: CurrentPrincipal,
    state: StateDep,
    db: DbSessionDep,
    auditor: AuditorDep,
) -> Response:
    # Sessions are addressed under the caller's own user id: another user's (or another
    # organisation's) session id is simply not found.
    if not _SESSION_ID_RE.match(session_id):
        raise NotFound()
    try:
        ended = await state.sessions.end(principal.user_id, session_id)
    except RedisUnavailable:
        raise ServiceUnavailable() from None
    if ended:
        await service.revoke_session_in_db(
            db, principal.user_id, session_id, lifetime_s=state.settings.session_max_age
        )
        state.standings.forget(principal.user_id)
    if not ended:
        raise NotFound()
    await auditor.record(events.SESSION_REVOKED, resource_type="session", resource_id=session_id)
    response = Response(status_code=204)
    if session_id == principal.session_id:
        clear_session_cookie(response, state.settings)
    return response
