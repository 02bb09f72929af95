"""Sign-in, sessions, CSRF tokens, TOTP enrolment and the admin user API (API.md)."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from healthforms.audit import events
from healthforms.audit.events import Outcome
from healthforms.audit.recorder import Auditor, AuditorDep
from healthforms.errors import (
    Conflict,
    HealthformsError,
    InvalidCredentials,
    NotFound,
    ServiceUnavailable,
    Unauthenticated,
    ValidationFailed,
)
from healthforms.identity import service, totp
from healthforms.identity.models import Role, User
from healthforms.identity.oidc import OidcRejected, oidc_verifier, verified_email
from healthforms.identity.passwords import hash_password_async, needs_rehash, verify_password
from healthforms.identity.schemas import (
    ChangePasswordBody,
    CreateUserBody,
    LoginBody,
    TotpConfirmBody,
    UpdateUserBody,
    rfc3339,
    user_json,
)
from healthforms.identity.service import OrgScopeDep
from healthforms.redis.client import RedisUnavailable
from healthforms.redis.scripts import LuaScript
from healthforms.security.csrf import CsrfTokens, check_token
from healthforms.security.hot_routes import HotRequest, from_request, hot_route
from healthforms.security.principal import AdminPrincipal, CurrentPrincipal, Principal
from healthforms.security.sessions import (
    SessionInfo,
    SessionStore,
    b64url,
    now_ms,
    session_store,
)
from healthforms.state import AppState, DbSessionDep, RequestContextDep, StateDep

log = structlog.get_logger("healthforms.identity")

router = APIRouter(tags=["identity"])

# Per-account failure limit: guesses spread over many IPs still hit one account's lock.
LOGIN_FAILURE_LIMIT = 10
LOGIN_FAILURE_WINDOW_S = 15 * 60
LOGIN_LOCKOUT_S = 15 * 60
LOGIN_FAILURE_KEY = "loginfail:{{{account}}}"
AUTH_ACCOUNT_LOCKED = "auth.account_locked"
USER_UPDATED = "user.updated"
TOTP_ENABLED = "auth.totp_enabled"
PASSWORD_CHANGED = "auth.password_changed"  # noqa: S105 - an audit action name

FAILURE_SCRIPT = LuaScript.beside(__file__, "login_failure.lua")
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")


class TotpInvalid(HealthformsError):
    status_code, code, message = 400, "totp_invalid", "The code is not valid. Try again."


class TotpAlreadyEnabled(Conflict):
    code, message = "totp_already_enabled", "Two-factor sign-in is already enabled."


def _tokens(state: AppState) -> CsrfTokens:
    tokens = state.services.get("csrf")
    if tokens is None:
        tokens = CsrfTokens(state.redis, state.keys.hmac_key("csrf"))
        state.services["csrf"] = tokens
    assert isinstance(tokens, CsrfTokens)
    return tokens


def _store(state: AppState) -> SessionStore:
    return session_store(state)


def _account_tag(state: AppState, email: str) -> str:
    # Keyed hash: the key names an account without putting an email (PHI-adjacent) in Redis.
    digest = hmac.new(state.keys.hmac_key("login-failures"), email.encode(), hashlib.sha256)
    return b64url(digest.digest()[:16])


def _set_session_cookie(response: Response, state: AppState, value: str) -> None:
    settings = state.settings
    response.set_cookie(
        settings.session_cookie_name,
        value,
        max_age=settings.session_max_age,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


def _clear_session_cookie(response: Response, state: AppState) -> None:
    settings = state.settings
    response.delete_cookie(
        settings.session_cookie_name,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


async def _is_locked(state: AppState, tag: str) -> bool:
    key = state.redis.key(LOGIN_FAILURE_KEY.format(account=tag))
    count = await state.redis.call(lambda r: r.get(key), idempotent=True)
    return count is not None and int(count) >= LOGIN_FAILURE_LIMIT


async def _count_failure(state: AppState, auditor: Auditor, tag: str, user: User | None) -> None:
    key = state.redis.key(LOGIN_FAILURE_KEY.format(account=tag))
    try:
        reply = await state.redis.pipelined(
            lambda r: FAILURE_SCRIPT(
                r,
                keys=[key],
                args=[LOGIN_FAILURE_LIMIT, LOGIN_FAILURE_WINDOW_S * 1000, LOGIN_LOCKOUT_S * 1000],
            )
        )
    except RedisUnavailable:
        return
    if int(reply[1]) == 1:
        await auditor.record(
            AUTH_ACCOUNT_LOCKED,
            outcome=Outcome.DENIED,
            resource_type="user" if user else None,
            resource_id=user.id if user else None,
            actor_id=user.id if user else None,
            organization_id=user.organization_id if user else None,
        )


async def _login_failed(auditor: Auditor, user: User | None, reason: str) -> InvalidCredentials:
    log.info("login_failed", reason=reason, user_id=user.id if user else None)
    await auditor.record(
        events.AUTH_LOGIN_FAILED,
        outcome=Outcome.FAILURE,
        resource_type="user" if user else None,
        resource_id=user.id if user else None,
        actor_id=user.id if user else None,
        organization_id=user.organization_id if user else None,
    )
    return InvalidCredentials()


async def _password_login(
    body: LoginBody, state: AppState, db: Any, auditor: Auditor
) -> tuple[User, bool]:
    if not body.email or body.password is None:
        missing = "Field required"
        fields = {}
        if not body.email:
            fields["email"] = missing
        if body.password is None:
            fields["password"] = missing
        raise ValidationFailed(fields)
    email = body.email.strip().lower()
    tag = _account_tag(state, email)
    try:
        locked = await _is_locked(state, tag)
    except RedisUnavailable:
        raise ServiceUnavailable() from None
    user = await service.find_user_by_email(db, email)
    # Always one full argon2 verify (a dummy hash for unknown accounts): same timing.
    password_ok = await verify_password(user.password_hash if user else None, body.password)
    reason = ""
    if locked:
        reason = "account locked"
    elif user is None:
        reason = "unknown account"
    elif not password_ok:
        reason = "wrong password"
    elif user.disabled:
        reason = "disabled"
    mfa = False
    if not reason and user is not None and user.totp_enabled:
        try:
            code_ok = await totp.verify_login_code(state.redis, state.keys, user, body.totp)
        except RedisUnavailable:
            raise ServiceUnavailable() from None
        if not code_ok:
            reason = "wrong totp"
        mfa = True
    if reason:
        if not locked:
            await _count_failure(state, auditor, tag, user)
        raise await _login_failed(auditor, user, reason)
    assert user is not None and user.password_hash is not None
    try:
        await state.redis.call(
            lambda r: r.delete(state.redis.key(LOGIN_FAILURE_KEY.format(account=tag))),
            idempotent=True,
        )
    except RedisUnavailable:
        pass
    if needs_rehash(user.password_hash):
        # The hasher's parameters were raised since this hash was made: upgrade it now,
        # while we hold the plaintext.
        user.password_hash = await hash_password_async(body.password)
        await db.commit()
    return user, mfa


async def _oidc_login(body: LoginBody, state: AppState, db: Any, auditor: Auditor) -> User:
    assert body.id_token is not None
    verifier = oidc_verifier(state)
    if verifier is None:
        raise await _login_failed(auditor, None, "oidc not configured")
    try:
        claims = await verifier.verify(body.id_token)
    except OidcRejected as exc:
        raise await _login_failed(auditor, None, f"oidc: {exc}") from None
    email = verified_email(claims)
    user = await service.find_user_by_email(db, email) if email else None
    if user is None:
        raise await _login_failed(auditor, None, "oidc: no account for a verified email")
    if user.disabled:
        raise await _login_failed(auditor, user, "disabled")
    return user


def _session_json(info: SessionInfo, at_ms: int) -> dict[str, Any]:
    body = info.to_json()
    body["expiresAt"] = rfc3339(info.expires_at(at_ms))
    return body


@router.post("/api/auth/session-login")
async def session_login(
    body: LoginBody,
    state: StateDep,
    db: DbSessionDep,
    auditor: AuditorDep,
    context: RequestContextDep,
) -> JSONResponse:
    if body.id_token:
        user = await _oidc_login(body, state, db, auditor)
        method, mfa = "oidc", False
    else:
        user, mfa = await _password_login(body, state, db, auditor)
        method = "password"
    try:
        cookie_value, cookie, info = await _store(state).create(
            user_id=user.id,
            organization_id=user.organization_id,
            role=Role(user.role),
            auth_method=method,
            mfa=mfa,
            ip=context.ip,
            user_agent=context.user_agent,
        )
        token = await _tokens(state).issue(user.id, cookie.session_hash)
    except RedisUnavailable:
        # A session Redis never saw would be refused once Redis is back: refuse now.
        raise ServiceUnavailable() from None
    if token is None:  # pragma: no cover - the session was created one call earlier
        raise ServiceUnavailable()
    await auditor.record(
        events.AUTH_LOGIN,
        resource_type="session",
        resource_id=info.id,
        actor_id=user.id,
        organization_id=user.organization_id,
    )
    response = JSONResponse(
        {
            "user": user_json(user),
            "csrfToken": token,
            "expiresAt": rfc3339(info.expires_at(info.created_ms)),
        }
    )
    _set_session_cookie(response, state, cookie_value)
    return response


@router.post("/api/auth/logout", status_code=204)
async def logout(principal: CurrentPrincipal, state: StateDep, auditor: AuditorDep) -> Response:
    try:
        await _store(state).end(principal.user_id, principal.session_id)
    except RedisUnavailable:
        log.warning("logout_degraded", session_id=principal.session_id)
    await auditor.record(
        events.AUTH_LOGOUT, resource_type="session", resource_id=principal.session_id
    )
    response = Response(status_code=204)
    _clear_session_cookie(response, state)
    return response


@router.post("/api/auth/logout-all", status_code=204)
async def logout_all(
    principal: CurrentPrincipal, state: StateDep, db: DbSessionDep, auditor: AuditorDep
) -> Response:
    user = await service.get_user(db, principal.user_id)
    if user is not None:
        await service.revoke_all_sessions_in_db(db, user)
    try:
        await _store(state).end_all(principal.user_id)
    except RedisUnavailable:
        log.warning("logout_all_degraded", user_id=principal.user_id)
    await auditor.record(events.AUTH_LOGOUT, resource_type="user", resource_id=principal.user_id)
    response = Response(status_code=204)
    _clear_session_cookie(response, state)
    return response


async def _current_user(db: Any, principal: Principal) -> User:
    user = await service.get_user(db, principal.user_id)
    if user is None or user.disabled or user.organization_id != principal.organization_id:
        raise Unauthenticated()
    return user


@hot_route("GET", "/api/auth/me")
async def me_hot(hot: HotRequest) -> dict[str, Any]:
    async with hot.state.db.sessions() as db:
        user = await _current_user(db, hot.principal)
        return {"user": user_json(user), "session": _session_json(hot.session, now_ms())}


@router.get("/api/auth/me")
async def me(request: Request, principal: CurrentPrincipal, state: StateDep) -> dict[str, Any]:
    return await me_hot(from_request(request.scope, state, principal))


@hot_route("GET", "/api/auth/csrf-token")
async def csrf_token_hot(hot: HotRequest) -> dict[str, str]:
    tokens = _tokens(hot.state)
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


@router.get("/api/auth/sessions")
async def list_sessions(principal: CurrentPrincipal, state: StateDep) -> dict[str, Any]:
    try:
        sessions = await _store(state).list(principal.user_id)
    except RedisUnavailable:
        raise ServiceUnavailable() from None
    return {"sessions": [s.to_json(current_hash=principal.session_id) for s in sessions]}


@router.delete("/api/auth/sessions/{session_id}", status_code=204)
async def revoke_session(
    session_id: str, principal: CurrentPrincipal, state: StateDep, auditor: AuditorDep
) -> Response:
    # Sessions are addressed under the caller's own user id: another user's (or another
    # organisation's) session id is simply not found.
    if not _SESSION_ID_RE.match(session_id):
        raise NotFound()
    try:
        ended = await _store(state).end(principal.user_id, session_id)
    except RedisUnavailable:
        raise ServiceUnavailable() from None
    if not ended:
        raise NotFound()
    await auditor.record(events.SESSION_REVOKED, resource_type="session", resource_id=session_id)
    response = Response(status_code=204)
    if session_id == principal.session_id:
        _clear_session_cookie(response, state)
    return response


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
                ttl_ms = await _tokens(state).remaining_ttl_ms(
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


@router.post("/api/auth/password")
async def change_password(
    body: ChangePasswordBody,
    principal: CurrentPrincipal,
    state: StateDep,
    db: DbSessionDep,
    auditor: AuditorDep,
    context: RequestContextDep,
) -> JSONResponse:
    """Change one's own password: every session ends; this browser gets a fresh one."""
    user = await _current_user(db, principal)
    if not await verify_password(user.password_hash, body.current_password):
        raise await _login_failed(auditor, user, "wrong current password")
    user.password_hash = await hash_password_async(body.new_password)
    await service.revoke_all_sessions_in_db(db, user)
    try:
        await _store(state).end_all(user.id)
        cookie_value, cookie, info = await _store(state).create(
            user_id=user.id,
            organization_id=user.organization_id,
            role=Role(user.role),
            auth_method=principal.auth_method,
            mfa=principal.mfa,
            ip=context.ip,
            user_agent=context.user_agent,
        )
        token = await _tokens(state).issue(user.id, cookie.session_hash)
    except RedisUnavailable:
        raise ServiceUnavailable() from None
    await auditor.record(PASSWORD_CHANGED, resource_type="user", resource_id=user.id)
    await auditor.record(events.SESSION_REVOKED, resource_type="user", resource_id=user.id)
    response = JSONResponse(
        {
            "user": user_json(user),
            "csrfToken": token,
            "expiresAt": rfc3339(info.expires_at(info.created_ms)),
        }
    )
    _set_session_cookie(response, state, cookie_value)
    return response


