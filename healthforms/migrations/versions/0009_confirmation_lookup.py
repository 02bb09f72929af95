"""add an index to find a response by the confirmation code a patient reads out

Revision ID: 0009_confirmation_lookup
Revises: 0008_response_review
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009_confirmation_lookup"
down_revision: str | None = "0008_response_review"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_responses_org_confirmation", "responses", ["organization_id", "confirmation"]
    )


def downgrade() -> None:
    op.drop_index("ix_responses_org_confirmation", table_name="responses")
