"""add the patient's identity on responses: a sealed copy and blind indexes

Revision ID: 0011_patient_identity
Revises: 0010_audit_detail
Create Date: 2026-12-06 10:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_patient_identity"
down_revision: str | None = "0010_audit_detail"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "response_identities",
        sa.Column("response_id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["response_id"],
            ["responses.id"],
            name="fk_response_identities_response_id_responses",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("response_id", name="pk_response_identities"),
    )
    op.create_table(
        "response_search_tokens",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("response_id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["response_id"],
            ["responses.id"],
            name="fk_response_search_tokens_response_id_responses",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_response_search_tokens"),
    )
    op.create_index(
        "ix_response_search_tokens_org_token",
        "response_search_tokens",
        ["organization_id", "token"],
    )
    op.create_index(
        "ix_response_search_tokens_response_id", "response_search_tokens", ["response_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_response_search_tokens_response_id", table_name="response_search_tokens")
    op.drop_index("ix_response_search_tokens_org_token", table_name="response_search_tokens")
    op.drop_table("response_search_tokens")
    op.drop_table("response_identities")
