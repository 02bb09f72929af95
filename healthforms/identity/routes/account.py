"""The signed-in user's own account: password change, two-step sign-in (TOTP with its QR
code, recovery codes) and its removal.

Every change of one's own credentials asks for the current password first
(`LoginService.reauthenticate`): a held session (an unlocked screen, a stolen cookie)
cannot change them, and a wrong password counts toward the account's lock like a
failed sign-in. Confirming an enrolment needs a code of the secret that enrolment
(itself behind the password) created.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit import events
from healthforms.audit.recorder import Auditor, AuditorDep
from healthforms.errors import Conflict, HealthformsError, ServiceUnavailable
from healthforms.identity import service, totp
from healthforms.identity.login import LoginService
from healthforms.identity.models import User
from healthforms.identity.passwords import hash_password_async
from healthforms.identity.routes.cookies import session_answer
from healthforms.identity.schemas import ChangePasswordBody, CurrentPasswordBody, TotpConfirmBody
from healthforms.redis.errors import RedisUnavailable
from healthforms.security.context import CurrentPrincipal, RequestContextDep
from healthforms.security.principal import Principal
from healthforms.state import AppState, DbSessionDep, StateDep

router = APIRouter()


class TotpInvalid(HealthformsError):
    status_code, code, message = 400, "totp_invalid", "The code is not valid. Try again."


class TotpAlreadyEnabled(Conflict):
    code, message = "totp_already_enabled", "Two-factor sign-in is already enabled."


class TotpNotEnabled(Conflict):
    code, message = "totp_not_enabled", "Two-factor sign-in is not enabled."


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
    await login.reauthenticate(user, body.current_password)
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


@router.get("/api/auth/totp")
async def totp_status(principal: CurrentPrincipal, db: DbSessionDep) -> dict[str, Any]:
    """Whether two-step sign-in is on, and how many recovery codes are left."""
    user = await service.current_user(db, principal)
    return await _totp_json(db, user.id, enabled=user.totp_enabled)


async def _totp_json(db: AsyncSession, user_id: str, *, enabled: bool) -> dict[str, Any]:
    left = await service.recovery_codes_left(db, user_id) if enabled else 0
    return {"totpEnabled": enabled, "recoveryCodesLeft": left}


@router.post("/api/auth/totp/enrol")
async def totp_enrol(
    body: CurrentPasswordBody,
    principal: CurrentPrincipal,
    state: StateDep,
    db: DbSessionDep,
    auditor: AuditorDep,
) -> dict[str, Any]:
    """A new secret (not yet in force): the key, the otpauth:// link and its QR code."""
    user = await service.current_user(db, principal)
    await LoginService(state, db, auditor).reauthenticate(user, body.current_password)
    if user.totp_enabled:
        raise TotpAlreadyEnabled()
    secret = totp.new_secret()
    user.totp_secret_encrypted = totp.seal_secret(state.keys, user.id, secret)
    await db.commit()
    uri = totp.provisioning_uri(secret, user.email)
    return {"secret": secret, "otpauthUri": uri, "qrCode": totp.qr_code_data_uri(uri)}


@router.post("/api/auth/totp/confirm")
async def totp_confirm(
    body: TotpConfirmBody,
    principal: CurrentPrincipal,
    state: StateDep,
    db: DbSessionDep,
    auditor: AuditorDep,
) -> dict[str, Any]:
    """Turn two-step sign-in on with a code of the enrolled secret; the answer carries the
    ten recovery codes, shown this once (only their hashes are kept)."""
    user = await service.current_user(db, principal)
    if user.totp_enabled:
        raise TotpAlreadyEnabled()
    secret = totp.open_secret(state.keys, user.id, user.totp_secret_encrypted)
    if secret is None or totp.matching_counter(secret, body.code) is None:
        raise TotpInvalid()
    codes = await _new_recovery_codes(db, user.id)
    user.totp_enabled = True
    await db.commit()
    await auditor.record(events.AUTH_TOTP_ENABLED, resource_type="user", resource_id=user.id)
    return {"totpEnabled": True, "recoveryCodes": codes}


async def _new_recovery_codes(db: AsyncSession, user_id: str) -> list[str]:
    """Fresh codes replace any earlier ones (the caller commits)."""
    codes = totp.new_recovery_codes()
    hashes = [totp.recovery_code_hash(user_id, code) for code in codes]
    await service.replace_recovery_codes(db, user_id, [h for h in hashes if h is not None])
    return codes


async def _totp_user_reauthenticated(
    state: AppState,
    db: AsyncSession,
    auditor: Auditor,
    principal: Principal,
    body: CurrentPasswordBody,
) -> User:
    """The signed-in user, once their current password was right, with two-step on."""
    user = await service.current_user(db, principal)
    await LoginService(state, db, auditor).reauthenticate(user, body.current_password)
    if not user.totp_enabled:
        raise TotpNotEnabled()
    return user


@router.post("/api/auth/totp/recovery-codes")
async def totp_recovery_codes(
    body: CurrentPasswordBody,
    principal: CurrentPrincipal,
    state: StateDep,
    db: DbSessionDep,
    auditor: AuditorDep,
) -> dict[str, Any]:
    """Ten new recovery codes (shown once); the earlier ones stop working."""
    user = await _totp_user_reauthenticated(state, db, auditor, principal, body)
    codes = await _new_recovery_codes(db, user.id)
    await db.commit()
    await auditor.record(
        events.AUTH_RECOVERY_CODES_REGENERATED, resource_type="user", resource_id=user.id
    )
    return {"recoveryCodes": codes}


@router.post("/api/auth/totp/disable")
async def totp_disable(
    body: CurrentPasswordBody,
    principal: CurrentPrincipal,
    state: StateDep,
    db: DbSessionDep,
    auditor: AuditorDep,
) -> dict[str, Any]:
    """Turn two-step sign-in off: the secret and the recovery codes are deleted."""
    user = await _totp_user_reauthenticated(state, db, auditor, principal, body)
    service.clear_totp(user)
    await service.delete_recovery_codes(db, user.id)
    await db.commit()
    await auditor.record(events.AUTH_TOTP_DISABLED, resource_type="user", resource_id=user.id)
    return {"totpEnabled": False, "recoveryCodesLeft": 0}
