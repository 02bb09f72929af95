"""GET /api/audit: an admin reads their own organisation's audit trail, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from healthforms.audit.store import event_json, iter_events
from healthforms.clock import parse_rfc3339
from healthforms.security.context import AdminPrincipal
from healthforms.state import StateDep

router = APIRouter(tags=["audit"])

MAX_LIMIT = 500
DEFAULT_LIMIT = 100


@router.get("/api/audit")
async def list_audit_events(
    principal: AdminPrincipal,
    state: StateDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor_id: Annotated[str | None, Query(alias="actorId", max_length=64)] = None,
    since: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> dict[str, list[dict[str, object]]]:
    since_at = parse_rfc3339(since, "since") if since else None
    events = [
        event_json(row)
        async for row in iter_events(
            state.db,
            # Scoped to the caller's organisation: another clinic's events do not exist here.
            organization_id=principal.organization_id,
            action=action or None,
            actor_id=actor_id or None,
            since=since_at,
            limit=limit,
        )
    ]
    return {"events": events}
