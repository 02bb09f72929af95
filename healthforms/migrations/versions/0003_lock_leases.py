"""add lock_leases: the database fallback of the lock service

Revision ID: 0003_lock_leases
Revises: 0002_forms_responses
Create Date: 2026-11-25 22:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_lock_leases"
down_revision: str | None = "0002_forms_responses"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lock_leases",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("token", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_lock_leases")),
    )


def downgrade() -> None:
    op.drop_table("lock_leases")
