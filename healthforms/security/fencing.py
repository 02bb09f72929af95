"""Fencing numbers checked by the database: a writer whose lock expired cannot write."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.db.base import Base, UTCDateTime, utcnow


class LockFence(Base):
    """The highest fencing number that has written to `resource`."""

    __tablename__ = "lock_fences"

    resource: Mapped[str] = mapped_column(String(200), primary_key=True)
    fence: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
