"""add patient requests: a personal single-use link to a form, its sealed contact

Revision ID: 0014_patient_requests
Revises: 0013_form_retention
Create Date: 2026-12-08 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_patient_requests"
down_revision: str | None = "0013_form_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patient_requests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("form_id", sa.String(length=40), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("response_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["form_id"],
            ["forms.id"],
            name="fk_patient_requests_form_id_forms",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["response_id"],
            ["responses.id"],
            name="fk_patient_requests_response_id_responses",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_patient_requests"),
        sa.UniqueConstraint("token_hash", name="uq_patient_requests_token_hash"),
    )
    op.create_index(
        "ix_patient_requests_org_form_created",
        "patient_requests",
        ["organization_id", "form_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_patient_requests_org_form_created", table_name="patient_requests")
    op.drop_table("patient_requests")
