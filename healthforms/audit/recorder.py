"""The one interface features record audit events through."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.batch import group_appender
from healthforms.audit.events import AuditEvent, Outcome
from healthforms.audit.store import append_in
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.db.writer import has_uncommitted_writes
from healthforms.security.context import RequestContext, request_state
from healthforms.state import DbSessionDep, get_state

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
        session: AsyncSession | None = None,
    ) -> None:
        self.db = db
        # The request's own session: record() hands its connection back to the pool
        # before taking one for the event, so a request never holds two at once (50
        # concurrent audited reads would otherwise take the whole pool and each wait
        # for a second connection that never comes).
        self.session = session
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
        detail: dict[str, object] | None = None,
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
            detail=detail,
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
        detail: dict[str, object] | None = None,
    ) -> None:
        """Record an event in its own transaction.

        Call it once the work it describes has committed (or for reads and refusals,
        which write nothing): the request's session is committed first, which commits
        nothing then and returns its connection. Work that must commit with its event
        uses `record_in`."""
        event = self.event(
            action,
            outcome=outcome,
            resource_type=resource_type,
            resource_id=resource_id,
            actor_id=actor_id,
            organization_id=organization_id,
            detail=detail,
        )
        if self.session is not None:
            await self._hand_back(self.session, action)
        # Committed together with the events of concurrent requests (batch.py).
        await group_appender(self.db, self.keys).append(event)
        self._log(event)

    @staticmethod
    async def _hand_back(session: AsyncSession, action: str) -> None:
        """End the request session's transaction so its connection goes back to the
        pool before the event takes one."""
        transaction = session.sync_session.get_transaction()
        if transaction is None:
            return  # holds no connection
        if not transaction.is_active:
            # An earlier statement of this request failed (the database went away):
            # nothing in it can commit any more.
            await session.rollback()
        elif await has_uncommitted_writes(session):
            # A caller's bug, not the client's: the event is still recorded (on a
            # second connection, as before) and the writes stay the caller's to end.
            log.warning("audit_record_beside_uncommitted_writes", action=action)
        else:
            await session.commit()

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


def get_auditor(
    request: Request, *, patient: bool = False, session: AsyncSession | None = None
) -> Auditor:
    """An Auditor with this request's context and, once signed in, its actor; with the
    request's database session when the route has one."""
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
        session=session,
    )


# async: no worker-thread hop per request. DbSessionDep is the route's own session
# (FastAPI gives every dependency of one request the same one).
async def _auditor_dependency(request: Request, session: DbSessionDep) -> Auditor:
    return get_auditor(request, session=session)


async def _patient_auditor_dependency(request: Request, session: DbSessionDep) -> Auditor:
    return get_auditor(request, patient=True, session=session)


AuditorDep = Annotated[Auditor, Depends(_auditor_dependency)]
PatientAuditorDep = Annotated[Auditor, Depends(_patient_auditor_dependency)]
