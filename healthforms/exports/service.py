"""Exports of a form's responses (docs/exports.md): the responses the list shows as CSV or
XLSX.

Every export goes the same way, so the audit trail always names what left:
1. select: the ids the list's own filters keep (responses/service.py), at most
   MAX_EXPORT_ROWS;
2. record: ONE event naming those ids, committed before the first byte of the file
   leaves (the routes record it; a failure to record is a 503 and no file);
3. write: the rows of exactly those ids, read and decrypted READ_BATCH at a time, each
   batch in a short database session of its own, so a slow download holds no pooled
   connection and at most one batch of answers is in memory.

CSV streams as it is written: no copy in memory or on disk. An XLSX file is a zip that
is only valid once finished, so it is written first (xlsxwriter's constant_memory mode
puts the rows in temporary files of a private 0700 directory, removed when the download
ends), recorded with the ids it holds, then streamed.

A response that will not decrypt never fails an export: its row says so (the
Unreadable column) and the count is logged.
Logs name ids and counts only, never an answer.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import IO

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import utcnow
from healthforms.crypto.keys import KeyRing
from healthforms.errors import HealthformsError
from healthforms.exports.sheets import CSV_BOM, CsvSheet, XlsxSheet
from healthforms.exports.table import Cell, ExportTable, table_of
from healthforms.forms.models import FormVersion
from healthforms.pdf.service import file_stem
from healthforms.responses.models import ResponseRow
from healthforms.responses.service import (
    ResponseContent,
    ResponseFilter,
    ResponseUnreadable,
    form_response_ids,
    get_form,
    open_response,
    responses_by_id,
)
from healthforms.state import AppState

log = structlog.get_logger("healthforms.exports")

# An export's ids go into its one audit event: a bound on both. More is 422; `from` and
# `to` cut a larger form into several exports.
MAX_EXPORT_ROWS = 10_000
# Responses read and decrypted at once. Answers are at most HEALTHFORMS_MAX_ANSWERS_BYTES
# (512 KiB) each, so a batch holds at most 32 MiB of them; typically a few hundred KiB.
READ_BATCH = 64
STREAM_CHUNK = 64 * 1024

FORM_RESOURCE = "form"


class ExportFormat(StrEnum):
    CSV = "csv"
    XLSX = "xlsx"


class ExportTooLarge(HealthformsError):
    status_code, code = 422, "export_too_large"
    message = (
        f"An export holds at most {MAX_EXPORT_ROWS} responses. "
        "Choose a shorter period with from and to."
    )

    def __init__(self) -> None:
        super().__init__(extra={"limit": MAX_EXPORT_ROWS})


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """What an export will hold, before anything is decrypted."""

    organization_id: str
    form_id: str
    title: str
    table: ExportTable
    response_ids: list[str]

    def filename(self, what: str, extension: str, today: date) -> str:
        """`<form title> <what> <yyyy-mm-dd>.<extension>`, safe for Content-Disposition."""
        stem = file_stem(self.title, what, today.isoformat())
        return f"{stem or 'responses'}.{extension}"


@dataclass(frozen=True, slots=True)
class RowBatch:
    ids: list[str]
    cells: list[list[Cell]]


@dataclass(slots=True)
class Tally:
    """What an export wrote, for its closing log line."""

    rows: int = 0
    unreadable: int = 0
    written: list[str] = field(default_factory=list)


async def plan_export(
    session: AsyncSession, organization_id: str, form_id: str, filters: ResponseFilter
) -> ExportPlan:
    """The form's columns and the ids `filters` keeps, in the list's order; 404 for
    another organisation's form, 422 `export_too_large` past MAX_EXPORT_ROWS."""
    form = await get_form(session, organization_id, form_id)
    ids = await form_response_ids(
        session, organization_id, form_id, filters, limit=MAX_EXPORT_ROWS + 1
    )
    if len(ids) > MAX_EXPORT_ROWS:
        raise ExportTooLarge()
    versions = await session.execute(select(FormVersion).where(FormVersion.form_id == form.id))
    return ExportPlan(
        organization_id=organization_id,
        form_id=form.id,
        title=form.title,
        table=table_of(list(versions.scalars())),
        response_ids=ids,
    )


