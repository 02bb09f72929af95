"""Forms, their frozen published versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime, new_id


class Form(Base):
    __tablename__ = "forms"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("frm_"))
    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # The editable draft definition: a list of Field objects (forms/schema.py).
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Its texts in other languages (forms/translations.py); None before any was saved.
    translations: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft|published|archived
    revision: Mapped[int] = mapped_column(Integer, default=1)
    # The latest published version number (0 before the first publish).
    version: Mapped[int] = mapped_column(Integer, default=0)
    public_id: Mapped[str | None] = mapped_column(String(40), unique=True, nullable=True)
    has_unpublished_changes: Mapped[bool] = mapped_column(default=True)
    # Days a response is kept after it was submitted; None keeps responses for ever.
    # The retention purge (retention/service.py) deletes older ones with their records.
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    # Highest fencing number of the edit lock that saved this form (see security/locks.py).
    edit_fence: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FormVersion(Base):
    """A published definition, frozen: responses always render with their version."""

    __tablename__ = "form_versions"
    __table_args__ = (UniqueConstraint("form_id", "version", name="uq_form_versions_form_version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("fv_"))
    form_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("forms.id", ondelete="RESTRICT"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    translations: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_by: Mapped[str | None] = mapped_column(String(40), nullable=True)


class AlertSubscription(Base):
    """A staff member who follows a form: alerted about its new responses (alerts/)."""

    __tablename__ = "alert_subscriptions"

    user_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    form_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("forms.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
