"""Submitted responses (encrypted) and their generated PDFs (encrypted)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from healthforms.clock import utcnow
from healthforms.db.base import Base, UTCDateTime, new_id


class ResponseRow(Base):
    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rsp_"))
    organization_id: Mapped[str] = mapped_column(String(40), index=True)
    form_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("forms.id", ondelete="RESTRICT"), index=True
    )
    form_version_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("form_versions.id", ondelete="RESTRICT")
    )
    form_version: Mapped[int] = mapped_column(Integer)
    # The nonce id: UNIQUE, so one nonce stores one response even if Redis was flushed.
    nonce_id: Mapped[str] = mapped_column(String(64), unique=True)
    # HMAC of the canonical answers: tells a resend (same answers) from a reuse.
    answers_digest: Mapped[str] = mapped_column(String(64))
    confirmation: Mapped[str] = mapped_column(String(32))
    # Envelope-encrypted JSON of the answers and signature evidence
    # (crypto/envelope.py; AAD = response id + form id).
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The language the patient answered in (languages.py); None: before languages, English.
    language: Mapped[str | None] = mapped_column(String(8), nullable=True, default=None)
    # The review: new -> reviewed -> filed, with who moved it there and when.
    review_status: Mapped[str] = mapped_column(String(16), default="new", server_default="new")
    reviewed_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    filed_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    filed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_responses_form_review", "form_id", "review_status", "submitted_at"),
        Index("ix_responses_org_confirmation", "organization_id", "confirmation"),
        # The retention purge's range: a form's responses submitted before a cutoff.
        Index("ix_responses_form_submitted", "form_id", "submitted_at"),
    )


class ResponseNote(Base):
    """A staff member's note on a response: PHI like the answers, so encrypted the same
    way (AAD = note id + response id)."""

    __tablename__ = "response_notes"
    __table_args__ = (Index("ix_response_notes_response_id", "response_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("nte_"))
    response_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("responses.id", ondelete="CASCADE")
    )
    organization_id: Mapped[str] = mapped_column(String(40))
    author_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))


class ResponseIdentity(Base):
    """Who the patient is, copied from the answers to the fields that identify them
    (responses/patients.py): sealed like the answers (AAD = response id), small, so the
    responses list decrypts only this."""

    __tablename__ = "response_identities"

    response_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("responses.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[str] = mapped_column(String(40))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))


class ResponseScores(Base):
    """A response's calculated scores (forms/scores.py), copied from its sealed answers
    into a small sealed record of their own (AAD = response id), so the responses list
    shows them without decrypting every answer (responses/scores.py)."""

    __tablename__ = "response_scores"

    response_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("responses.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[str] = mapped_column(String(40))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))


class ResponseSearchToken(Base):
    """A blind index: a keyed HMAC of one normalised name word or the date of birth of a
    response's patient (never the value). `key_id` names the master key it is under."""

    __tablename__ = "response_search_tokens"
    __table_args__ = (
        Index("ix_response_search_tokens_org_token", "organization_id", "token"),
        Index("ix_response_search_tokens_response_id", "response_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    response_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("responses.id", ondelete="CASCADE")
    )
    organization_id: Mapped[str] = mapped_column(String(40))
    token: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(32))


class ResponsePdf(Base):
    """The one generated PDF of a response, stored encrypted and served again."""

    __tablename__ = "response_pdfs"

    response_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("responses.id", ondelete="CASCADE"), primary_key=True
    )
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    # Fencing number of the pdf-gen lock that wrote it: an expired holder cannot overwrite.
    fence: Mapped[int] = mapped_column(BigInteger)
    generated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
