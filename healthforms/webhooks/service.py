"""Webhook endpoints of an organisation (create, change, rotate, delete), the events'
payloads, and the fan-out of outbox messages into one delivery per endpoint."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import rfc3339, utcnow
from healthforms.crypto.envelope import Sealed, open_sealed, seal
from healthforms.crypto.keys import KeyRing
from healthforms.db.base import new_id
from healthforms.errors import NotFound, ValidationFailed
from healthforms.outbox.models import Delivery, OutboxMessage
from healthforms.outbox.store import (
    FORM_PUBLISHED,
    REQUEST_COMPLETED,
    RESPONSE_REVIEWED,
    RESPONSE_SUBMITTED,
)
from healthforms.webhooks.addresses import Policy, UnsafeUrl, parse_url
from healthforms.webhooks.models import WebhookEndpoint
from healthforms.webhooks.signing import new_secret

EVENTS = (RESPONSE_SUBMITTED, RESPONSE_REVIEWED, FORM_PUBLISHED, REQUEST_COMPLETED)
TEST_EVENT = "webhook.test"  # the "send test event" button: to one endpoint only
CHANNEL = "webhook"
ROTATION_OVERLAP = timedelta(hours=24)  # the old secret signs too until then
MAX_ENDPOINTS = 20  # per organisation
MAX_DESCRIPTION = 200
# Events whose body may carry the QuestionnaireResponse (an endpoint that opted in).
RESPONSE_EVENTS = (RESPONSE_SUBMITTED, RESPONSE_REVIEWED)

# (session, keys, organization id, response id) -> a FHIR QuestionnaireResponse as
# JSON, or None. Registered at app wiring (app.py); None: bodies carry ids only.
BodySource = Callable[[AsyncSession, KeyRing, str, str], Awaitable[dict[str, Any] | None]]


def delivery_id_for(message_id: str, endpoint_id: str) -> str:
    return f"{message_id}:{CHANNEL}:{endpoint_id}"


def endpoint_of(delivery_id: str) -> str:
    return delivery_id.rsplit(f":{CHANNEL}:", 1)[-1]


def deliveries_of(endpoint_id: str) -> Any:
    """SQL: the webhook deliveries of one endpoint (ids end in `:webhook:<endpoint>`;
    `_` in ids is escaped, LIKE would read it as any character)."""
    escaped = endpoint_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return Delivery.id.like(f"%:{CHANNEL}:{escaped}", escape="\\")


def secret_aad(endpoint_id: str) -> bytes:
    return f"webhook-secret:{endpoint_id}".encode()


def _sealed_secret(keys: KeyRing, endpoint_id: str, secret: str) -> Sealed:
    return seal(keys, secret.encode(), secret_aad(endpoint_id))


def valid_secrets(keys: KeyRing, row: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets that sign now: the current one, then the previous until it expires."""
    aad = secret_aad(row.id)
    found = [
        open_sealed(
            keys, Sealed(row.secret_ciphertext, row.secret_wrapped_key, row.secret_key_id), aad
        ).decode()
    ]
    if (
        row.previous_ciphertext is not None
        and row.previous_wrapped_key is not None
        and row.previous_key_id is not None
        and row.previous_expires_at is not None
        and row.previous_expires_at > now
    ):
        sealed = Sealed(row.previous_ciphertext, row.previous_wrapped_key, row.previous_key_id)
        found.append(open_sealed(keys, sealed, aad).decode())
    return found


def endpoint_json(row: WebhookEndpoint, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    previous = (
        row.previous_expires_at
        if row.previous_expires_at and row.previous_expires_at > now
        else None
    )
    circuit_open = row.circuit_open_until is not None and row.circuit_open_until > now
    return {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "events": list(row.events),
        "enabled": row.enabled,
        "fhirBody": row.fhir_body,
        "secretVersion": row.secret_version,
        "previousSecretExpiresAt": rfc3339(previous) if previous else None,
        "consecutiveFailures": row.consecutive_failures,
        "circuit": "open" if circuit_open else "closed",
        "circuitOpenUntil": rfc3339(row.circuit_open_until)
        if circuit_open and row.circuit_open_until
        else None,
        "createdAt": rfc3339(row.created_at),
        "updatedAt": rfc3339(row.updated_at),
    }


# Input ---------------------------------------------------------------------------------

FIELDS = {"url", "description", "events", "enabled", "fhirBody", "confirmPhi"}


def _parse_events(value: object) -> list[str]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(e, str) and e in EVENTS for e in value)
    ):
        raise ValidationFailed({"events": f"choose one or more of {', '.join(EVENTS)}"})
    return [e for e in EVENTS if e in value]


