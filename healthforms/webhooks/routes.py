"""Webhooks API (docs/webhooks.md), admins only: endpoints, secrets (shown once),
test events, the delivery log and dead letters. Every change is audited, without
the secret."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from healthforms.audit.recorder import AuditorDep
from healthforms.clock import rfc3339
from healthforms.errors import NotFound, ValidationFailed
from healthforms.outbox.models import Delivery
from healthforms.security.context import AdminPrincipal
from healthforms.state import DbSessionDep, StateDep
from healthforms.webhooks import service
from healthforms.webhooks.addresses import Policy
from healthforms.webhooks.models import WebhookAttempt, WebhookEndpoint
from healthforms.webhooks.signing import message_id_for

router = APIRouter(tags=["webhooks"])

NO_STORE = {"Cache-Control": "no-store"}
STATUSES = ("pending", "sending", "sent", "dead", "skipped")
LIST_LIMIT = 100

# Audit actions (detail: field names and flags, never a URL's secret nor the secret).
WEBHOOK_CREATED = "webhook.created"
WEBHOOK_UPDATED = "webhook.updated"
WEBHOOK_DELETED = "webhook.deleted"
WEBHOOK_SECRET_ROTATED = "webhook.secret_rotated"  # noqa: S105 - an action name
WEBHOOK_FHIR_BODY = "webhook.fhir_body"  # detail {"enabled": bool}: PHI in bodies on/off
WEBHOOK_TEST_SENT = "webhook.test_sent"
WEBHOOK_REDELIVERED = "webhook.redelivered"


def policy_of(request: Request, state: Any) -> Policy:
    """The dispatcher's (it knows this service's own addresses), else from settings."""
    dispatcher = getattr(request.app.state, "webhooks", None)
    if dispatcher is not None:
        return dispatcher.policy  # type: ignore[no-any-return]
    settings = state.settings
    return Policy(settings.is_production, frozenset(settings.webhook_allow_hosts))


def wake_dispatcher(request: Request) -> None:
    dispatcher = getattr(request.app.state, "webhooks", None)
    if dispatcher is not None:
        dispatcher.signal.nudge()


def delivery_json(row: Delivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "webhookId": message_id_for(row.id),
        "event": row.template,
        "status": row.status,
        "attempts": row.attempts,
        "lastError": row.last_error,
        "createdAt": rfc3339(row.created_at),
        "nextAttemptAt": rfc3339(row.next_attempt_at),
        "sentAt": rfc3339(row.sent_at) if row.sent_at else None,
    }


def attempt_json(row: WebhookAttempt) -> dict[str, Any]:
    return {
        "deliveryId": row.delivery_id,
        "webhookId": message_id_for(row.delivery_id),
        "event": row.event_type,
        "attempt": row.attempt,
        "statusCode": row.status_code,
        "latencyMs": row.latency_ms,
        "error": row.error,
        "at": rfc3339(row.at),
    }


async def endpoint_deliveries(
    session: Any, row: WebhookEndpoint, status: str | None, limit: int = LIST_LIMIT
) -> list[Delivery]:
    query = select(Delivery).where(
        Delivery.organization_id == row.organization_id,
        Delivery.channel == service.CHANNEL,
        service.deliveries_of(row.id),
    )
    if status is not None:
        query = query.where(Delivery.status == status)
    rows = await session.execute(query.order_by(Delivery.created_at.desc()).limit(limit))
    return list(rows.scalars())


async def endpoint_attempts(
    session: Any, row: WebhookEndpoint, limit: int = LIST_LIMIT
) -> list[WebhookAttempt]:
    rows = await session.execute(
        select(WebhookAttempt)
        .where(WebhookAttempt.endpoint_id == row.id)
        .order_by(WebhookAttempt.at.desc(), WebhookAttempt.attempt.desc())
        .limit(limit)
    )
    return list(rows.scalars())


@router.get("/api/webhooks")
async def list_webhooks(principal: AdminPrincipal, session: DbSessionDep) -> JSONResponse:
    rows = await service.list_endpoints(session, principal.organization_id)
    return JSONResponse(
        {"endpoints": [service.endpoint_json(r) for r in rows], "events": list(service.EVENTS)},
        headers=NO_STORE,
    )


@router.post("/api/webhooks", status_code=201)
async def create_webhook(
    request: Request,
    principal: AdminPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
    body: Any = Body(None),  # noqa: B008
) -> JSONResponse:
    row, secret = await service.create_endpoint(
        session,
        state.keys,
        policy_of(request, state),
        principal.organization_id,
        principal.user_id,
        body,
    )
    answer = {**service.endpoint_json(row), "secret": secret}
    event = auditor.event(
        WEBHOOK_CREATED,
        resource_type="webhook",
        resource_id=row.id,
        detail={"events": list(row.events), "fhirBody": row.fhir_body},
    )
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    return JSONResponse(answer, status_code=201, headers=NO_STORE)


@router.get("/api/webhooks/{endpoint_id}")
async def get_webhook(
    endpoint_id: str, principal: AdminPrincipal, session: DbSessionDep
) -> JSONResponse:
    row = await service.get_endpoint(session, principal.organization_id, endpoint_id)
    return JSONResponse(service.endpoint_json(row), headers=NO_STORE)


@router.patch("/api/webhooks/{endpoint_id}")
async def update_webhook(
    endpoint_id: str,
    request: Request,
    principal: AdminPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
    body: Any = Body(None),  # noqa: B008
) -> JSONResponse:
    row = await service.get_endpoint(session, principal.organization_id, endpoint_id)
    changed = await service.update_endpoint(
        session, policy_of(request, state), row, principal.user_id, body
    )
    answer = service.endpoint_json(row)
    if changed:
        events = [
            auditor.event(
                WEBHOOK_UPDATED,
                resource_type="webhook",
                resource_id=row.id,
                detail={"changed": changed, "enabled": row.enabled},
            )
        ]
        if "fhirBody" in changed or ("url" in changed and row.fhir_body):
            events.append(
                auditor.event(
                    WEBHOOK_FHIR_BODY,
                    resource_type="webhook",
                    resource_id=row.id,
                    detail={"enabled": row.fhir_body, "confirmed": row.fhir_body},
                )
            )
        for event in events:
            await auditor.record_in(session, event)
        await session.commit()
        for event in events:
            auditor.committed(event)
    return JSONResponse(answer, headers=NO_STORE)


@router.delete("/api/webhooks/{endpoint_id}", status_code=204)
async def delete_webhook(
    endpoint_id: str, principal: AdminPrincipal, session: DbSessionDep, auditor: AuditorDep
) -> Response:
    row = await service.get_endpoint(session, principal.organization_id, endpoint_id)
    await session.delete(row)  # its waiting deliveries end as skipped when their turn comes
    event = auditor.event(WEBHOOK_DELETED, resource_type="webhook", resource_id=endpoint_id)
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    return Response(status_code=204)


@router.post("/api/webhooks/{endpoint_id}/rotate-secret")
async def rotate_webhook_secret(
    endpoint_id: str,
    principal: AdminPrincipal,
    session: DbSessionDep,
    state: StateDep,
    auditor: AuditorDep,
) -> JSONResponse:
    row = await service.get_endpoint(session, principal.organization_id, endpoint_id)
    secret = service.rotate_secret(state.keys, row)
    event = auditor.event(
        WEBHOOK_SECRET_ROTATED,
        resource_type="webhook",
        resource_id=row.id,
        detail={"secretVersion": row.secret_version},
    )
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    return JSONResponse({**service.endpoint_json(row), "secret": secret}, headers=NO_STORE)


@router.post("/api/webhooks/{endpoint_id}/test", status_code=202)
async def send_test_event(
    endpoint_id: str,
    request: Request,
    principal: AdminPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
) -> JSONResponse:
    row = await service.get_endpoint(session, principal.organization_id, endpoint_id)
    delivery_id = await service.send_test(session, row)
    event = auditor.event(WEBHOOK_TEST_SENT, resource_type="webhook", resource_id=row.id)
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    wake_dispatcher(request)
    return JSONResponse(
        {"deliveryId": delivery_id, "webhookId": message_id_for(delivery_id), "status": "pending"},
        status_code=202,
    )


@router.get("/api/webhooks/{endpoint_id}/deliveries")
async def list_webhook_deliveries(
    endpoint_id: str,
    principal: AdminPrincipal,
    session: DbSessionDep,
    status: str | None = Query(default=None, max_length=16),
) -> JSONResponse:
    """The endpoint's deliveries (newest first, at most 100), of one status if asked
    (`?status=dead`: the dead letters), and its call log (attempts, newest first)."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed({"status": f"status must be one of {', '.join(STATUSES)}"})
    row = await service.get_endpoint(session, principal.organization_id, endpoint_id)
    deliveries = await endpoint_deliveries(session, row, status)
    attempts = await endpoint_attempts(session, row)
    return JSONResponse(
        {
            "deliveries": [delivery_json(d) for d in deliveries],
            "attempts": [attempt_json(a) for a in attempts],
        },
        headers=NO_STORE,
    )


@router.post("/api/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=202)
async def redeliver_webhook(
    endpoint_id: str,
    delivery_id: str,
    request: Request,
    principal: AdminPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
) -> JSONResponse:
    row = await service.get_endpoint(session, principal.organization_id, endpoint_id)
    if not await service.redeliver(session, row, delivery_id):
        raise NotFound()
    event = auditor.event(
        WEBHOOK_REDELIVERED, resource_type="delivery", resource_id=delivery_id[:64]
    )
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    wake_dispatcher(request)
    return JSONResponse({"id": delivery_id, "status": "pending"}, status_code=202)
