"""The two files an export is written as: CSV and XLSX, from the cells of table.py.

Both receive cells already made safe (table.spreadsheet_text); neither ever writes a
formula: CSV has none, and the XLSX writer writes text as text and numbers as numbers,
with xlsxwriter's string conversions (to formulas, numbers, URLs) turned off.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import IO

import xlsxwriter

from healthforms.exports.table import Cell

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Excel reads a CSV file as UTF-8 only when it opens with a byte order mark; without
# it "Zoë" arrives as "ZoÃ«". Other readers (Python's utf-8-sig, LibreOffice) skip it.
CSV_BOM = "\ufeff".encode()

# The most characters an Excel cell holds; a longer answer is cut, and says so.
XLSX_CELL_LIMIT = 32_767
XLSX_CUT_MARK = " [cut: longer than a spreadsheet cell holds]"
XLSX_SHEET_NAME = "Responses"


class CsvSheet:
    """CSV (RFC 4180: commas, CRLF, quotes where needed) handed out as UTF-8 bytes a batch
    of rows at a time: the caller streams each batch before it reads the next."""

    def __init__(self) -> None:
        self._text = io.StringIO()
        self._writer = csv.writer(self._text, lineterminator="\r\n")

    def rows(self, rows: Iterable[Sequence[Cell]]) -> bytes:
        self._writer.writerows(rows)
        chunk = self._text.getvalue()
        self._text.seek(0)
        self._text.truncate(0)
        return chunk.encode("utf-8")


class XlsxSheet:
    """One worksheet written row by row into `target` with xlsxwriter's constant_memory
    mode: a written row goes to a temporary file in `tmpdir`, never stays in memory.
    Blocking (file writes, zip compression): call it from a worker thread."""

    def __init__(self, target: IO[bytes], tmpdir: str) -> None:
        self._book = xlsxwriter.Workbook(
            target,
            {
                "constant_memory": True,
                "tmpdir": tmpdir,
                # Text stays text: a cell is never turned into a formula, number or link.
                "strings_to_formulas": False,
                "strings_to_numbers": False,
                "strings_to_urls": False,
            },
        )
        self._sheet = self._book.add_worksheet(XLSX_SHEET_NAME)
        self._sheet.freeze_panes(1, 0)
        self._bold = self._book.add_format({"bold": True})
        self._next = 0

    def header(self, cells: Sequence[Cell]) -> None:
        self._write(cells, bold=True)

    def rows(self, rows: Iterable[Sequence[Cell]]) -> None:
        for cells in rows:
            self._write(cells)

    def close(self) -> None:
        """Assemble the workbook into `target`."""
        self._book.close()

    def _write(self, cells: Sequence[Cell], *, bold: bool = False) -> None:
        style = self._bold if bold else None
        for column, cell in enumerate(cells):
            if isinstance(cell, str):
                if len(cell) > XLSX_CELL_LIMIT:
                    cell = cell[: XLSX_CELL_LIMIT - len(XLSX_CUT_MARK)] + XLSX_CUT_MARK
                self._sheet.write_string(self._next, column, cell, style)
            else:
                self._sheet.write_number(self._next, column, cell, style)
        self._next += 1
