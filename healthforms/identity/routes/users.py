"""The admin user API (API.md "Users"): one organisation's staff, scoped by OrgScope.

Recovery by an admin (another user of their organisation, never themselves: their own
password and two-step change on /account with the current password): a new password,
typed by the admin or generated and shown once, or two-step sign-in removed. Either
ends every session of that user (database first, then Redis), clears the email's
failed-sign-in lock, and is audited with the admin as actor.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit import events
from healthforms.audit.recorder import Auditor, AuditorDep
from healthforms.errors import NotFound
from healthforms.identity import service
from healthforms.identity.login import LoginService
from healthforms.identity.models import User
from healthforms.identity.passwords import generated_password
from healthforms.identity.schemas import (
    CreateUserBody,
    ResetPasswordBody,
    UpdateUserBody,
    user_json,
)
from healthforms.identity.service import OrgScopeDep
from healthforms.redis.errors import RedisUnavailable
from healthforms.security.context import AdminPrincipal
from healthforms.state import AppState, StateDep

log = structlog.get_logger("healthforms.identity")

router = APIRouter()


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
        state.standings.forget(change.user.id)
        try:
            ended = await state.sessions.end_all(change.user.id)
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
        await auditor.record(events.USER_UPDATED, resource_type="user", resource_id=user_id)
    return user_json(change.user)


async def _after_reset(
    state: AppState, db: AsyncSession, auditor: Auditor, action: str, user: User
) -> None:
    """Sessions end in Redis too (the database voided them in the reset's commit), the
    email's lock goes (the person can sign in at once), and the admin's act is audited."""
    ended = await service.end_sessions_now(state, user.id)
    await LoginService(state, db, auditor).clear_failures(user.email)
    await auditor.record(action, resource_type="user", resource_id=user.id)
    if ended:
        await auditor.record(events.SESSION_REVOKED, resource_type="user", resource_id=user.id)


@router.post("/api/users/{user_id}/reset-password")
async def reset_password(
    user_id: str,
    _: AdminPrincipal,
    scope: OrgScopeDep,
    state: StateDep,
    auditor: AuditorDep,
    body: ResetPasswordBody | None = None,
) -> dict[str, Any]:
    """Set another user's password: {"user", "password"} with a generated one (shown
    this once), {"user"} when the admin typed it."""
    if len(user_id) > 64:
        raise NotFound()
    typed = body.password if body is not None else None
    password = typed or generated_password()
    user = await service.reset_password_in_scope(scope, user_id, password)
    await _after_reset(state, scope.db, auditor, events.USER_PASSWORD_RESET, user)
    answer: dict[str, Any] = {"user": user_json(user)}
    if typed is None:
        answer["password"] = password
    return answer


@router.post("/api/users/{user_id}/reset-totp")
async def reset_totp(
    user_id: str, _: AdminPrincipal, scope: OrgScopeDep, state: StateDep, auditor: AuditorDep
) -> dict[str, Any]:
    """Remove another user's two-step sign-in (a lost phone): TOTP and recovery codes."""
    if len(user_id) > 64:
        raise NotFound()
    user = await service.reset_totp_in_scope(scope, user_id)
    await _after_reset(state, scope.db, auditor, events.USER_TOTP_RESET, user)
    return {"user": user_json(user), "totpEnabled": False}
