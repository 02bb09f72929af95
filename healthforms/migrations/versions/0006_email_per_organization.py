"""make user emails unique per organisation, not across the service

Revision ID: 0006_email_per_organization
Revises: 0005_audit_chains
Create Date: 2026-12-06 05:00:00

An email taken by another clinic answered 409 `email_taken`, so any admin could probe
which addresses other clinics use. Emails are now unique within an organisation; sign-in
by email tries each account with that address (identity/login.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006_email_per_organization"
down_revision: str | None = "0005_audit_chains"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite rebuilds the table for this (batch mode); the service's connections run with
    # foreign keys on, which would make dropping the old table cascade into the tables
    # that reference users. Turn them off for this migration's connection.
    _foreign_keys(on=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("uq_users_email", type_="unique")
        batch_op.create_unique_constraint(
            "uq_users_organization_id_email", ["organization_id", "email"]
        )
        batch_op.create_index("ix_users_email", ["email"], unique=False)
    _foreign_keys(on=True)


def downgrade() -> None:
    _foreign_keys(on=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_email")
        batch_op.drop_constraint("uq_users_organization_id_email", type_="unique")
        batch_op.create_unique_constraint("uq_users_email", ["email"])
    _foreign_keys(on=True)


def _foreign_keys(*, on: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