def _cells(
    keys: KeyRing, table: ExportTable, rows: Sequence[ResponseRow], tally: Tally
) -> RowBatch:
    """Decrypt and lay out a batch (CPU: run in a worker thread)."""
    cells: list[list[Cell]] = []
    for row in rows:
        content: ResponseContent | None
        try:
            content = open_response(keys, row)  # logs the failure by id, never the payload
        except ResponseUnreadable:
            content = None
            tally.unreadable += 1
        cells.append(table.row(row, content))
    tally.rows += len(rows)
    ids = [row.id for row in rows]
    tally.written.extend(ids)
    return RowBatch(ids=ids, cells=cells)


class ExportService:
    def __init__(self, state: AppState) -> None:
        self.state = state

    async def batches(self, plan: ExportPlan, tally: Tally) -> AsyncIterator[RowBatch]:
        """The plan's rows, READ_BATCH at a time, in its order. A response deleted since
        the plan was made is left out."""
        ids = plan.response_ids
        for start in range(0, len(ids), READ_BATCH):
            async with self.state.db.sessions() as session:
                rows = await responses_by_id(
                    session, plan.organization_id, plan.form_id, ids[start : start + READ_BATCH]
                )
            yield await asyncio.to_thread(_cells, self.state.keys, plan.table, rows, tally)

    async def csv_stream(self, plan: ExportPlan) -> AsyncIterator[bytes]:
        """The CSV file, a batch of rows per chunk. Record the export before the first."""
        sheet, tally, finished = CsvSheet(), Tally(), False
        try:
            yield CSV_BOM + sheet.rows([plan.table.headers])
            async for batch in self.batches(plan, tally):
                yield sheet.rows(batch.cells)
            finished = True
        finally:
            _log_written(plan, ExportFormat.CSV, tally, finished=finished)

    async def xlsx_file(self, plan: ExportPlan) -> BuiltFile:
        """The XLSX file, written whole into a private temporary directory; the caller
        records the export (with `written`), then streams it."""
        workdir = tempfile.TemporaryDirectory(prefix="healthforms-export-")
        built = BuiltFile(workdir, (Path(workdir.name) / "export.xlsx").open("w+b"), [])
        tally = Tally(written=built.written)
        try:
            sheet = await asyncio.to_thread(XlsxSheet, built.file, workdir.name)
            await asyncio.to_thread(sheet.header, plan.table.headers)
            async for batch in self.batches(plan, tally):
                await asyncio.to_thread(sheet.rows, batch.cells)
            await asyncio.to_thread(sheet.close)
            built.file.seek(0)
        except BaseException:
            built.cleanup()  # nothing of a half-written file stays behind
            _log_written(plan, ExportFormat.XLSX, tally, finished=False)
            raise
        _log_written(plan, ExportFormat.XLSX, tally, finished=True)
        return built


@dataclass(slots=True)
class BuiltFile:
    """A finished export file in its private directory, removed once streamed (or at
    `cleanup`, whichever comes first; the directory's own finalizer is the last resort)."""

    workdir: tempfile.TemporaryDirectory[str]
    file: IO[bytes]
    written: list[str]

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(self.file.read, STREAM_CHUNK):
                yield chunk
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        self.file.close()
        self.workdir.cleanup()


def _log_written(plan: ExportPlan, kind: ExportFormat, tally: Tally, *, finished: bool) -> None:
    log.info(
        "export_written" if finished else "export_aborted",
        form_id=plan.form_id,
        format=kind.value,
        selected=len(plan.response_ids),
        rows=tally.rows,
        unreadable=tally.unreadable,
    )


def today() -> date:
    return utcnow().date()
