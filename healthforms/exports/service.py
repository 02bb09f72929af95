"""Exports of a form's responses (docs/exports.md): the responses the list shows as CSV or
XLSX, and the PDFs of a selection as one ZIP.

Every export goes the same way, so the audit trail always names what left:
1. select: the ids the list's own filters keep (responses/service.py), at most
   MAX_EXPORT_ROWS, or the selection's ids, all checked to be the form's;
2. record: ONE event naming those ids, committed before the first byte of the file
   leaves (the routes record it; a failure to record is a 503 and no file);
3. write: the rows of exactly those ids, read and decrypted READ_BATCH at a time, each
   batch in a short database session of its own, so a slow download holds no pooled
   connection and at most one batch of answers is in memory.

CSV streams as it is written: no copy in memory or on disk. An XLSX file is a zip that
is only valid once finished, so it is written first (xlsxwriter's constant_memory mode
puts the rows in temporary files of a private 0700 directory, removed when the download
ends), recorded with the ids it holds, then streamed. The ZIP of PDFs first makes sure
each PDF is stored (PdfService.generate: once, under its lock and fence, each render
spending a `pdf` token like generate-pdf), is recorded, then streams one PDF at a time.

A response that will not decrypt never fails an export: its row says so (the
Unreadable column; in the ZIP a text note instead of its PDF) and the count is logged.
Logs name ids and counts only, never an answer.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date
from enum import StrEnum
from pathlib import Path
from typing import IO

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.recorder import Auditor
from healthforms.clock import utcnow
from healthforms.crypto.keys import KeyRing
from healthforms.errors import HealthformsError, NotFound, ValidationFailed
from healthforms.exports.sheets import CSV_BOM, CsvSheet, XlsxSheet
from healthforms.exports.table import Cell, ExportTable, table_of
from healthforms.files import private_dir
from healthforms.forms.models import FormVersion
from healthforms.pdf.service import PdfService, PdfTooExpensive, file_stem
from healthforms.responses.models import ResponsePdf, ResponseRow
from healthforms.responses.service import (
    ResponseContent,
    ResponseFilter,
    ResponseUnreadable,
    form_response_ids,
    get_form,
    open_response,
    responses_by_id,
)
from healthforms.security.principal import Principal
from healthforms.state import AppState

log = structlog.get_logger("healthforms.exports")

# An export's ids go into its one audit event: a bound on both. More is 422; `from` and
# `to` cut a larger form into several exports.
MAX_EXPORT_ROWS = 10_000
# Responses read and decrypted at once. Answers are at most HEALTHFORMS_MAX_ANSWERS_BYTES
# (512 KiB) each, so a batch holds at most 32 MiB of them; typically a few hundred KiB.
READ_BATCH = 64
MAX_PDF_SELECTION = 100
STREAM_CHUNK = 64 * 1024

FORM_RESOURCE = "form"
ZIP_MEDIA_TYPE = "application/zip"

# What the ZIP holds instead of a PDF that could not be made (no PHI: the id says which).
NOTE_UNREADABLE = (
    "The PDF of this response was not included: its stored record could not be decrypted "
    "(it was altered, or the key that encrypted it is not configured).\n"
)
NOTE_TOO_EXPENSIVE = (
    "The PDF of this response was not included: it took too long to print and printing "
    "was stopped. Its answers can still be read on the response page.\n"
)
NOTE_GONE = "The PDF of this response was not included: the response was deleted meanwhile.\n"


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
        workdir = tempfile.TemporaryDirectory(
            prefix="healthforms-export-", dir=export_workspace(self.state.settings.data_dir)
        )
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


EXPORT_WORKSPACE = "exports-tmp"
# A directory this old was left by a process killed mid-build (a finished export is
# streamed and removed within the minute): its decrypted rows are removed at start-up.
STALE_AFTER_S = 3600


def export_workspace(data_dir: Path) -> Path:
    """Where XLSX files are built: a 0700 folder in the data directory (which sits on the
    same encrypted storage as the database), not the machine's shared temp directory."""
    return private_dir(data_dir / EXPORT_WORKSPACE)


def sweep_export_workspace(data_dir: Path, *, now: float | None = None) -> int:
    """Remove what a killed process left in the workspace; how many directories. Another
    process's export in progress is younger than STALE_AFTER_S and stays."""
    folder = data_dir / EXPORT_WORKSPACE
    if not folder.is_dir():
        return 0
    cutoff = (now if now is not None else time.time()) - STALE_AFTER_S
    removed = 0
    for leftover in folder.iterdir():
        if leftover.stat().st_mtime < cutoff:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed += 1
    return removed


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


# The ZIP of a selection's PDFs ----------------------------------------------------------


def parse_selection(body: object) -> list[str]:
    """The selection's response ids, each once, in the order given: 1 to
    MAX_PDF_SELECTION of them; 422 naming `responseIds` otherwise."""
    ids = body.get("responseIds") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in ids):
        raise ValidationFailed({"responseIds": "Send the ids of the selected responses."})
    unique = list(dict.fromkeys(ids))
    if not 1 <= len(unique) <= MAX_PDF_SELECTION:
        raise ValidationFailed(
            {"responseIds": f"Select between 1 and {MAX_PDF_SELECTION} responses."}
        )
    return unique


