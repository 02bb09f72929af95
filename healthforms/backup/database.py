"""Consistent database snapshots and their restore, for SQLite and PostgreSQL.

SQLite: the online backup API (sqlite3 `Connection.backup`) copies the pages of one
read transaction while the service keeps writing; the figures (table counts, audit
chain heads, schema revision) are then read from the copy itself, so they describe
exactly what was copied.

PostgreSQL: a REPEATABLE READ transaction exports its snapshot (`pg_export_snapshot()`),
the figures are read in it, and `pg_dump --snapshot` dumps that same snapshot while the
transaction stays open: figures and dump agree to the row, with no lock beyond what
pg_dump itself takes. pg_dump/pg_restore get the connection through libpq's variables
(PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE...) and the password through a private
PGPASSFILE: never on a command line that `ps` shows.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from healthforms.audit.store import ChainHead
from healthforms.db.engine import backend_name, create_engine
from healthforms.files import private_file

_HEADS = (
    "SELECT e.chain, e.seq, e.hash FROM audit_events e JOIN "
    "(SELECT chain, max(seq) AS seq FROM audit_events GROUP BY chain) n "
    "ON e.chain = n.chain AND e.seq = n.seq ORDER BY e.chain"
)
PG_TOOL_TIMEOUT_S = 6 * 3600.0


class SnapshotError(RuntimeError):
    """The snapshot or the restore failed; the message is safe to print (no URL,
    no password)."""


@dataclass
class Figures:
    """What a snapshot holds: schema revision, rows per table, audit chain heads."""

    revision: str | None
    counts: dict[str, int]
    heads: list[ChainHead] = field(default_factory=list)


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise SnapshotError("the SQLite database URL names no file")
    return Path(database)


def _count_sql(table: str) -> str:
    # The name comes from the database's own catalogue, quoted as an identifier.
    quoted = table.replace('"', '""')
    return f'SELECT count(*) FROM "{quoted}"'  # noqa: S608


# SQLite ------------------------------------------------------------------------------


def _sqlite_figures(conn: sqlite3.Connection) -> Figures:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    counts = {t: int(conn.execute(_count_sql(t)).fetchone()[0]) for t in tables}
    revision = None
    if "alembic_version" in counts:
        found = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = None if found is None else str(found[0])
    heads: list[ChainHead] = []
    if "audit_events" in counts:
        heads = [ChainHead(str(c), int(s), str(h)) for c, s, h in conn.execute(_HEADS)]
    return Figures(revision=revision, counts=counts, heads=heads)


def snapshot_sqlite(url: str, target: Path) -> Figures:
    """Copy the live database to `target` (online, consistent) and read its figures."""
    source_path = sqlite_path(url)
    if not source_path.is_file():
        raise SnapshotError(f"no SQLite database at {source_path}")
    private_file(target)
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=30)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy, pages=1024)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            return _sqlite_figures(copy)
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise SnapshotError(f"SQLite backup failed: {exc}") from None
    finally:
        source.close()


def sqlite_target_in_use(url: str) -> str | None:
    """Why `url` is not a fresh target (None: it is)."""
    path = sqlite_path(url)
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-journal")):
        if candidate.exists() and candidate.stat().st_size > 0:
            return f"{candidate} exists and is not empty"
    return None


def restore_sqlite(snapshot: Path, url: str) -> None:
    """Put the snapshot in place as the database file of `url` (checked, then renamed
    into place: a crash leaves no half-written database)."""
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.restoring")
    private_file(partial)
    shutil.copyfile(snapshot, partial)
    conn = sqlite3.connect(partial)
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    if verdict != "ok":
        partial.unlink()
        raise SnapshotError("the SQLite snapshot fails its integrity check")
    with partial.open("rb+") as handle:
        os.fsync(handle.fileno())
    for stale in (Path(f"{path}-shm"),):
        stale.unlink(missing_ok=True)
    os.replace(partial, path)


def read_sqlite_figures(url: str) -> Figures:
    conn = sqlite3.connect(f"file:{sqlite_path(url)}?mode=ro", uri=True)
    try:
        return _sqlite_figures(conn)
    finally:
        conn.close()


# PostgreSQL --------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """pg_dump / pg_restore: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if candidates:
        return candidates[-1]
    raise SnapshotError(f"{name} not found (install the PostgreSQL client, e.g. postgresql-client)")


