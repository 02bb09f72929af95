"""audit chains per organisation, keyed (HMAC), with the client's own request id apart

Revision ID: 0005_audit_chains
Revises: 0004_session_revocations
Create Date: 2026-12-06 04:30:00

Rows written before this revision keep their unkeyed SHA-256 chain: they become the
`legacy` chain (seq = their old id, key_id NULL) and `audit verify` checks them the old
way. New events go to one chain per organisation (`-` for events of no organisation),
each linked by HMAC-SHA256 under a key that is not in the database.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_audit_chains"
down_revision: str | None = "0004_session_revocations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("client_request_id", sa.String(length=64), nullable=True))
    op.execute("UPDATE audit_events SET chain = 'legacy', seq = id")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("chain", existing_type=sa.String(length=40), nullable=False)
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_index("uq_audit_events_chain_seq", ["chain", "seq"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        # Ids are no longer chain positions: a sequence hands them out without a lock
        # (SQLite's INTEGER PRIMARY KEY does the same by itself).
        op.execute("CREATE SEQUENCE IF NOT EXISTS audit_events_id_seq OWNED BY audit_events.id")
        op.execute(
            "SELECT setval('audit_events_id_seq', COALESCE((SELECT max(id) FROM audit_events), 0)"
            " + 1, false)"
        )
        op.execute(
            "ALTER TABLE audit_events ALTER COLUMN id SET DEFAULT nextval('audit_events_id_seq')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE audit_events ALTER COLUMN id DROP DEFAULT")
        op.execute("DROP SEQUENCE IF EXISTS audit_events_id_seq")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("uq_audit_events_chain_seq")
        batch_op.drop_column("client_request_id")
        batch_op.drop_column("key_id")
        batch_op.drop_column("seq")
        batch_op.drop_column("chain")
