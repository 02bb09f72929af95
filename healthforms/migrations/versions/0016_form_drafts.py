"""add form drafts: a patient's saved, unsent answers (sealed), resumable by link or code

Revision ID: 0016_form_drafts
Revises: 0014_patient_requests
Create Date: 2026-12-06 13:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_form_drafts"
down_revision: str | None = "0014_patient_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "form_drafts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("form_id", sa.String(length=40), nullable=False),
        sa.Column("public_id", sa.String(length=64), nullable=False),
        sa.Column("form_version", sa.Integer(), nullable=False),
        sa.Column("nonce_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("seed", sa.LargeBinary(), nullable=False),
        sa.Column("secret_key_id", sa.String(length=32), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["form_id"], ["forms.id"], name="fk_form_drafts_form_id_forms", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_form_drafts"),
        sa.UniqueConstraint("nonce_id", name="uq_form_drafts_nonce_id"),
        sa.UniqueConstraint("token_hash", name="uq_form_drafts_token_hash"),
        sa.UniqueConstraint("code_hash", name="uq_form_drafts_code_hash"),
    )
    op.create_index("ix_form_drafts_expires_at", "form_drafts", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_form_drafts_expires_at", table_name="form_drafts")
    op.drop_table("form_drafts")
