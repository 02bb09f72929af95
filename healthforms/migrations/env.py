"""Alembic environment: runs migrations on the async engine for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

# Every feature's models, so that Base.metadata knows all tables. This file is
# Alembic's entry point (it runs it as a script), the top of the import graph like
# app.py and cli.py: nothing in the package imports it.
from healthforms.alerts.models import Alert  # noqa: F401
from healthforms.audit.models import AuditEventRow  # noqa: F401
from healthforms.branding.models import OrganizationBranding  # noqa: F401
from healthforms.db.base import Base
from healthforms.db.engine import create_engine
from healthforms.forms.models import AlertSubscription, Form, FormVersion  # noqa: F401
from healthforms.identity.models import Organization, SessionRevocation, User  # noqa: F401
from healthforms.outbox.models import Delivery, OutboxMessage  # noqa: F401
from healthforms.patient_requests.models import PatientRequest  # noqa: F401
from healthforms.responses.models import ResponsePdf, ResponseRow  # noqa: F401
from healthforms.security.fencing import LockFence, LockLease  # noqa: F401
from healthforms.submissions.drafts.models import FormDraft  # noqa: F401
from healthforms.uploads.models import Upload, UploadBlob  # noqa: F401
from healthforms.webhooks.models import WebhookAttempt, WebhookEndpoint  # noqa: F401

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
