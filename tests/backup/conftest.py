"""Backup fixtures: operator backup keys, and fresh empty databases to restore into."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.cli.test_config import run_cli
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support import legs


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def make_keypair(folder: Path) -> KeyPair:
    folder.mkdir(parents=True, exist_ok=True)
    private = folder / "backup.key"
    result = run_cli("keys", "backup-keypair", "--out", str(private), env={})
    assert result.returncode == 0, result.stderr
    public = folder / "backup.pub"
    public.write_text(result.stdout)
    return KeyPair(private=private, public=public)


@pytest.fixture
def backup_keys(tmp_path: Path) -> KeyPair:
    return make_keypair(tmp_path / "keys")


def cli_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_DATA_DIR": str(data_dir),
        "HEALTHFORMS_LOG_LEVEL": "warning",
        **extra,
    }


def empty_database(tmp_dir: Path) -> str:
    """A database with nothing in it (no schema): what `restore` accepts."""
    if legs.database_is_postgres():
        name = f"hf_test_{secrets.token_hex(6)}"
        asyncio.run(legs.pg_admin(legs.TEST_DATABASE, f'CREATE DATABASE "{name}"'))
        return make_url(legs.TEST_DATABASE).set(database=name).render_as_string(False)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{tmp_dir / f'restored_{secrets.token_hex(4)}.db'}"


@pytest.fixture
def empty_target_url(tmp_path: Path) -> Iterator[str]:
    url = empty_database(tmp_path / "target")
    yield url
    legs.drop_database(url)


def destroy_database(url: str) -> None:
    """What a disaster does: the database is gone (dropped, or its files deleted)."""
    if url.startswith("postgresql"):
        legs.drop_database(url)
        return
    path = Path(make_url(url).database or "")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def database_is_empty(url: str) -> bool:
    """Whether `url` holds no table (checked apart from the code under test)."""
    if url.startswith("postgresql"):
        return asyncio.run(_pg_table_count(url)) == 0
    path = Path(make_url(url).database or "")
    return not path.exists() or path.stat().st_size == 0


async def _pg_table_count(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
        )
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def backup_keys_shared(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_keypair(tmp_path_factory.mktemp("shared-keys"))


@pytest.fixture(scope="session")
def shared_backup(
    database_url: str, backup_keys_shared: KeyPair, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One backup of the worker's database for the tests that only try to restore it
    (and must be refused): taken once per test process, never modified in place."""
    folder = tmp_path_factory.mktemp("shared-backup")
    archive = folder / "shared.hfbk"
    taken = run_cli(
        "backup",
        "--out",
        str(archive),
        "--key-file",
        str(backup_keys_shared.public),
        env=cli_env(database_url, folder / "data"),
    )
    assert taken.returncode == 0, taken.stdout + taken.stderr
    return archive