@dataclass(frozen=True, slots=True)
class PdfSelection:
    """The selected responses (the form's, in the list's order) and what the ZIP holds
    instead of the PDFs that could not be made, by response id."""

    form_title: str
    rows: list[ResponseRow]
    left_out: dict[str, str]

    @property
    def included(self) -> list[str]:
        return [row.id for row in self.rows if row.id not in self.left_out]

    def filename(self, today: date) -> str:
        stem = file_stem(self.form_title, "PDFs", today.isoformat())
        return f"{stem or 'responses'}.zip"


def entry_name(row: ResponseRow) -> str:
    """A ZIP entry's name from the response id and its confirmation code alone, kept to
    letters, digits, '-' and '_': no path, no '..', nothing another OS reads differently
    (zip-slip)."""

    def safe(text: str) -> str:
        return "".join(ch for ch in text if ch.isascii() and (ch.isalnum() or ch in "-_"))

    return f"{safe(row.id) or 'response'}_{safe(row.confirmation)}"


# Spends one more `pdf` token (429 when the bucket is empty): each PDF the ZIP renders
# costs what generate-pdf costs.
SpendPdfToken = Callable[[], Awaitable[object]]


class PdfExport:
    """The ZIP of a selection's PDFs, made through PdfService as generate-pdf makes one."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.pdfs = PdfService(state)

    async def select(
        self, session: AsyncSession, organization_id: str, form_id: str, ids: Sequence[str]
    ) -> tuple[str, list[ResponseRow]]:
        """(form title, the selected responses); 404 unless every id is a response of
        this form of the caller's organisation (exactly as if it did not exist)."""
        form = await get_form(session, organization_id, form_id)
        rows = await responses_by_id(session, organization_id, form_id, ids)
        if len(rows) != len(ids):
            raise NotFound()
        return form.title, rows

    async def prepare(
        self,
        principal: Principal,
        title: str,
        rows: list[ResponseRow],
        auditor: Auditor,
        spend_token: SpendPdfToken,
    ) -> PdfSelection:
        """Make sure every selected PDF is stored: the stored ones are checked to open,
        the others generated now (once, under their lock; `pdf.generated` each). The
        request's own `pdf` token pays for the first render, `spend_token` for each
        further one. Delivers nothing."""
        ids = [row.id for row in rows]
        async with self.state.db.sessions() as session:
            stored = set(
                (
                    await session.execute(
                        select(ResponsePdf.response_id).where(ResponsePdf.response_id.in_(ids))
                    )
                ).scalars()
            )
        left_out: dict[str, str] = {}
        renders = 0
        for row in rows:
            if row.id not in stored:
                if renders:
                    await spend_token()
                renders += 1
            try:
                await self.pdfs.generate(principal, row.id, auditor)
            except ResponseUnreadable:
                left_out[row.id] = NOTE_UNREADABLE
            except PdfTooExpensive:
                left_out[row.id] = NOTE_TOO_EXPENSIVE
        return PdfSelection(form_title=title, rows=rows, left_out=left_out)

    async def zip_stream(
        self, principal: Principal, selection: PdfSelection
    ) -> AsyncIterator[bytes]:
        """The ZIP, written as it streams: one PDF in memory at a time, never on disk.
        Record the export before the first chunk."""
        sink = _Chunks()
        finished = False
        try:
            with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for row in selection.rows:
                    name = entry_name(row)
                    when = row.submitted_at.astimezone(UTC).timetuple()[:6]
                    note = selection.left_out.get(row.id)
                    content: bytes | None = None
                    if note is None:
                        try:
                            content = await self.pdfs.stored_pdf(principal, row.id)
                        except ResponseUnreadable:
                            note = NOTE_UNREADABLE
                        except NotFound:
                            note = NOTE_GONE
                    if content is not None:
                        info = zipfile.ZipInfo(f"{name}.pdf", date_time=when)
                        info.compress_type = zipfile.ZIP_DEFLATED
                        await asyncio.to_thread(archive.writestr, info, content)
                    else:
                        if note is None:  # stored, then deleted before we read it
                            note = NOTE_GONE
                        info = zipfile.ZipInfo(f"{name} NOT INCLUDED.txt", date_time=when)
                        archive.writestr(info, note)
                    if chunk := sink.drain():
                        yield chunk
            yield sink.drain()  # the central directory
            finished = True
        finally:
            log.info(
                "pdf_zip_written" if finished else "pdf_zip_aborted",
                selected=len(selection.rows),
                left_out=len(selection.left_out),
            )


class _Chunks:
    """A write-only, unseekable file for zipfile: what it wrote since the last `drain`.
    (zipfile writes to an unseekable file with data descriptors, so it never seeks.)"""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def today() -> date:
    return utcnow().date()
