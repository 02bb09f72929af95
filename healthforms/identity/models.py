"""Organisations (clinics) and their staff users."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, LargeBinary, String, UniqueConstraint
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
    # Unique per organisation, not across the service: an email taken by another clinic
    # must not be something an admin can detect (a 409 would reveal that clinic's
    # account). Sign-in by email tries each account with that email (identity/login.py).
    __table_args__ = (
        UniqueConstraint("organization_id", "email", name="uq_users_organization_id_email"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("usr_"))
    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    # Stored lower-cased.
    email: Mapped[str] = mapped_column(String(320), index=True)
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


class TotpRecoveryCode(Base):
    """One unused single-use recovery code of a user's two-step sign-in, stored as
    SHA-256(user id, code): the codes carry 79 bits of randomness, so an unkeyed hash
    cannot be reversed by guessing, and it survives a rotation of the master key.
    A sign-in that uses one deletes its row (the delete is the single-use check)."""

    __tablename__ = "totp_recovery_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
