"""The signed-in user's own account: password change and TOTP enrolment."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from healthforms.audit import events
from healthforms.audit.recorder import AuditorDep
from healthforms.errors import Conflict, HealthformsError, ServiceUnavailable
from healthforms.identity import service, totp
from healthforms.identity.login import LoginService
from healthforms.identity.passwords import hash_password_async, verify_password
from healthforms.identity.routes.cookies import session_answer
from healthforms.identity.schemas import ChangePasswordBody, TotpConfirmBody
from healthforms.redis.errors import RedisUnavailable
from healthforms.security.context import CurrentPrincipal, RequestContextDep
from healthforms.state import DbSessionDep, StateDep

router = APIRouter()


class TotpInvalid(HealthformsError):
    status_code, code, message = 400, "totp_invalid", "The code is not valid. Try again."


class TotpAlreadyEnabled(Conflict):
    code, message = "totp_already_enabled", "Two-factor sign-in is already enabled."


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
    user = await service.current_user(db, principal)
    login = LoginService(state, db, auditor)
    if not await verify_password(user.password_hash, body.current_password):
        raise await login.reauthentication_failed(user)
    user.password_hash = await hash_password_async(body.new_password)
    await service.revoke_all_sessions_in_db(db, user)
    state.standings.forget(user.id)
    try:
        await state.sessions.end_all(user.id)
    except RedisUnavailable:
        raise ServiceUnavailable() from None
    issued = await login.start_session(
        user, auth_method=principal.auth_method, mfa=principal.mfa, context=context
    )
    await auditor.record(events.AUTH_PASSWORD_CHANGED, resource_type="user", resource_id=user.id)
    await auditor.record(events.SESSION_REVOKED, resource_type="user", resource_id=user.id)
    return session_answer(state.settings, user, issued)


@router.post("/api/auth/totp/enrol")
async def totp_enrol(
    principal: CurrentPrincipal, state: StateDep, db: DbSessionDep
) -> dict[str, Any]:
    user = await service.current_user(db, principal)
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
    user = await service.current_user(db, principal)
    if user.totp_enabled:
        raise TotpAlreadyEnabled()
    secret = totp.open_secret(state.keys, user.id, user.totp_secret_encrypted)
    if secret is None or totp.matching_counter(secret, body.code) is None:
        raise TotpInvalid()
    user.totp_enabled = True
    await db.commit()
    await auditor.record(events.AUTH_TOTP_ENABLED, resource_type="user", resource_id=user.id)
    return {"totpEnabled": True}
