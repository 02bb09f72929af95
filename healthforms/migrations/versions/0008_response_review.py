"""add the review of responses: status new/reviewed/filed (who, when) and staff notes

Revision ID: 0008_response_review
Revises: 0007_totp_recovery_codes
Create Date: 2026-12-06 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_response_review"
down_revision: str | None = "0007_totp_recovery_codes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.add_column(
            sa.Column("review_status", sa.String(length=16), nullable=False, server_default="new")
        )
        batch.add_column(sa.Column("reviewed_by", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("filed_by", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("filed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_responses_form_review", "responses", ["form_id", "review_status", "submitted_at"]
    )
    op.create_table(
        "response_notes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("response_id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("author_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["response_id"],
            ["responses.id"],
            name=op.f("fk_response_notes_response_id_responses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_notes")),
    )
    op.create_index(
        op.f("ix_response_notes_response_id"), "response_notes", ["response_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_response_notes_response_id"), table_name="response_notes")
    op.drop_table("response_notes")
    op.drop_index("ix_responses_form_review", table_name="responses")
    with op.batch_alter_table("responses") as batch:
        for column in ("filed_at", "filed_by", "reviewed_at", "reviewed_by", "review_status"):
            batch.drop_column(column)
