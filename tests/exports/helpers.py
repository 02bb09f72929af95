"""Forms whose versions differ, exports read back (CSV, XLSX), and their audit events."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from typing import Any

import httpx
import openpyxl
from sqlalchemy import select, text

from healthforms.audit.models import AuditEventRow
from healthforms.db.base import new_id
from healthforms.db.engine import Database
from healthforms.forms.models import Form, FormVersion
from tests.support.response_factory import PublishedForm

FIXED = ["Response ID", "Confirmation", "Submitted at", "Form version", "Status", "Unreadable"]

SIGNED_AT = "2026-11-25T19:54:37Z"  # tests.support.response_factory.evidence's signedAt

# Version 1 of a form; version 2 renames `name`, drops `referral` and adds `pain`.
V1_FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name", "required": True},
    {
        "id": "allergies",
        "type": "checkbox",
        "label": "Known allergies",
        "options": ["Penicillin", "Latex", "Pollen"],
    },
    {"id": "referral", "type": "text", "label": "Who referred you?"},
    {"id": "consent", "type": "checkbox", "label": "I consent to treatment"},
    {"id": "signature", "type": "signature", "label": "Patient signature"},
]
V2_FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Patient name", "required": True},
    {
        "id": "allergies",
        "type": "checkbox",
        "label": "Known allergies",
        "options": ["Penicillin", "Latex", "Pollen"],
    },
    {"id": "consent", "type": "checkbox", "label": "I consent to treatment"},
    {"id": "pain", "type": "number", "label": "Pain today (0-10)"},
    {"id": "signature", "type": "signature", "label": "Patient signature"},
]
# The export's field columns: first-seen order, the latest label plus the id.
VERSIONED_HEADERS = [
    "Patient name (name)",
    "Known allergies (allergies)",
    "Who referred you? (referral)",
    "I consent to treatment (consent)",
    "Patient signature (signature)",
    "Pain today (0-10) (pain)",
]
VERSIONED_KINDS = {
    "name": "text",
    "allergies": "checkbox",
    "referral": "text",
    "consent": "checkbox",
    "signature": "signature",
    "pain": "number",
}


async def create_versioned_form(
    db: Database,
    organization_id: str,
    versions: list[list[dict[str, Any]]],
    *,
    title: str = "Intake with history",
) -> list[PublishedForm]:
    """A published form whose version n has the fields `versions[n - 1]`."""
    published: list[PublishedForm] = []
    async with db.sessions() as session, session.begin():
        form = Form(
            organization_id=organization_id,
            title=title,
            description="",
            fields=versions[-1],
            status="published",
            version=len(versions),
            public_id=new_id("pub_"),
            has_unpublished_changes=False,
        )
        session.add(form)
        await session.flush()
        for number, fields in enumerate(versions, start=1):
            row = FormVersion(
                form_id=form.id, version=number, title=title, description="", fields=fields
            )
            session.add(row)
            await session.flush()
            published.append(PublishedForm(organization_id, form.id, row.id, number))
    return published


def expected_cell(kind: str | None, answer: Any, signed_at: str | None) -> str:
    """What an export's cell says for an answer as GET /api/responses/{id} returns it."""
    if kind == "signature":
        return f"signed at {signed_at}" if answer else ""
    if answer is None:
        return ""
    if isinstance(answer, bool):
        return "Yes" if answer else "No"
    if isinstance(answer, list):
        return "; ".join(str(choice) for choice in answer)
    return str(answer)


def read_csv(reply: httpx.Response) -> list[list[str]]:
    assert reply.content.startswith(b"\xef\xbb\xbf"), "no UTF-8 byte order mark"
    return list(csv.reader(io.StringIO(reply.content.decode("utf-8-sig"), newline="")))


def _unescape(value: object) -> str:
    """A cell as text, with OOXML's escapes of control characters (`_x000D_` for a
    carriage return, which Excel reads back as one) undone; blanks as ""."""
    if value is None:
        return ""
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), str(value))


def read_xlsx(content: bytes) -> list[list[str]]:
    """The sheet's cells as the CSV's strings (numbers as written, blanks as "")."""
    book = openpyxl.load_workbook(io.BytesIO(content), read_only=True)
    try:
        (sheet,) = book.worksheets
        rows = [[_unescape(value) for value in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()
    return rows


def sheet_xml(content: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return archive.read("xl/worksheets/sheet1.xml").decode("utf-8")


async def events(db: Database, action: str, resource_id: str) -> list[AuditEventRow]:
    """The events of `action` about one resource (the worker's database is shared)."""
    async with db.sessions() as session:
        query = select(AuditEventRow).where(
            AuditEventRow.action == action, AuditEventRow.resource_id == resource_id
        )
        return list((await session.execute(query.order_by(AuditEventRow.id))).scalars())


def detail_of(event: AuditEventRow) -> dict[str, Any]:
    assert event.detail is not None
    detail: dict[str, Any] = json.loads(event.detail)
    return detail


async def refuse_events(db: Database, action: str) -> None:
    """Make the audit table refuse `action`: an audit store that fails (as in
    tests/audit/test_drills.py)."""
    if db.is_sqlite:
        statements = [
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events "
            f"WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
        ]
    else:
        statements = [
            "CREATE FUNCTION audit_down() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.action = '{action}' THEN RAISE EXCEPTION 'audit refused'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION audit_down()",
        ]
    async with db.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))
