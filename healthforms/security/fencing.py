"""Fencing numbers checked by the database: a writer whose lock expired cannot write."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime


class LockFence(Base):
    """The highest fencing number that has written to `resource`."""

    __tablename__ = "lock_fences"

    resource: Mapped[str] = mapped_column(String(200), primary_key=True)
    fence: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class LockLease(Base):
    """A lock lease kept in the database while Redis is unavailable (the lock fallback).

    A lease row outlives requests (the form-edit lock spans them), which advisory
    locks cannot; it is taken by one conditional upsert, so it works on SQLite and
    PostgreSQL alike.
    """

    __tablename__ = "lock_leases"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    token: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    fence: Mapped[int] = mapped_column(BigInteger)