def libpq_env(url: str, workdir: Path) -> dict[str, str]:
    """The libpq environment that connects as `url` (an asyncpg SQLAlchemy URL) does;
    the password goes in a 0600 PGPASSFILE inside `workdir`."""
    parsed: URL = make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    query = {k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items()}
    host = query.pop("host", None) or parsed.host or "localhost"
    env["PGHOST"] = host
    env["PGPORT"] = str(parsed.port or 5432)
    env["PGDATABASE"] = parsed.database or "postgres"
    if parsed.username:
        env["PGUSER"] = parsed.username
    ssl = query.pop("ssl", None) or query.pop("sslmode", None)
    if ssl is not None:
        env["PGSSLMODE"] = {"true": "require", "false": "disable"}.get(ssl.lower(), ssl)
    for name, variable in (("sslrootcert", "PGSSLROOTCERT"), ("sslcert", "PGSSLCERT")):
        if name in query:
            env[variable] = query.pop(name)
    if "sslkey" in query:
        env["PGSSLKEY"] = query.pop("sslkey")
    passfile = workdir / "pgpass"
    private_file(passfile)
    if parsed.password is not None:

        def escaped(value: str) -> str:
            return value.replace("\\", "\\\\").replace(":", "\\:")

        passfile.write_text(
            ":".join(escaped(v) for v in ("*", "*", "*", "*", str(parsed.password))) + "\n"
        )
    env["PGPASSFILE"] = str(passfile)
    env["PGCONNECT_TIMEOUT"] = "10"
    env["PGAPPNAME"] = "healthforms-backup"
    return env


async def _pg_figures(conn: AsyncConnection) -> Figures:
    tables = [
        str(t)
        for t in (
            await conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                    "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
                )
            )
        ).scalars()
    ]
    counts: dict[str, int] = {}
    for table in tables:
        counts[table] = int((await conn.execute(text(_count_sql(table)))).scalar_one())
    revision = None
    if "alembic_version" in counts:
        revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    heads: list[ChainHead] = []
    if "audit_events" in counts:
        heads = [ChainHead(str(c), int(s), str(h)) for c, s, h in await conn.execute(text(_HEADS))]
    return Figures(revision=None if revision is None else str(revision), counts=counts, heads=heads)


async def _run_tool(argv: list[str], env: dict[str, str], what: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(PG_TOOL_TIMEOUT_S):
            _, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SnapshotError(f"{what} timed out") from None
    if process.returncode != 0:
        # libpq's messages name hosts and roles, never the password (it is in PGPASSFILE).
        last = stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise SnapshotError(f"{what} failed (exit {process.returncode}): " + " / ".join(last))


async def snapshot_postgres(url: str, target: Path, workdir: Path) -> Figures:
    """pg_dump (custom format) of one exported snapshot, with that snapshot's figures."""
    dump = pg_tool("pg_dump")
    env = libpq_env(url, workdir)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as plain:
            conn = await plain.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            snapshot_id = (await conn.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
            figures = await _pg_figures(conn)
            private_file(target)
            await _run_tool(
                [dump, "--format=custom", f"--snapshot={snapshot_id}", f"--file={target}"],
                env,
                "pg_dump",
            )
            await conn.commit()
        return figures
    except SnapshotError:
        raise
    except Exception as exc:  # noqa: BLE001 - a connection error: say what, not the URL
        raise SnapshotError(f"PostgreSQL snapshot failed: {type(exc).__name__}") from None
    finally:
        await engine.dispose()


async def postgres_target_in_use(url: str) -> str | None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            tables = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM information_schema.tables "
                        "WHERE table_schema = current_schema()"
                    )
                )
            ).scalar_one()
    except Exception as exc:  # noqa: BLE001
        raise SnapshotError(
            f"cannot connect to the target database: {type(exc).__name__}"
        ) from None
    finally:
        await engine.dispose()
    return f"the target database has {tables} table(s)" if tables else None


async def restore_postgres(dump: Path, url: str, workdir: Path) -> None:
    """pg_restore into the (empty) database of `url`, in one transaction: a failure
    leaves it empty. Owners and grants are not restored: the restoring role owns the
    tables; run `healthforms migrate --app-role ...` again for the service's role."""
    await _run_tool(
        [
            pg_tool("pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={make_url(url).database or 'postgres'}",
            str(dump),
        ],
        libpq_env(url, workdir),
        "pg_restore",
    )


async def read_postgres_figures(url: str) -> Figures:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await _pg_figures(conn)
    finally:
        await engine.dispose()


async def read_figures(url: str) -> Figures:
    if backend_name(url) == "sqlite":
        return await asyncio.to_thread(read_sqlite_figures, url)
    return await read_postgres_figures(url)


def private_workdir(near: Path) -> Path:
    """A 0700 scratch directory beside `near` (same file system: renames stay atomic)."""
    near.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".healthforms-backup-", dir=near))
