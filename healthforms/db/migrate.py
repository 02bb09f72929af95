"""Alembic, driven from code: `healthforms migrate`, `serve` on the embedded default, tests."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
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


_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
AUDIT_TABLE = "audit_events"


def grant_app_role(url: str, role: str) -> list[str]:
    """PostgreSQL: create `role` (LOGIN, no password: set one with ALTER ROLE) when it
    does not exist, and give it what the running service needs and no more: read and
    write on every table, but only INSERT and SELECT on the audit trail and SELECT on
    the schema version. A service (or anyone holding its credentials) then cannot
    rewrite or delete audit events; migrations keep running as the owner. Idempotent:
    run it again after every `healthforms migrate`. Returns the statements run."""
    if make_url(url).get_backend_name() != "postgresql":
        raise ValueError("--app-role needs PostgreSQL (SQLite has no roles)")
    if not _ROLE_NAME.fullmatch(role):
        raise ValueError("role names are lower-case letters, digits and _ (max 63)")
    quoted = f'"{role}"'
    statements = [
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
        f"'{role}') THEN CREATE ROLE {quoted} LOGIN; END IF; END $$",
        f"GRANT USAGE ON SCHEMA current_schema_placeholder TO {quoted}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "
        f"current_schema_placeholder TO {quoted}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA current_schema_placeholder TO {quoted}",
        f"REVOKE UPDATE, DELETE, TRUNCATE ON {AUDIT_TABLE} FROM {quoted}",
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM {quoted}",
    ]

    async def _run() -> list[str]:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                schema = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
                ran = [s.replace("current_schema_placeholder", f'"{schema}"') for s in statements]
                for statement in ran:
                    await conn.execute(text(statement))
                return ran
        finally:
            await engine.dispose()

    return asyncio.run(_run())


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


__all__ = [
    "current_revision",
    "grant_app_role",
    "head_revision",
    "upgrade",
    "upgrade_in_thread",
]
