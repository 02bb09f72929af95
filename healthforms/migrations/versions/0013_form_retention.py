"""add a form's retention period (days a response is kept) and the purge's index

Revision ID: 0013_form_retention
Revises: 0012_outbox_alerts
Create Date: 2026-12-06 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_form_retention"
down_revision: str | None = "0012_outbox_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: every existing form keeps its responses for ever, as before.
    with op.batch_alter_table("forms") as batch:
        batch.add_column(sa.Column("retention_days", sa.Integer(), nullable=True))
    op.create_index("ix_responses_form_submitted", "responses", ["form_id", "submitted_at"])


def downgrade() -> None:
    op.drop_index("ix_responses_form_submitted", table_name="responses")
    with op.batch_alter_table("forms") as batch:
        batch.drop_column("retention_days")
