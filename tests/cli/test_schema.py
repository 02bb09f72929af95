"""The migrations build exactly the schema the models describe, on the leg's database."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

import healthforms.app  # noqa: F401 - imports every feature's models
from healthforms.db.base import Base
from healthforms.db.engine import Database


def _differences(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


async def test_migrations_match_the_models(fresh_database_url: str) -> None:
    """fresh_database_url is migrated to head by `healthforms migrate`'s own code."""
    db = Database.connect(fresh_database_url)
    try:
        async with db.engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await db.dispose()
    assert differences == []
