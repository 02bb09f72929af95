"""The admin user API (API.md "Users"): one organisation's staff, scoped by OrgScope."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter

from healthforms.audit import events
from healthforms.audit.recorder import AuditorDep
from healthforms.errors import NotFound
from healthforms.identity import service
from healthforms.identity.schemas import CreateUserBody, UpdateUserBody, user_json
from healthforms.identity.service import OrgScopeDep
from healthforms.redis.errors import RedisUnavailable
from healthforms.security.context import AdminPrincipal
from healthforms.state import StateDep

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
