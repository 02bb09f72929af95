"""`healthforms check | keys generate | migrate` as an operator runs them."""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthforms.db.migrate import current_revision, head_revision
from healthforms.redis.embedded import EmbeddedRedis, free_port
from tests.cli.test_config import run_cli
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support import legs


@pytest.fixture
def short_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="hf-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def configured_env(database_url: str, redis_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_DATA_DIR": str(data_dir),
        "HEALTHFORMS_LOG_LEVEL": "warning",
    }


def lines_of(output: str, prefix: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(prefix)]


def test_keys_generate_prints_a_fresh_32_byte_key() -> None:
    first = run_cli("keys", "generate", env={})
    second = run_cli("keys", "generate", env={})
    assert first.returncode == 0
    key = first.stdout.strip()
    assert len(base64.b64decode(key, validate=True)) == 32
    assert key != second.stdout.strip()


def test_check_names_redis_and_database_and_exits_0(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    result = run_cli("check", env=configured_env(database_url, redis_url, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (redis_line,) = lines_of(result.stdout, "redis: ok:")
    kind = "redis" if legs.redis_is_external() else "valkey"
    assert f"{kind} " in redis_line and "maxmemory-policy" in redis_line
    (db_line,) = lines_of(result.stdout, "database: ok:")
    backend = "postgresql" if legs.database_is_postgres() else "sqlite"
    assert backend in db_line
    assert "at head" in db_line and head_revision() in db_line
    assert not lines_of(result.stdout, "redis: WARNING")


def test_check_warns_about_an_evicting_policy(database_url: str, tmp_path: Path) -> None:
    with EmbeddedRedis.start(
        tmp_path / "lru",
        binary=legs.private_server_binary(),
        appendonly=False,
        extra_args=["--maxmemory-policy", "allkeys-lru"],
    ) as server:
        result = run_cli("check", env=configured_env(database_url, server.url, tmp_path))
    (warning,) = lines_of(result.stdout, "redis: WARNING:")
    assert "allkeys-lru" in warning and "noeviction" in warning
    assert result.returncode == 0  # a warning, not a failure


def test_check_fails_when_the_database_is_unreachable(redis_url: str, tmp_path: Path) -> None:
    if legs.database_is_postgres():
        db_url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    else:
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    result = run_cli("check", env=configured_env(db_url, redis_url, tmp_path))
    assert result.returncode != 0
    assert lines_of(result.stdout, "redis: ok:")
    assert lines_of(result.stdout, "database: FAILED:")
    assert "Traceback" not in result.stderr


def test_check_fails_when_redis_is_unreachable_without_leaking_its_password(
    database_url: str, tmp_path: Path
) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    result = run_cli("check", env=configured_env(database_url, url, tmp_path))
    assert result.returncode != 0
    assert lines_of(result.stdout, "redis: FAILED:")
    assert "hunter2-secret" not in result.stdout + result.stderr


def test_check_on_the_embedded_default_after_migrate(short_dir: Path) -> None:
    env = {
        "HEALTHFORMS_DATA_DIR": str(short_dir),
        "HEALTHFORMS_REDIS_SERVER_BIN": legs.private_server_binary(),
        "HEALTHFORMS_LOG_LEVEL": "warning",
    }
    before = run_cli("check", env=env)
    assert before.returncode != 0  # never migrated: says so
    assert "healthforms migrate" in before.stdout
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    after = run_cli("check", env=env)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "(embedded)" in lines_of(after.stdout, "redis: ok:")[0]
    assert "sqlite" in lines_of(after.stdout, "database: ok:")[0]


def test_migrate_brings_a_fresh_database_to_head(tmp_path: Path) -> None:
    url = _empty_database(tmp_path)
    try:
        assert asyncio.run(current_revision(url)) is None
        result = run_cli(
            "migrate",
            env={"DATABASE_URL": url, "HEALTHFORMS_DATA_DIR": str(tmp_path)},
        )
        assert result.returncode == 0, result.stderr
        assert head_revision() in result.stdout
        assert asyncio.run(current_revision(url)) == head_revision()
        again = run_cli("migrate", env={"DATABASE_URL": url, "HEALTHFORMS_DATA_DIR": str(tmp_path)})
        assert again.returncode == 0  # idempotent
    finally:
        legs.drop_database(url)


def _empty_database(tmp_path: Path) -> str:
    """A database nobody migrated yet (PostgreSQL on leg B, SQLite on leg A)."""
    import secrets

    from sqlalchemy.engine import make_url

    if legs.database_is_postgres():
        name = f"hf_test_{secrets.token_hex(6)}"
        asyncio.run(legs._pg_admin(f'CREATE DATABASE "{name}"'))
        return make_url(legs.TEST_DATABASE).set(database=name).render_as_string(hide_password=False)
    return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
