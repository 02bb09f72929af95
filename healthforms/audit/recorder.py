"""The one interface features record audit events through."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import AuditEvent, Outcome
from healthforms.audit.store import append_event, append_in
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.security.context import RequestContext, request_state
from healthforms.state import get_state

log = structlog.get_logger("healthforms.audit")


class Auditor:
    """Records events with the request's context (ip, user agent, request ids) and actor.

    `patient=True` for events a patient's request causes (public forms): their address
    and user agent identify them, so the row keeps keyed pseudonyms of both (the
    encrypted signature evidence keeps the originals).
    """

    def __init__(
        self,
        db: Database,
        keys: KeyRing,
        context: RequestContext,
        *,
        actor_id: str | None = None,
        organization_id: str | None = None,
        patient: bool = False,
    ) -> None:
        self.db = db
        self.keys = keys
        self.context = context
        self.actor_id = actor_id
        self.organization_id = organization_id
        self.patient = patient

    def event(
        self,
        action: str,
        *,
        outcome: Outcome = Outcome.SUCCESS,
        resource_type: str | None = None,
        resource_id: str | None = None,
        actor_id: str | None = None,
        organization_id: str | None = None,
    ) -> AuditEvent:
        ip, user_agent = self.context.ip, self.context.user_agent
        if self.patient:
            ip = self.keys.pseudonym(ip) if ip else None
            user_agent = self.keys.pseudonym(user_agent) if user_agent else None
        return AuditEvent(
            action=action,
            outcome=outcome,
            organization_id=organization_id or self.organization_id,
            actor_id=actor_id or self.actor_id,
            resource_type=resource_type,
            resource_id=resource_id,
            ip=ip,
            user_agent=user_agent,
            request_id=self.context.request_id,
            client_request_id=self.context.client_request_id,
        )

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
        """Record an event in its own transaction."""
        event = self.event(
            action,
            outcome=outcome,
            resource_type=resource_type,
            resource_id=resource_id,
            actor_id=actor_id,
            organization_id=organization_id,
        )
        await append_event(self.db, self.keys, event)
        self._log(event)

    async def record_in(self, session: AsyncSession, event: AuditEvent) -> None:
        """Record `event` (from `event()`) inside the caller's transaction: it commits
        with the write it describes, or neither does. Then `committed(event)`."""
        await append_in(session, self.keys, event)

    def committed(self, event: AuditEvent) -> None:
        """Log an event `record_in` wrote, once its transaction committed."""
        self._log(event)

    def _log(self, event: AuditEvent) -> None:
        log.info(
            "audit",
            action=event.action,
            outcome=event.outcome.value,
            resource_type=event.resource_type,
            resource_id=event.resource_id,
            actor_id=event.actor_id,
            request_id=event.request_id,
        )


def get_auditor(request: Request, *, patient: bool = False) -> Auditor:
    """An Auditor with this request's context and, once signed in, its actor."""
    current = request_state(request.scope)
    principal = current.principal
    state = get_state(request)
    return Auditor(
        state.db,
        state.keys,
        current.context,
        actor_id=principal.user_id if principal else None,
        organization_id=principal.organization_id if principal else None,
        patient=patient,
    )


async def _auditor_dependency(request: Request) -> Auditor:
    return get_auditor(request)  # async: no worker-thread hop per request


async def _patient_auditor_dependency(request: Request) -> Auditor:
    return get_auditor(request, patient=True)


AuditorDep = Annotated[Auditor, Depends(_auditor_dependency)]
PatientAuditorDep = Annotated[Auditor, Depends(_patient_auditor_dependency)]
