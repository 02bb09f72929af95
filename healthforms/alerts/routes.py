"""Alerts API (docs/alerts.md): a staff member's alerts and unread count, subscribing
to a form's new responses, and the dead letters admins can send again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select

from healthforms.alerts import service
from healthforms.audit.events import DELIVERY_REDELIVERED
from healthforms.audit.recorder import AuditorDep
from healthforms.clock import rfc3339
from healthforms.errors import NotFound, ValidationFailed
from healthforms.outbox.models import Delivery
from healthforms.outbox.worker import redeliver
from healthforms.security.context import AdminPrincipal, CurrentPrincipal
from healthforms.state import DbSessionDep, StateDep

router = APIRouter(tags=["alerts"])

NO_STORE = {"Cache-Control": "no-store"}
DELIVERY_STATUSES = ("pending", "sending", "sent", "dead", "skipped")
MAX_IDS = 200


@router.get("/api/alerts")
async def list_alerts(principal: CurrentPrincipal, session: DbSessionDep) -> JSONResponse:
    alerts = await service.list_alerts(session, principal.user_id)
    unread = await service.unread_count(session, principal.user_id)
    return JSONResponse(
        {"unread": unread, "alerts": [a.as_json() for a in alerts]}, headers=NO_STORE
    )


@router.post("/api/alerts/read")
async def read_alerts(
    principal: CurrentPrincipal,
    session: DbSessionDep,
    body: Any = Body(None),  # noqa: B008
) -> JSONResponse:
    """`{"ids": [...]}` marks those read, `{"all": true}` every one."""
    ids: list[str] | None
    if isinstance(body, dict) and body.get("all") is True and set(body) == {"all"}:
        ids = None
    elif (
        isinstance(body, dict)
        and set(body) == {"ids"}
        and isinstance(body["ids"], list)
        and 0 < len(body["ids"]) <= MAX_IDS
        and all(isinstance(i, str) and 0 < len(i) <= 40 for i in body["ids"])
    ):
        ids = body["ids"]
    else:
        raise ValidationFailed({"ids": f'give "ids" (1-{MAX_IDS} alert ids) or "all": true'})
    await service.mark_read(session, principal.user_id, ids)
    await session.commit()
    unread = await service.unread_count(session, principal.user_id)
    return JSONResponse({"unread": unread}, headers=NO_STORE)


@router.get("/api/forms/{form_id}/alerts")
async def subscription(
    form_id: str, principal: CurrentPrincipal, session: DbSessionDep, state: StateDep
) -> JSONResponse:
    await service.organization_form(session, principal.organization_id, form_id)
    subscribed = await service.is_subscribed(session, principal.user_id, form_id)
    return JSONResponse(
        {"subscribed": subscribed, "email": state.settings.mail_enabled}, headers=NO_STORE
    )


@router.put("/api/forms/{form_id}/alerts")
async def subscribe(
    form_id: str, principal: CurrentPrincipal, session: DbSessionDep, state: StateDep
) -> JSONResponse:
    await service.organization_form(session, principal.organization_id, form_id)
    await service.subscribe(session, principal.organization_id, principal.user_id, form_id)
    await session.commit()
    return JSONResponse({"subscribed": True, "email": state.settings.mail_enabled})


@router.delete("/api/forms/{form_id}/alerts")
async def unsubscribe(
    form_id: str, principal: CurrentPrincipal, session: DbSessionDep, state: StateDep
) -> JSONResponse:
    await service.organization_form(session, principal.organization_id, form_id)
    await service.unsubscribe(session, principal.user_id, form_id)
    await session.commit()
    return JSONResponse({"subscribed": False, "email": state.settings.mail_enabled})


def _delivery_json(row: Delivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "messageId": row.message_id,
        "channel": row.channel,
        "template": row.template,
        "recipientUserId": row.recipient_user_id,
        "status": row.status,
        "attempts": row.attempts,
        "lastError": row.last_error,
        "createdAt": rfc3339(row.created_at),
        "nextAttemptAt": rfc3339(row.next_attempt_at),
        "sentAt": rfc3339(row.sent_at) if row.sent_at else None,
    }


@router.get("/api/admin/deliveries")
async def list_deliveries(
    principal: AdminPrincipal,
    session: DbSessionDep,
    status: str = Query(default="dead", max_length=16),
) -> JSONResponse:
    """The organisation's deliveries of one status (dead letters by default), newest
    first, at most 200."""
    if status not in DELIVERY_STATUSES:
        raise ValidationFailed({"status": f"status must be one of {', '.join(DELIVERY_STATUSES)}"})
    rows = await session.execute(
        select(Delivery)
        .where(Delivery.organization_id == principal.organization_id, Delivery.status == status)
        .order_by(Delivery.created_at.desc())
        .limit(200)
    )
    return JSONResponse(
        {"deliveries": [_delivery_json(row) for row in rows.scalars()]}, headers=NO_STORE
    )


@router.post("/api/admin/deliveries/{delivery_id}/redeliver", status_code=202)
async def redeliver_dead(
    delivery_id: str, principal: AdminPrincipal, state: StateDep, auditor: AuditorDep
) -> JSONResponse:
    if len(delivery_id) > 160 or not await redeliver(
        state.db, delivery_id, principal.organization_id
    ):
        raise NotFound()
    state.outbox.nudge()
    await auditor.record(
        DELIVERY_REDELIVERED, resource_type="delivery", resource_id=delivery_id[:64]
    )
    return JSONResponse({"id": delivery_id, "status": "pending"}, status_code=202)