def _parse_description(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise ValidationFailed({"description": f"at most {MAX_DESCRIPTION} characters of text"})
    return value.strip()


def _check_body(body: object, *, creating: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "send a JSON object"})
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ValidationFailed({unknown[0]: "not a field of a webhook endpoint"})
    if creating and "url" not in body:
        raise ValidationFailed({"url": "give the https URL to send events to"})
    if creating and "events" not in body:
        raise ValidationFailed({"events": f"choose one or more of {', '.join(EVENTS)}"})
    for flag in ("enabled", "fhirBody", "confirmPhi"):
        if flag in body and not isinstance(body[flag], bool):
            raise ValidationFailed({flag: "true or false"})
    return body


async def check_url(url: object, policy: Policy) -> str:
    """The URL, if it may be registered: its shape, and in production its addresses."""
    try:
        target = parse_url(url, production=policy.production)
        if policy.production:
            await policy.check(target)
    except UnsafeUrl as exc:
        raise ValidationFailed({"url": str(exc)}) from None
    return target.url


def _check_fhir_opt_in(url: str, body: dict[str, Any]) -> None:
    """The QuestionnaireResponse (PHI) in the body: only to https, only confirmed."""
    if not url.lower().startswith("https://"):
        raise ValidationFailed(
            {"fhirBody": "the QuestionnaireResponse body goes to https URLs only"}
        )
    if body.get("confirmPhi") is not True:
        raise ValidationFailed(
            {"confirmPhi": "confirm that this endpoint may receive patients' answers (PHI)"}
        )


# Endpoints -------------------------------------------------------------------------------


