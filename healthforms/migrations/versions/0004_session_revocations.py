"""add session_revocations: ended sessions the database remembers beside Redis

Revision ID: 0004_session_revocations
Revises: 0003_lock_leases
Create Date: 2026-12-06 02:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_session_revocations"
down_revision: str | None = "0003_lock_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_revocations",
        sa.Column("session_hash", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_session_revocations_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_hash", name=op.f("pk_session_revocations")),
    )
    op.create_index(op.f("ix_session_revocations_user_id"), "session_revocations", ["user_id"])
    op.create_index(
        op.f("ix_session_revocations_expires_at"), "session_revocations", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_session_revocations_expires_at"), table_name="session_revocations")
    op.drop_index(op.f("ix_session_revocations_user_id"), table_name="session_revocations")
    op.drop_table("session_revocations")
