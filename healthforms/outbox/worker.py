"""The outbox worker: database → Redis Stream → handlers → deliveries.

- **Relay.** Messages committed to `outbox_messages` are copied onto the stream
  `outbox:{events}` (ids only) and stamped `published_at`. A request that committed
  one wakes this process's relay at once; others are found by the poll. While Redis is
  down the rows simply wait. A message not yet handled is published again after
  REPUBLISH_AFTER (its entry may have died with a Redis that restarted empty):
  handling is idempotent, so a second copy costs a look-up.
- **Consumer group.** Every worker reads the stream in the group `workers` with a
  blocking XREADGROUP on a connection of its own. Handling a message fans it out into
  alerts and deliveries (idempotent, keyed by message and recipient), then sends the
  deliveries that are due. The entry is acknowledged (XACK) once every delivery has
  reached an end; until then it stays pending, and XAUTOCLAIM hands entries idle for
  `outbox_reclaim_s` to whichever worker looks next (a worker that died, or a
  delivery waiting for its retry).
- **Deliveries.** A worker claims a delivery in the database before sending
  (pending → sending with a lease), so two workers never send the same one. A failure
  puts it back to pending with exponential backoff and jitter; after
  `outbox_max_attempts` it is dead: listed for admins (alerts/routes.py), who can send
  it again. The email's Message-ID is derived from the delivery id: a worker killed
  after the SMTP server took the message but before `sent` was written makes the next
  attempt send the same Message-ID, which receivers de-duplicate on. A worker killed
  before the server's final reply sent nothing (SMTP keeps a message only once DATA is
  complete), so the next attempt is the only copy.
- **Other channels.** `fan_outs` run for every message, whatever its kind, in the
  transaction of the kind's handler (webhooks/ makes its deliveries there). The worker
  sends only email deliveries; a channel's own sender sends the rest from the
  deliveries table (`on_fanned_out` wakes it once the fan-out committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import utcnow
from healthforms.config import Settings
from healthforms.db.engine import Database
from healthforms.email.mailer import SmtpMailer, describe_failure
from healthforms.metrics import Metrics
from healthforms.outbox.models import Delivery, OutboxMessage
from healthforms.outbox.store import OutboxSignal, claim_delivery
from healthforms.redis.client import RedisService
from healthforms.redis.errors import RedisUnavailable

log = structlog.get_logger("healthforms.outbox")

STREAM = "outbox:{events}"
GROUP = "workers"
# Every key has a TTL: the stream lives a week past its last message (an idle stream
# that expires takes its group with it; the worker creates both again).
STREAM_TTL_S = 7 * 24 * 3600
STREAM_MAXLEN = 100_000
BLOCK_MS = 2000
RELAY_BATCH = 100
REPUBLISH_AFTER = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Handler:
    """What a feature does with one kind of message (alerts/ and patient_requests/
    register their own; the worker knows no feature). All run in the worker's sessions."""

    # (session, message, mail configured) -> the ids of its deliveries; idempotent.
    fan_out: Callable[[AsyncSession, OutboxMessage, bool], Awaitable[list[str]]]
    # (session, delivery, message, public base URL) -> the email, or None when it has
    # no one to go to any more (then it is `skipped`).
    compose: Callable[[AsyncSession, Delivery, OutboxMessage, str], Awaitable[EmailMessage | None]]
    # Run in the transaction that marks a delivery sent (e.g. a request becomes `sent`).
    sent: Callable[[AsyncSession, Delivery, OutboxMessage], Awaitable[None]] | None = None


# A fan-out for every kind of message (other channels: webhooks/); idempotent.
FanOut = Callable[[AsyncSession, OutboxMessage], Awaitable[list[str]]]


