"""A PostgreSQL instance of one test alone, so a drill may stop it without touching
the shared cluster on 127.0.0.1:5432 that other tests and CI use.

initdb and pg_ctl run as the `postgres` OS user (PostgreSQL refuses to run as root)
in a temporary directory that user owns, on a free port, trust auth on loopback only.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from healthforms.redis.embedded import free_port


class PrivatePostgresUnavailable(RuntimeError):
    """This machine cannot run a private PostgreSQL (the message says why)."""


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise PrivatePostgresUnavailable("no /usr/lib/postgresql/*/bin/initdb on this machine")
    return Path(found[-1]).parent


def _as_postgres(*argv: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *argv]
    else:
        command = list(argv)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)


@dataclass
class PrivatePostgres:
    root: Path
    port: int
    bin_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    @classmethod
    def create(cls) -> PrivatePostgres:
        bin_dir = _bin_dir()
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            raise PrivatePostgresUnavailable("running as root without runuser")
        root = Path(tempfile.mkdtemp(prefix="hf-pg-"))
        root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(root, user="postgres", group="postgres")
        server = cls(root=root, port=free_port(), bin_dir=bin_dir)
        result = _as_postgres(
            str(bin_dir / "initdb"),
            "-D",
            str(server.data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        if result.returncode != 0:
            server.destroy()
            raise PrivatePostgresUnavailable(f"initdb failed: {result.stderr[-800:]}")
        server.start()
        return server

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        result = _as_postgres(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )
        if result.returncode != 0:
            log = (self.root / "postgres.log").read_text(errors="replace")[-800:]
            raise PrivatePostgresUnavailable(f"pg_ctl start failed: {result.stderr}{log}")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"
        )

    def is_running(self) -> bool:
        result = _as_postgres(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status")
        return result.returncode == 0

    def create_database(self, name: str) -> str:
        import asyncio

        import asyncpg

        async def create() -> None:
            deadline = time.monotonic() + 10
            while True:
                try:
                    conn = await asyncpg.connect(
                        f"postgresql://postgres@127.0.0.1:{self.port}/postgres", timeout=3
                    )
                    break
                except (OSError, asyncpg.PostgresError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return self.url(name)

    def destroy(self) -> None:
        if self.data_dir.exists():
            self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)
