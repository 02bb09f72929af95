"""Alembic, driven from code: `healthforms migrate`, `serve` on the embedded default, tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from healthforms.db.engine import create_engine
from healthforms.files import private_file

# The Alembic scripts sit at the top of the package (they import every feature's models).
MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' would be read as interpolation by configparser.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` up to `revision` (blocking; call from sync code)."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            # Created 0600 before SQLite opens it: its -wal and -shm files take the
            # database file's permissions.
            private_file(Path(database))
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


async def current_revision(url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    engine = create_engine(url)

    def _read(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_read)
    finally:
        await engine.dispose()


def upgrade_in_thread(url: str) -> None:
    """Run `upgrade` from inside a running event loop (Alembic's env.py uses asyncio.run)."""
    import threading

    errors: list[BaseException] = []

    def _run() -> None:
        try:
            upgrade(url)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=_run, name="alembic-upgrade")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


__all__ = ["asyncio", "current_revision", "head_revision", "upgrade", "upgrade_in_thread"]