def consumer_name() -> str:
    """Unique per worker: a restarted process is a new consumer, and its predecessor's
    pending entries are reclaimed by idle time."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class OutboxWorker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        redis: RedisService,
        metrics: Metrics,
        handlers: Mapping[str, Handler],
        signal: OutboxSignal | None = None,
        fan_outs: Sequence[FanOut] = (),
        on_fanned_out: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.handlers = dict(handlers)
        self.fan_outs = tuple(fan_outs)
        self.on_fanned_out = on_fanned_out
        self.db = db
        self.redis = redis
        self.metrics = metrics
        self.signal = signal or OutboxSignal()
        self.stream = redis.key(STREAM)
        self.consumer = consumer_name()
        self.mailer = SmtpMailer(settings) if settings.mail_enabled else None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # Lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._relay_forever(), name="outbox-relay"),
            asyncio.create_task(self._consume_forever(), name="outbox-consume"),
            asyncio.create_task(self._reclaim_forever(), name="outbox-reclaim"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        self.signal.nudge()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # Relay: database -> stream ----------------------------------------------------------

    async def relay_once(self) -> int:
        """Publish what is waiting (new, or unhandled for a while); how many."""
        now = utcnow()
        async with self.db.sessions() as session, session.begin():
            query = (
                select(OutboxMessage.id, OutboxMessage.kind)
                .where(
                    or_(
                        OutboxMessage.published_at.is_(None),
                        (OutboxMessage.handled_at.is_(None))
                        & (OutboxMessage.published_at < now - REPUBLISH_AFTER),
                    )
                )
                .order_by(OutboxMessage.created_at)
                .limit(RELAY_BATCH)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)  # instances share the work
            rows = (await session.execute(query)).all()
            if not rows:
                return 0
            await self._publish([(row.id, row.kind) for row in rows])
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_([row.id for row in rows]))
                .values(published_at=now)
                .execution_options(synchronize_session=False)
            )
        self.metrics.outbox_published.inc(len(rows))
        return len(rows)

    async def _publish(self, entries: list[tuple[str, str]]) -> None:
        stream = self.stream

        # redis-py's asyncio Cluster runs a MULTI/EXEC pipeline's commands on a thread of
        # its own and joins it on the event loop (the whole process stalls while a node
        # is away): on a Cluster the entries go as a plain pipeline. A partial publish
        # leaves the rows unpublished; they are added again (at least once, as always).
        transaction = self.redis.topology != "cluster"

        async def xadd_all(client: Redis) -> Any:
            pipe = client.pipeline(transaction=transaction)
            for message_id, kind in entries:
                pipe.xadd(
                    stream, {"m": message_id, "k": kind}, maxlen=STREAM_MAXLEN, approximate=True
                )
            pipe.expire(stream, STREAM_TTL_S)
            return await pipe.execute()

        await self.redis.call(xadd_all)

    async def _relay_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                published = await self.relay_once()
            except RedisUnavailable:
                published = 0  # the rows wait in the database
            except Exception:  # noqa: BLE001 - a database outage: try again at the next poll
                log.warning("outbox_relay_failed", exc_info=True)
                published = 0
            if published < RELAY_BATCH:
                await self.signal.wait(self.settings.outbox_poll_s)

    # Consumer group: stream -> handlers -----------------------------------------------

    async def ensure_group(self) -> None:
        async def create(client: Redis) -> None:
            try:
                # From the start: entries added before the group existed are handled too.
                await client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            await client.expire(self.stream, STREAM_TTL_S, nx=True)

        await self.redis.call(create)

    async def _consume_forever(self) -> None:
        client: Redis | None = None
        delay = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    if client is None:
                        client = self.redis.dedicated_client(socket_timeout=BLOCK_MS / 1000 + 5)
                        await self.ensure_group()
                    replies = await client.xreadgroup(
                        GROUP, self.consumer, {self.stream: ">"}, count=10, block=BLOCK_MS
                    )
                    delay = 0.1
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):  # the stream expired or was flushed
                        with contextlib.suppress(RedisUnavailable):
                            await self.ensure_group()
                        continue
                    raise
                except (RedisConnectionError, RedisTimeoutError, OSError, RedisUnavailable):
                    if client is not None:
                        with contextlib.suppress(Exception):
                            await client.aclose()
                    client = None
                    await self._pause(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                read: list[Any] = list(replies or [])
                for _stream, entries in read:
                    for entry_id, fields in entries:
                        await self._handle_entry(entry_id, fields)
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _reclaim_forever(self) -> None:
        while not self._stopping.is_set():
            await self._pause(max(self.settings.outbox_reclaim_s / 2, 0.2))
            if self._stopping.is_set():
                return
            try:
                await self.reclaim_once()
            except RedisUnavailable:
                pass
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.warning("outbox_reclaim_failed", reason=type(exc).__name__)
            except Exception:  # noqa: BLE001 - the database away: next round
                log.warning("outbox_reclaim_failed", exc_info=True)

    async def reclaim_once(self) -> int:
        """Take over entries pending longer than the reclaim time (a dead worker's, or
        ones waiting for a retry) and handle them; how many."""
        min_idle_ms = int(self.settings.outbox_reclaim_s * 1000)
        stream, consumer = self.stream, self.consumer
        handled = 0
        start = "0-0"
        while True:

            async def claim(client: Redis, since: str = start) -> Any:
                return await client.xautoclaim(
                    stream, GROUP, consumer, min_idle_ms, since, count=50
                )

            reply = await self.redis.call(claim)
            next_start, entries = reply[0], reply[1]
            for entry_id, fields in entries:
                if fields:  # an entry trimmed away meanwhile comes back empty
                    await self._handle_entry(entry_id, fields)
                    handled += 1
            start = next_start.decode() if isinstance(next_start, bytes) else str(next_start)
            if start == "0-0" or not entries:
                return handled

    async def _handle_entry(self, entry_id: bytes | str, fields: dict[Any, Any]) -> None:
        raw = fields.get(b"m") or fields.get("m")
        message_id = raw.decode() if isinstance(raw, bytes) else str(raw or "")
        try:
            done = await self.process(message_id)
        except Exception:  # noqa: BLE001 - the entry stays pending: reclaimed later
            log.warning("outbox_handle_failed", message_id=message_id, exc_info=True)
            return
        if done:
            with contextlib.suppress(RedisUnavailable):
                await self.redis.call(lambda c: c.xack(self.stream, GROUP, entry_id))

    # Handling one message ---------------------------------------------------------------

    async def process(self, message_id: str) -> bool:
        """Fan the message out and send what is due; True once everything reached an end
        (the entry can be acknowledged)."""
        async with self.db.sessions() as session, session.begin():
            message = await session.get(OutboxMessage, message_id)
            if message is None:
                return True  # purged with its response
            if message.handled_at is not None:
                return True
            handler = self.handlers.get(message.kind)
            if handler is None and not self.fan_outs:
                log.error("outbox_unknown_kind", kind=message.kind, message_id=message_id)
                return True
            if handler is not None:
                await handler.fan_out(session, message, self.mailer is not None)
            others = [await fan_out(session, message) for fan_out in self.fan_outs]
        if any(others) and self.on_fanned_out is not None:
            self.on_fanned_out()
        async with self.db.sessions() as session:
            deliveries = list(
                (
                    await session.execute(
                        select(Delivery.id).where(
                            Delivery.message_id == message_id,
                            Delivery.channel == "email",  # other channels send their own
                            Delivery.status.in_(("pending", "sending")),
                        )
                    )
                ).scalars()
            )
        finished = True
        for delivery_id in deliveries:
            if not await self.deliver(delivery_id):
                finished = False
        if finished:
            async with self.db.sessions() as session, session.begin():
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == message_id)
                    .values(handled_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
        return finished

    def _lease(self) -> timedelta:
        return timedelta(seconds=self.settings.smtp_timeout_s + self.settings.outbox_reclaim_s)

    def _backoff(self, attempts: int) -> timedelta:
        base = self.settings.outbox_retry_base_s * (2 ** max(attempts - 1, 0))
        return timedelta(seconds=min(base, 6 * 3600) * random.uniform(0.8, 1.2))  # noqa: S311

    async def _claim(self, delivery_id: str) -> int | None:
        return await claim_delivery(self.db, delivery_id, self._lease())

    async def deliver(self, delivery_id: str) -> bool:
        """Send one delivery if it is due and ours; True when it reached an end."""
        attempt = await self._claim(delivery_id)
        if attempt is None:
            async with self.db.sessions() as session:
                status = (
                    await session.execute(select(Delivery.status).where(Delivery.id == delivery_id))
                ).scalar_one_or_none()
            return status in (None, "sent", "dead", "skipped")
        try:
            email = await self._compose(delivery_id)
        except Exception as exc:  # noqa: BLE001 - the database: retried like a send
            return await self._failed(delivery_id, attempt, exc)
        if email is None:
            await self._finish(delivery_id, "skipped", None)
            self.metrics.outbox_deliveries.labels(channel="email", outcome="skipped").inc()
            return True
        try:
            if self.mailer is None:
                raise RuntimeError("mail is not configured")
            await self.mailer.send(email)
        except Exception as exc:  # noqa: BLE001 - every failure is a retry or a dead letter
            return await self._failed(delivery_id, attempt, exc)
        await self._finish(delivery_id, "sent", None)
        self.metrics.outbox_deliveries.labels(channel="email", outcome="sent").inc()
        log.info("outbox_delivered", delivery_id=delivery_id, attempt=attempt)
        return True

    async def _failed(self, delivery_id: str, attempt: int, exc: BaseException) -> bool:
        reason = describe_failure(exc)
        dead = attempt >= self.settings.outbox_max_attempts
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.status == "sending")
                .values(
                    status="dead" if dead else "pending",
                    next_attempt_at=utcnow() + self._backoff(attempt),
                    lease_until=None,
                    last_error=reason[:200],
                )
                .execution_options(synchronize_session=False)
            )
        outcome = "dead" if dead else "retry"
        self.metrics.outbox_deliveries.labels(channel="email", outcome=outcome).inc()
        log.warning("outbox_delivery_failed", delivery_id=delivery_id, attempt=attempt,
                    reason=reason, dead=dead)  # fmt: skip
        return dead

    async def _finish(self, delivery_id: str, status: str, error: str | None) -> None:
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(status=status, sent_at=utcnow(), lease_until=None, last_error=error)
                .execution_options(synchronize_session=False)
            )
            if status != "sent":
                return
            delivery = await session.get(Delivery, delivery_id)
            message = await session.get(OutboxMessage, delivery.message_id) if delivery else None
            handler = self.handlers.get(message.kind) if message is not None else None
            if delivery is not None and message is not None and handler and handler.sent:
                await handler.sent(session, delivery, message)

    async def _compose(self, delivery_id: str) -> EmailMessage | None:
        async with self.db.sessions() as session:
            delivery = await session.get(Delivery, delivery_id)
            message = await session.get(OutboxMessage, delivery.message_id) if delivery else None
            handler = self.handlers.get(message.kind) if message is not None else None
            if delivery is None or message is None or handler is None:
                return None
            return await handler.compose(session, delivery, message, self.public_base())

    def public_base(self) -> str:
        return self.settings.public_base


async def redeliver(db: Database, delivery_id: str, organization_id: str) -> bool:
    """An admin sends a dead letter again: it goes back to pending with a fresh count,
    and its message is published again so a worker picks it up. False if no dead
    delivery of this organisation has that id."""
    async with db.sessions() as session, session.begin():
        result = await session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.organization_id == organization_id,
                Delivery.status == "dead",
            )
            .values(status="pending", attempts=0, next_attempt_at=utcnow(), last_error=None)
            .execution_options(synchronize_session=False)
        )
        if int(getattr(result, "rowcount", 0) or 0) != 1:
            return False
        message_id = (
            await session.execute(select(Delivery.message_id).where(Delivery.id == delivery_id))
        ).scalar_one()
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id)
            .values(published_at=None, handled_at=None)
            .execution_options(synchronize_session=False)
        )
    return True
