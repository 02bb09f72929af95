"""The admin pages of webhooks: the endpoints (and creating one, its secret shown
once), and one endpoint's events, secret rotation, test event, call log and dead
letters. Drawn here; every change goes through the API (routes.py) from the page's
script, with the CSRF token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from healthforms.clock import utcnow
from healthforms.state import DbSessionDep, StateDep
from healthforms.web.pages import render
from healthforms.web.routes import AdminPage, PageRoute, _staff_context
from healthforms.webhooks import service
from healthforms.webhooks.routes import (
    attempt_json,
    delivery_json,
    endpoint_attempts,
    endpoint_deliveries,
)

router = APIRouter(include_in_schema=False, tags=["web"], route_class=PageRoute)


@router.get("/admin/webhooks")
async def webhooks_page(
    request: Request, staff: AdminPage, state: StateDep, db: DbSessionDep
) -> Response:
    rows = await service.list_endpoints(db, staff.principal.organization_id)
    now = utcnow()
    return render(
        request,
        "admin_webhooks.html",
        title="Webhooks",
        nav="webhooks",
        endpoints=[service.endpoint_json(r, now) for r in rows],
        events=service.EVENTS,
        **_staff_context(state, staff),
    )


@router.get("/admin/webhooks/{endpoint_id}")
async def webhook_page(
    endpoint_id: str, request: Request, staff: AdminPage, state: StateDep, db: DbSessionDep
) -> Response:
    row = await service.get_endpoint(db, staff.principal.organization_id, endpoint_id)
    endpoint = service.endpoint_json(row)
    return render(
        request,
        "admin_webhook.html",
        title=f"Webhook {row.description or row.url}",
        nav="webhooks",
        endpoint=endpoint,
        events=service.EVENTS,
        dead=[delivery_json(d) for d in await endpoint_deliveries(db, row, "dead")],
        deliveries=[delivery_json(d) for d in await endpoint_deliveries(db, row, None, 50)],
        attempts=[attempt_json(a) for a in await endpoint_attempts(db, row, 50)],
        **_staff_context(state, staff),
    )
