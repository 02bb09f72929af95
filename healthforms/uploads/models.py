"""Uploaded files: what each one is and whose (`uploads`), and its sealed bytes
(`upload_blobs`, written by storage.DatabaseFileStore).

No file name is stored: a name ("jane-doe-insurance.jpg") can be PHI, and staff read
the field's label instead.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime, new_id


class Upload(Base):
    """One file, pending (bound to the page's nonce and a field, until `expires_at`)
    or attached to the response that named it (`response_id`, `expires_at` null)."""

    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_response_id", "response_id"),
        Index("ix_uploads_nonce_id", "nonce_id"),
        # The sweep's range: pending uploads past their time.
        Index("ix_uploads_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("upl_"))
    organization_id: Mapped[str] = mapped_column(String(40))
    form_id: Mapped[str] = mapped_column(String(40), ForeignKey("forms.id", ondelete="RESTRICT"))
    field_id: Mapped[str] = mapped_column(String(64))
    # Where the page's nonce was issued (a form's public id, or `request:<id>`) and its id.
    scope: Mapped[str] = mapped_column(String(80))
    nonce_id: Mapped[str] = mapped_column(String(64))
    response_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("responses.id", ondelete="CASCADE"), nullable=True
    )
    media_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UploadBlob(Base):
    """The bytes of one upload, envelope-encrypted (AAD = upload id, crypto/envelope.py)."""

    __tablename__ = "upload_blobs"

    upload_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True
    )
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
