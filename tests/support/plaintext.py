"""Is a value anywhere in the database in plaintext? Every column of every table, and on
SQLite the file itself (with its write-ahead log), searched for it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from healthforms.db.base import Base
from healthforms.db.engine import Database


async def tables_holding(db: Database, marker: str) -> list[str]:
    """`table.column` of every value holding `marker` (case-insensitive), as text or
    UTF-8 bytes. Reads every row: for tests with small databases."""
    needle = marker.casefold()
    found: list[str] = []
    async with db.sessions() as session:
        for table in Base.metadata.sorted_tables:
            rows = await session.execute(select(*table.columns))
            for row in rows:
                for column, value in zip(table.columns, row, strict=True):
                    if isinstance(value, bytes | bytearray | memoryview):
                        text = bytes(value).decode("utf-8", "replace")
                    else:
                        text = str(value)
                    if needle in text.casefold():
                        found.append(f"{table.name}.{column.name}")
    return sorted(set(found))


def sqlite_files_holding(url: str, marker: str) -> list[str]:
    """The SQLite database files (main, -wal, -journal) whose bytes hold `marker`."""
    if not url.startswith("sqlite"):
        return []
    path = Path(url.split("///", 1)[1].split("?", 1)[0])
    hits = []
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-journal")):
        if candidate.exists() and marker.encode() in candidate.read_bytes():
            hits.append(candidate.name)
    return hits
