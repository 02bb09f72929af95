"""The database side of the outbox: what happened (a message) and who must hear of it
(a delivery per recipient and channel). Ids and kinds only: never PHI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime, new_id


class OutboxMessage(Base):
    """Something that happened (e.g. a response arrived), written in the transaction of
    the change itself, so a crash or a Redis outage cannot lose it. The relay copies it
    onto the stream and stamps `published_at`; a message the stream lost is published
    again (set `published_at` back to null)."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        Index("ix_outbox_messages_unpublished", "published_at", "created_at"),
        Index("ix_outbox_messages_unhandled", "handled_at", "published_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("obx_"))
    organization_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(64))
    # Ids the handler needs (e.g. {"responseId", "formId"}): never answers or names.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Every delivery it made reached an end (sent, skipped or dead). Until then the
    # relay publishes it again now and then: a stream entry lost with a Redis that
    # restarted empty is not a lost alert.
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Delivery(Base):
    """One message to one recipient on one channel. Its id is the idempotency key
    (`<message id>:<channel>:<recipient>`): fanning a message out twice makes no second
    delivery, and the email's Message-ID is derived from it, so a receiver can drop a
    copy sent again after a worker died between the server's "250 OK" and our
    `sent`."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_message", "message_id"),
        Index("ix_deliveries_status", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    message_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("outbox_messages.id", ondelete="CASCADE")
    )
    organization_id: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(16))  # "email"
    template: Mapped[str] = mapped_column(String(64))  # what to say (email/messages.py)
    recipient_user_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # pending -> sending -> sent; pending again after a failure (backoff); dead after
    # the last attempt (listed for admins, who can send it again).
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The failure's class and SMTP code only ("SMTPRecipientsRefused 550"): no address.
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