# TOTP enrolment (the signed-in user) -------------------------------------------------


@router.post("/api/auth/totp/enrol")
async def totp_enrol(
    principal: CurrentPrincipal, state: StateDep, db: DbSessionDep
) -> dict[str, Any]:
    user = await _current_user(db, principal)
    if user.totp_enabled:
        raise TotpAlreadyEnabled()
    secret = totp.new_secret()
    user.totp_secret_encrypted = totp.seal_secret(state.keys, user.id, secret)
    await db.commit()
    return {"secret": secret, "otpauthUri": totp.provisioning_uri(secret, user.email)}


@router.post("/api/auth/totp/confirm")
async def totp_confirm(
    body: TotpConfirmBody,
    principal: CurrentPrincipal,
    state: StateDep,
    db: DbSessionDep,
    auditor: AuditorDep,
) -> dict[str, Any]:
    user = await _current_user(db, principal)
    if user.totp_enabled:
        raise TotpAlreadyEnabled()
    secret = totp.open_secret(state.keys, user.id, user.totp_secret_encrypted)
    if secret is None or totp.matching_counter(secret, body.code) is None:
        raise TotpInvalid()
    user.totp_enabled = True
    await db.commit()
    await auditor.record(TOTP_ENABLED, resource_type="user", resource_id=user.id)
    return {"totpEnabled": True}


