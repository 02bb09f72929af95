"""Sends webhook deliveries (rows of the outbox's `deliveries`, channel "webhook").

- **Who sends.** Every process that runs the outbox worker runs one dispatcher. It
  polls for due deliveries (and is woken at once when this process fanned a message
  out), claims each in the database (pending -> sending with a lease: two instances
  never send the same one at once) and sends them concurrently, each in a task of its
  own with a deadline, so a receiver that hangs holds one task, not the others.
- **At least once.** A process killed mid-call leaves the delivery `sending`; once its
  lease lapses another dispatcher sends it again, with the same webhook-id.
- **Retries.** A failure waits base * 2^(n-1) (capped) +-20% jitter; after the last
  attempt the delivery is dead (listed for admins, who can redeliver it).
- **Circuit per endpoint.** After N failures in a row the endpoint is not called for
  the cool-down: its deliveries are pushed past it (no attempt spent, no task held).
  After the cool-down one call probes it: success closes the circuit, failure opens it
  again. At most PER_ENDPOINT calls are in flight per endpoint, so one slow receiver
  cannot take every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import RESPONSE_DISCLOSED, AuditEvent
from healthforms.audit.events import Outcome as AuditOutcome
from healthforms.audit.store import append_event
from healthforms.clock import utcnow
from healthforms.config import Settings
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.metrics import Metrics
from healthforms.outbox.models import Delivery, OutboxMessage
from healthforms.outbox.store import OutboxSignal, claim_delivery
from healthforms.webhooks.addresses import Policy, own_addresses
from healthforms.webhooks.models import WebhookAttempt, WebhookEndpoint
from healthforms.webhooks.sender import CallResult, build_client, call
from healthforms.webhooks.service import (
    CHANNEL,
    TEST_EVENT,
    BodySource,
    deliveries_of,
    endpoint_of,
    event_body,
    valid_secrets,
    wants_fhir_body,
)
from healthforms.webhooks.signing import message_id_for, signature_header

log = structlog.get_logger("healthforms.webhooks")

BATCH = 500
LOG_KEPT = timedelta(days=30)  # the call log of an endpoint (webhook_attempts)
PRUNE_EVERY_S = 3600.0
CONCURRENCY = 32
PER_ENDPOINT = 4


def backoff(settings: Settings, attempts: int) -> timedelta:
    """The wait after failed attempt number `attempts` (1-based), with jitter."""
    base = settings.webhook_retry_base_s * (2 ** max(attempts - 1, 0))
    wait = min(base, settings.webhook_retry_max_s)
    return timedelta(seconds=wait * random.uniform(0.8, 1.2))  # noqa: S311 - jitter


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # sent, pending (retry), dead, skipped
    result: CallResult | None


class WebhookDispatcher:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        keys: KeyRing,
        metrics: Metrics,
        body_source: BodySource | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.keys = keys
        self.metrics = metrics
        self.body_source = body_source
        self.signal = OutboxSignal()
        self.policy = Policy(
            production=settings.is_production,
            allow_hosts=frozenset(settings.webhook_allow_hosts),
        )
        self.client = build_client(
            settings.webhook_connect_timeout_s, settings.webhook_timeout_s, settings.webhook_ca_file
        )
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENCY)

    # Lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.is_production:
            own = await asyncio.to_thread(own_addresses, self.settings.public_url)
            self.policy = Policy(True, self.policy.allow_hosts, own)
        self._loop = asyncio.create_task(self._run(), name="webhooks-dispatch")

    async def stop(self) -> None:
        self._stopping.set()
        self.signal.nudge()
        tasks = [t for t in (self._loop, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()  # a call cut short is sent again once its lease lapses
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.aclose()

    async def prune_log(self, kept: timedelta = LOG_KEPT) -> int:
        """Forget calls older than `kept`; how many rows went."""
        async with self.db.sessions() as session, session.begin():
            result = await session.execute(
                delete(WebhookAttempt)
                .where(WebhookAttempt.at < utcnow() - kept)
                .execution_options(synchronize_session=False)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def _run(self) -> None:
        pruned_at = 0.0
        while not self._stopping.is_set():
            if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                pruned_at = time.monotonic()
                with contextlib.suppress(Exception):
                    await self.prune_log()
            try:
                started = await self.dispatch_once()
            except Exception:  # noqa: BLE001 - the database away: next round
                log.warning("webhooks_dispatch_failed", exc_info=True)
                started = 0
            if not started:
                await self.signal.wait(self.settings.webhook_poll_s)
            else:
                await asyncio.sleep(0)

    def _lease(self) -> timedelta:
        # Like email's: the call's deadline plus the outbox's reclaim time.
        return timedelta(seconds=self.settings.webhook_timeout_s + self.settings.outbox_reclaim_s)

    # One round ------------------------------------------------------------------------------

    async def dispatch_once(self) -> int:
        """Claim what is due and start sending it; how many calls were started."""
        now = utcnow()
        async with self.db.sessions() as session:
            due = list(
                (
                    await session.execute(
                        select(Delivery.id)
                        .where(
                            Delivery.channel == CHANNEL,
                            or_(
                                (Delivery.status == "pending") & (Delivery.next_attempt_at <= now),
                                (Delivery.status == "sending") & (Delivery.lease_until <= now),
                            ),
                        )
                        .order_by(Delivery.next_attempt_at)
                        .limit(BATCH)
                    )
                ).scalars()
            )
            if not due:
                return 0
            endpoint_ids = {endpoint_of(d) for d in due}
            endpoints = {
                row.id: row
                for row in (
                    await session.execute(
                        select(WebhookEndpoint).where(WebhookEndpoint.id.in_(endpoint_ids))
                    )
                ).scalars()
            }
        started = 0
        probing: set[str] = set()
        deferred: set[str] = set()
        for delivery_id in due:
            endpoint = endpoints.get(endpoint_of(delivery_id))
            if endpoint is None:
                await self._end_without_call(delivery_id, "endpoint deleted")
                continue
            if endpoint.circuit_open_until is not None and endpoint.circuit_open_until > now:
                if endpoint.id not in deferred:
                    deferred.add(endpoint.id)
                    await self._defer(endpoint.id, endpoint.circuit_open_until)
                continue
            half_open = endpoint.consecutive_failures >= self.settings.webhook_circuit_failures
            busy = self._in_flight.get(endpoint.id, 0)
            if busy >= PER_ENDPOINT or (half_open and (busy or endpoint.id in probing)):
                continue  # its calls in flight end first (one probe while half-open)
            if self._slots.locked():
                break
            attempt = await self._claim(delivery_id)
            if attempt is None:
                continue
            if half_open:
                probing.add(endpoint.id)
            self._spawn(delivery_id, endpoint.id, attempt)
            started += 1
        return started

    def _spawn(self, delivery_id: str, endpoint_id: str, attempt: int) -> None:
        self._in_flight[endpoint_id] = self._in_flight.get(endpoint_id, 0) + 1

        async def run() -> None:
            async with self._slots:
                try:
                    await self.send(delivery_id, attempt)
                except Exception:  # noqa: BLE001 - left `sending`: sent again after its lease
                    log.warning("webhook_send_failed", delivery_id=delivery_id, exc_info=True)
                finally:
                    left = self._in_flight.get(endpoint_id, 1) - 1
                    if left:
                        self._in_flight[endpoint_id] = left
                    else:
                        self._in_flight.pop(endpoint_id, None)
                    self.signal.nudge()  # room for the next

        task = asyncio.create_task(run(), name=f"webhook-{delivery_id[-12:]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(self, delivery_id: str) -> int | None:
        return await claim_delivery(self.db, delivery_id, self._lease())

    async def _defer(self, endpoint_id: str, until: datetime) -> None:
        """The circuit is open: its pending deliveries wait past the cool-down."""
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                update(Delivery)
                .where(
                    Delivery.channel == CHANNEL,
                    Delivery.status == "pending",
                    Delivery.next_attempt_at < until,
                    deliveries_of(endpoint_id),
                )
                .values(next_attempt_at=until)
                .execution_options(synchronize_session=False)
            )

    async def _end_without_call(self, delivery_id: str, reason: str) -> None:
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.status.in_(("pending", "sending")))
                .values(status="skipped", lease_until=None, last_error=reason, sent_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        self.metrics.outbox_deliveries.labels(channel=CHANNEL, outcome="skipped").inc()

    # One call -------------------------------------------------------------------------------

    def public_base(self) -> str:
        return self.settings.public_base

    async def compose(
        self,
        session: AsyncSession,
        message: OutboxMessage,
        row: WebhookEndpoint,
    ) -> bytes:
        return (await self._compose(session, message, row))[0]

    async def _compose(
        self,
        session: AsyncSession,
        message: OutboxMessage,
        row: WebhookEndpoint,
    ) -> tuple[bytes, str | None]:
        """The body, and the id of the response whose answers it carries (None: ids and
        links only)."""
        resource = None
        response_id = (message.payload or {}).get("responseId")
        if (
            self.body_source is not None
            and wants_fhir_body(row, message.kind)
            and isinstance(response_id, str)
        ):
            resource = await self.body_source(session, self.keys, row.organization_id, response_id)
        disclosed = response_id if resource is not None else None
        return event_body(message, self.public_base(), resource), disclosed

    async def send(self, delivery_id: str, attempt: int) -> None:
        async with self.db.sessions() as session:
            delivery = await session.get(Delivery, delivery_id)
            message = await session.get(OutboxMessage, delivery.message_id) if delivery else None
            row = await session.get(WebhookEndpoint, endpoint_of(delivery_id))
            if delivery is None or message is None or row is None:
                await self._end_without_call(delivery_id, "endpoint or event deleted")
                return
            if not row.enabled and message.kind != TEST_EVENT:
                await self._end_without_call(delivery_id, "endpoint disabled")
                return
            body, disclosed = await self._compose(session, message, row)
            secrets = valid_secrets(self.keys, row, utcnow())
            url, event_type = row.url, message.kind
        webhook_id = message_id_for(delivery_id)
        timestamp = int(time.time())
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, webhook_id, timestamp, body),
        }
        result = await call(
            self.client, self.policy, url, headers, body, self.settings.webhook_timeout_s
        )
        if disclosed is not None:
            # Answers left the service: a disclosure, audited per attempt that carried
            # them (the receiver may have read a body it then answered 500 to).
            await append_event(
                self.db,
                self.keys,
                AuditEvent(
                    action=RESPONSE_DISCLOSED,
                    outcome=AuditOutcome.SUCCESS if result.ok else AuditOutcome.FAILURE,
                    organization_id=row.organization_id,
                    resource_type="response",
                    resource_id=disclosed,
                    detail={
                        "channel": "webhook",
                        "endpointId": row.id,
                        "webhookId": webhook_id,
                        "attempt": attempt,
                        "status": result.status_code,
                    },
                ),
            )
        await self._record(delivery_id, row.id, row.organization_id, event_type, attempt, result)

    async def _record(
        self,
        delivery_id: str,
        endpoint_id: str,
        organization_id: str,
        event_type: str,
        attempt: int,
        result: CallResult,
    ) -> None:
        now = utcnow()
        dead = not result.ok and attempt >= self.settings.webhook_max_attempts
        status = "sent" if result.ok else ("dead" if dead else "pending")
        opened_until: datetime | None = None
        async with self.db.sessions() as session, session.begin():
            session.add(
                WebhookAttempt(
                    endpoint_id=endpoint_id,
                    organization_id=organization_id,
                    delivery_id=delivery_id,
                    event_type=event_type,
                    attempt=attempt,
                    status_code=result.status_code,
                    latency_ms=result.latency_ms,
                    error=(result.error or None) and str(result.error)[:120],
                    at=now,
                )
            )
            values: dict[str, object] = {"status": status, "lease_until": None}
            if result.ok:
                values.update(sent_at=now, last_error=None)
            else:
                values.update(
                    last_error=str(result.error)[:200],
                    next_attempt_at=now + backoff(self.settings, attempt),
                )
            await session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.status == "sending")
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            endpoint = await session.get(WebhookEndpoint, endpoint_id)
            if endpoint is not None:
                if result.ok:
                    endpoint.consecutive_failures = 0
                    endpoint.circuit_open_until = None
                else:
                    endpoint.consecutive_failures += 1
                    if endpoint.consecutive_failures >= self.settings.webhook_circuit_failures:
                        opened_until = now + timedelta(
                            seconds=self.settings.webhook_circuit_cooldown_s
                        )
                        endpoint.circuit_open_until = opened_until
        if opened_until is not None:
            await self._defer(endpoint_id, opened_until)
            log.warning("webhook_circuit_open", endpoint_id=endpoint_id)
        self.metrics.outbox_deliveries.labels(
            channel=CHANNEL, outcome={"pending": "retry"}.get(status, status)
        ).inc()
        log.info(
            "webhook_attempt",
            delivery_id=delivery_id,
            attempt=attempt,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            outcome=status,
        )
