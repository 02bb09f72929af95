"""The append-only audit trail: one HMAC-linked chain per organisation. No PHI."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, Sequence, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_org_at", "organization_id", "id"),
        Index("ix_audit_events_action", "action"),
        Index("uq_audit_events_chain_seq", "chain", "seq", unique=True),
    )

    # Global order of writing (a sequence, no lock); the chain position is (chain, seq).
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        Sequence("audit_events_id_seq"),
        primary_key=True,
    )
    # The organisation's id, "-" for events of no organisation, "legacy" for the rows
    # written before chains were keyed (one global SHA-256 chain).
    chain: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(BigInteger())  # 1, 2, 3 ... within its chain
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None: legacy
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    organization_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    resource_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    # A patient's address and user agent are stored as keyed pseudonyms ("h:<hex>").
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(256), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the server's
    client_request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Canonical JSON of AuditEvent.detail (ids and counts, never PHI), or None. Text,
    # not JSON: the MAC covers these exact bytes on every backend.
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
