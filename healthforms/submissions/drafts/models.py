"""A patient's saved draft: its answers sealed, its link and code kept only as hashes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime, new_id


class FormDraft(Base):
    """One saved, unsent submission of a public form (docs/drafts.md).

    The answers are sealed like a response's (crypto/envelope.py, AAD = draft id and
    form id). The resume link's token and the typed code are never stored: the row keeps
    the token's SHA-256 and a keyed HMAC of the code (both UNIQUE: one index probe per
    lookup), and a random `seed` from which the service derives both again with a key
    the database does not hold (`secret_key_id` names the master key it came from).
    `nonce_id` is the page's nonce the draft was first saved with: two first saves of
    one page at once make one draft (UNIQUE)."""

    __tablename__ = "form_drafts"
    __table_args__ = (Index("ix_form_drafts_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("drf_"))
    organization_id: Mapped[str] = mapped_column(String(40))
    # A draft never keeps a form from being deleted: it goes with it.
    form_id: Mapped[str] = mapped_column(String(40), ForeignKey("forms.id", ondelete="CASCADE"))
    public_id: Mapped[str] = mapped_column(String(64))
    form_version: Mapped[int] = mapped_column(Integer)
    nonce_id: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    seed: Mapped[bytes] = mapped_column(LargeBinary)
    secret_key_id: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
