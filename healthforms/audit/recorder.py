"""The one interface features record audit events through."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request

from healthforms.audit.events import AuditEvent, Outcome
from healthforms.audit.store import append_event
from healthforms.db.engine import Database
from healthforms.security.context import RequestContext, request_state
from healthforms.state import get_state

log = structlog.get_logger("healthforms.audit")


class Auditor:
    """Records events with the request's context (ip, user agent, request id) and actor."""

    def __init__(
        self,
        db: Database,
        context: RequestContext,
        *,
        actor_id: str | None = None,
        organization_id: str | None = None,
    ) -> None:
        self.db = db
        self.context = context
        self.actor_id = actor_id
        self.organization_id = organization_id

    async def record(
        self,
        action: str,
        *,
        outcome: Outcome = Outcome.SUCCESS,
        resource_type: str | None = None,
        resource_id: str | None = None,
        actor_id: str | None = None,
        organization_id: str | None = None,
    ) -> None:
        event = AuditEvent(
            action=action,
            outcome=outcome,
            organization_id=organization_id or self.organization_id,
            actor_id=actor_id or self.actor_id,
            resource_type=resource_type,
            resource_id=resource_id,
            ip=self.context.ip,
            user_agent=self.context.user_agent,
            request_id=self.context.request_id,
        )
        await append_event(self.db, event)
        log.info(
            "audit",
            action=action,
            outcome=event.outcome.value,
            resource_type=resource_type,
            resource_id=resource_id,
            actor_id=event.actor_id,
            request_id=event.request_id,
        )


def get_auditor(request: Request) -> Auditor:
    """An Auditor with this request's context and, once signed in, its actor."""
    current = request_state(request.scope)
    principal = current.principal
    return Auditor(
        get_state(request).db,
        current.context,
        actor_id=principal.user_id if principal else None,
        organization_id=principal.organization_id if principal else None,
    )


async def _auditor_dependency(request: Request) -> Auditor:
    return get_auditor(request)  # async: no worker-thread hop per request


AuditorDep = Annotated[Auditor, Depends(_auditor_dependency)]
