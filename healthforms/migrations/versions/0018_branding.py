"""add organisation branding (name, accent colour, logo) and a form's thank-you message

Revision ID: 0018_branding
Revises: 0017_response_scores
Create Date: 2026-12-06 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_branding"
down_revision: str | None = "0017_response_scores"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organization_branding",
        sa.Column("organization_id", sa.String(40), nullable=False),
        sa.Column("display_name", sa.String(120), nullable=True),
        sa.Column("accent_color", sa.String(7), nullable=True),
        sa.Column("logo", sa.LargeBinary(), nullable=True),
        sa.Column("logo_type", sa.String(16), nullable=True),
        sa.Column("logo_sha256", sa.String(64), nullable=True),
        sa.Column("logo_width", sa.Integer(), nullable=True),
        sa.Column("logo_height", sa.Integer(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_organization_branding_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", name="pk_organization_branding"),
    )
    # Nullable: a form without one shows the default confirmation text, as before.
    with op.batch_alter_table("forms") as batch:
        batch.add_column(sa.Column("thank_you_message", sa.Text(), nullable=True))
    with op.batch_alter_table("form_versions") as batch:
        batch.add_column(sa.Column("thank_you_message", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("form_versions") as batch:
        batch.drop_column("thank_you_message")
    with op.batch_alter_table("forms") as batch:
        batch.drop_column("thank_you_message")
    op.drop_table("organization_branding")