async def list_endpoints(session: AsyncSession, organization_id: str) -> list[WebhookEndpoint]:
    rows = await session.execute(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.organization_id == organization_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return list(rows.scalars())


async def get_endpoint(
    session: AsyncSession, organization_id: str, endpoint_id: str
) -> WebhookEndpoint:
    row = await session.get(WebhookEndpoint, endpoint_id) if len(endpoint_id) <= 40 else None
    if row is None or row.organization_id != organization_id:
        raise NotFound()
    return row


async def create_endpoint(
    session: AsyncSession,
    keys: KeyRing,
    policy: Policy,
    organization_id: str,
    user_id: str,
    body: object,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (shown once: only its sealed form is kept)."""
    data = _check_body(body, creating=True)
    url = await check_url(data["url"], policy)
    events = _parse_events(data["events"])
    description = _parse_description(data.get("description", ""))
    fhir = data.get("fhirBody", False)
    if fhir:
        _check_fhir_opt_in(url, data)
    if len(await list_endpoints(session, organization_id)) >= MAX_ENDPOINTS:
        raise ValidationFailed({"url": f"an organisation has at most {MAX_ENDPOINTS} endpoints"})
    endpoint_id = new_id("whe_")
    secret = new_secret()
    sealed = _sealed_secret(keys, endpoint_id, secret)
    now = utcnow()
    row = WebhookEndpoint(
        id=endpoint_id,
        organization_id=organization_id,
        url=url,
        description=description,
        events=events,
        enabled=data.get("enabled", True),
        secret_ciphertext=sealed.ciphertext,
        secret_wrapped_key=sealed.wrapped_key,
        secret_key_id=sealed.key_id,
        secret_version=1,
        fhir_body=fhir,
        fhir_body_confirmed_by=user_id if fhir else None,
        fhir_body_confirmed_at=now if fhir else None,
        consecutive_failures=0,
        created_by=user_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return row, secret


async def update_endpoint(
    session: AsyncSession,
    policy: Policy,
    row: WebhookEndpoint,
    user_id: str,
    body: object,
) -> list[str]:
    """Apply a change; the names of the fields that changed (for the audit event)."""
    data = _check_body(body, creating=False)
    changed: list[str] = []
    url = row.url
    if "url" in data:
        url = await check_url(data["url"], policy)
        if url != row.url:
            changed.append("url")
    events = _parse_events(data["events"]) if "events" in data else row.events
    if list(events) != list(row.events):
        changed.append("events")
    description = (
        _parse_description(data["description"]) if "description" in data else row.description
    )
    if description != row.description:
        changed.append("description")
    fhir = data.get("fhirBody", row.fhir_body)
    if fhir and (not row.fhir_body or "url" in changed):
        _check_fhir_opt_in(url, data)  # switched on, or moved elsewhere: confirm again
    if fhir != row.fhir_body:
        changed.append("fhirBody")
    enabled = data.get("enabled", row.enabled)
    if enabled != row.enabled:
        changed.append("enabled")
    if not changed:
        return []
    now = utcnow()
    row.url, row.events, row.description, row.enabled = url, events, description, enabled
    if "fhirBody" in changed or ("url" in changed and fhir):
        row.fhir_body = fhir
        row.fhir_body_confirmed_by = user_id if fhir else None
        row.fhir_body_confirmed_at = now if fhir else None
    if "enabled" in changed or "url" in changed:
        row.consecutive_failures, row.circuit_open_until = 0, None  # a fresh start
    row.updated_at = now
    await session.flush()
    return changed


def rotate_secret(keys: KeyRing, row: WebhookEndpoint) -> str:
    """A new secret; the current one keeps signing beside it for ROTATION_OVERLAP."""
    secret = new_secret()
    sealed = _sealed_secret(keys, row.id, secret)
    now = utcnow()
    row.previous_ciphertext = row.secret_ciphertext
    row.previous_wrapped_key = row.secret_wrapped_key
    row.previous_key_id = row.secret_key_id
    row.previous_expires_at = now + ROTATION_OVERLAP
    row.secret_ciphertext, row.secret_wrapped_key = sealed.ciphertext, sealed.wrapped_key
    row.secret_key_id = sealed.key_id
    row.secret_version += 1
    row.updated_at = now
    return secret


# Deliveries ------------------------------------------------------------------------------


async def _add_delivery(session: AsyncSession, message: OutboxMessage, endpoint_id: str) -> str:
    delivery_id = delivery_id_for(message.id, endpoint_id)
    if await session.get(Delivery, delivery_id) is None:
        session.add(
            Delivery(
                id=delivery_id,
                message_id=message.id,
                organization_id=message.organization_id,
                channel=CHANNEL,
                template=message.kind,
                recipient_user_id=None,
                status="pending",
                attempts=0,
                next_attempt_at=utcnow(),
            )
        )
        await session.flush()
    return delivery_id


async def fan_out(session: AsyncSession, message: OutboxMessage) -> list[str]:
    """The outbox's fan-out for webhooks (every kind): one delivery per enabled
    endpoint of the organisation that chose the event; idempotent by its id."""
    if message.kind == TEST_EVENT:
        endpoint_id = str((message.payload or {}).get("endpointId", ""))
        row = await session.get(WebhookEndpoint, endpoint_id) if endpoint_id else None
        if row is None or row.organization_id != message.organization_id:
            return []
        return [await _add_delivery(session, message, row.id)]
    if message.kind not in EVENTS:
        return []
    made = []
    for row in await list_endpoints(session, message.organization_id):
        if row.enabled and message.kind in row.events:
            made.append(await _add_delivery(session, message, row.id))
    return made


async def send_test(session: AsyncSession, row: WebhookEndpoint) -> str:
    """A test event to this endpoint alone: its message is marked handled at once (the
    delivery is made here), so the relay leaves it alone."""
    now = utcnow()
    message = OutboxMessage(
        id=new_id("obx_"),
        organization_id=row.organization_id,
        kind=TEST_EVENT,
        payload={"endpointId": row.id},
        created_at=now,
        published_at=now,
        handled_at=now,
    )
    session.add(message)
    await session.flush()
    return await _add_delivery(session, message, row.id)


async def redeliver(session: AsyncSession, row: WebhookEndpoint, delivery_id: str) -> bool:
    """A dead delivery of this endpoint goes back to pending with a fresh count."""
    if len(delivery_id) > 160 or endpoint_of(delivery_id) != row.id:
        return False
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.organization_id == row.organization_id,
            Delivery.channel == CHANNEL,
            Delivery.status == "dead",
        )
        .values(status="pending", attempts=0, next_attempt_at=utcnow(), last_error=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


def event_data(kind: str, payload: dict[str, Any], base: str) -> dict[str, Any]:
    """Ids and API links only: never a name, an answer or an address."""
    ids = {
        key: str(payload[key])
        for key in ("responseId", "formId", "requestId", "endpointId")
        if isinstance(payload.get(key), str)
    }
    if isinstance(payload.get("version"), int):
        ids["version"] = payload["version"]
    links: dict[str, str] = {}
    if "responseId" in ids:
        links["response"] = f"{base}/api/responses/{ids['responseId']}"
    if "formId" in ids:
        links["form"] = f"{base}/api/forms/{ids['formId']}"
    data: dict[str, Any] = dict(ids)
    if kind == TEST_EVENT:
        data["test"] = True
    if links:
        data["links"] = links
    return data


def event_body(
    message: OutboxMessage, base: str, questionnaire_response: dict[str, Any] | None = None
) -> bytes:
    data = event_data(message.kind, dict(message.payload or {}), base)
    if questionnaire_response is not None:
        data["questionnaireResponse"] = questionnaire_response
    document = {
        "type": message.kind,
        "timestamp": message.created_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def wants_fhir_body(row: WebhookEndpoint, kind: str) -> bool:
    """The opt-in holds at send time too: https, confirmed, and a response event."""
    return (
        row.fhir_body
        and row.fhir_body_confirmed_at is not None
        and row.url.lower().startswith("https://")
        and kind in RESPONSE_EVENTS
    )
