"""The alerts a staff member has not read (who follows a form: forms/models.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime, new_id


class Alert(Base):
    """ "A new response to <form>" in one staff member's pages until they read it."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("user_id", "message_id", name="uq_alerts_user_message"),
        Index("ix_alerts_user_unread", "user_id", "read_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("alr_"))
    organization_id: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(String(40), ForeignKey("users.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("outbox_messages.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(64))
    form_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    response_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
