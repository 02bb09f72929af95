"""The embedded default's data directory and files are private to the service's user
(issue 12, item 14): the SQLite database, its WAL, the generated key, Redis's folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from redis.asyncio import Redis

from healthforms.app import create_app
from tests.conftest import make_settings
from tests.support.identity import create_staff


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_embedded_default_keeps_its_files_private(
    redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # left looser by an earlier install
    os.chmod(data, 0o755)  # noqa: S103 - the looser folder this test expects tightened
    previous = os.umask(0o022)  # the usual umask: files 0644, folders 0755
    try:
        settings = make_settings(
            database_url=None,  # the embedded default: SQLite in the data dir
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            data_dir=data,
            encryption_key=None,  # the embedded default: a generated key file
        )
        application = create_app(settings)
        async with application.router.lifespan_context(application):
            await create_staff(application)  # a write: the WAL exists now
            database = data / "healthforms.db"
            written = [database, data / "encryption.key"]
            written += [p for p in data.glob("healthforms.db-*")]
            assert len(written) >= 3, written  # the database, its -wal (and -shm), the key
            assert _mode(data) == 0o700
            for path in written:
                assert _mode(path) == 0o600, path
    finally:
        os.umask(previous)
