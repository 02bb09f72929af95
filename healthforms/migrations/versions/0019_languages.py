"""add languages: a form's texts in other languages, the language of a response

Revision ID: 0019_languages
Revises: 0016_form_drafts
Create Date: 2026-12-06 13:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_languages"
down_revision: str | None = "0016_form_drafts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable additions: existing forms have no translations, existing responses were
    # answered in English. batch_alter_table keeps SQLite happy.
    with op.batch_alter_table("forms") as batch:
        batch.add_column(sa.Column("translations", sa.JSON(), nullable=True))
    with op.batch_alter_table("form_versions") as batch:
        batch.add_column(sa.Column("translations", sa.JSON(), nullable=True))
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("language", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("language")
    with op.batch_alter_table("form_versions") as batch:
        batch.drop_column("translations")
    with op.batch_alter_table("forms") as batch:
        batch.drop_column("translations")