# Users (admin) ----------------------------------------------------------------------


@router.get("/api/users")
async def list_users(_: AdminPrincipal, scope: OrgScopeDep) -> dict[str, Any]:
    return {"users": [user_json(u) for u in await service.list_users(scope)]}


@router.post("/api/users", status_code=201)
async def create_user(
    body: CreateUserBody, _: AdminPrincipal, scope: OrgScopeDep, auditor: AuditorDep
) -> dict[str, Any]:
    user = await service.create_user_in_scope(
        scope, email=body.email, name=body.name, password=body.password, role=body.role
    )
    await auditor.record(events.USER_CREATED, resource_type="user", resource_id=user.id)
    return user_json(user)


@router.patch("/api/users/{user_id}")
async def update_user(
    user_id: str,
    body: UpdateUserBody,
    _: AdminPrincipal,
    scope: OrgScopeDep,
    state: StateDep,
    auditor: AuditorDep,
) -> dict[str, Any]:
    if len(user_id) > 64:
        raise NotFound()
    change = await service.update_user(
        scope,
        user_id,
        role=body.role,
        disabled=body.disabled,
        name=body.name,
        password=body.password,
    )
    if change.end_sessions:
        try:
            ended = await _store(state).end_all(change.user.id)
        except RedisUnavailable:
            # sessions_valid_after already refuses them while Redis is down; the Redis
            # records linger until their idle timeout once it is back.
            log.error("revoke_sessions_degraded", user_id=change.user.id)
        else:
            if ended:
                await auditor.record(
                    events.SESSION_REVOKED, resource_type="user", resource_id=change.user.id
                )
    if change.disabled_now:
        await auditor.record(events.USER_DISABLED, resource_type="user", resource_id=user_id)
    else:
        await auditor.record(USER_UPDATED, resource_type="user", resource_id=user_id)
    return user_json(change.user)
