"""A request to a patient: who it is for (sealed), which form, its link's hash, its state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime, new_id


class PatientRequest(Base):
    """One personal link to a form. The link's token is never stored, only its SHA-256
    (a 256-bit random token needs no salt or slow hash: nothing to guess). The patient's
    name, email, phone and prefilled answers are sealed like answers (AAD = request id).
    `state` holds what happened; "expired" is derived from `expires_at` (service.py)."""

    __tablename__ = "patient_requests"
    __table_args__ = (
        Index("ix_patient_requests_org_form_created", "organization_id", "form_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("req_"))
    organization_id: Mapped[str] = mapped_column(String(40))
    form_id: Mapped[str] = mapped_column(String(40), ForeignKey("forms.id", ondelete="RESTRICT"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="created")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The response it produced; kept as null when that response is deleted (retention).
    response_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("responses.id", ondelete="SET NULL"), nullable=True
    )
