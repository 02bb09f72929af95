"""An organisation's branding: display name, accent colour and logo (one row, optional)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime


class OrganizationBranding(Base):
    """What patients see of their clinic. Not PHI, so stored in the clear; the logo is
    the re-encoded image (healthforms/images.py), never the upload as sent."""

    __tablename__ = "organization_branding"

    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    display_name: Mapped[str | None] = mapped_column(String(120), nullable=True)
    accent_color: Mapped[str | None] = mapped_column(String(7), nullable=True)  # "#rrggbb"
    logo: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    logo_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    logo_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    logo_width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    logo_height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Bumped on every change: the stylesheet's and the logo's URLs carry it, so a
    # browser's cached copy is never the old one.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
