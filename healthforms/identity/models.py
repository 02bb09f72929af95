"""Organisations (clinics) and their staff users."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime, new_id
from healthforms.security.principal import Role


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("org_"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("usr_"))
    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    # Stored lower-cased; unique across the service so a sign-in finds one account.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=Role.VIEWER.value)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # TOTP secret, encrypted with the master key (see crypto/envelope.py).
    totp_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Sessions issued before this instant are void, also in degraded mode
    # (set when the user is disabled, changes password, or signs out everywhere).
    sessions_valid_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class SessionRevocation(Base):
    """One session ended by its user or an admin (logout, revoke), kept in the database
    as well as in Redis: the session layer refuses its cookie from this record while
    Redis is down and after an outage that swallowed the Redis side. Pruned once the
    session's absolute lifetime has passed (the cookie is refused anyway after that).
    Ends of every session of a user are `User.sessions_valid_after` instead."""

    __tablename__ = "session_revocations"

    session_hash: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
