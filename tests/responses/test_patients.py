"""Whose response it is: the fields that identify the patient, shown in the list (one
audited list view) and found by blind indexes, never stored in plaintext."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import select, text

from healthforms.audit.models import AuditEventRow
from healthforms.audit.store import verify_chains
from healthforms.crypto.keys import KeyRing, generate_key
from healthforms.db.engine import Database
from healthforms.errors import ValidationFailed
from healthforms.forms.validation import validate_fields
from healthforms.responses.key_rotation import rotate_keys
from healthforms.responses.patients import (
    name_words,
    parse_birth_date,
    parse_search,
    read_identities,
)
from healthforms.responses.reindex import reindex_patients
from healthforms.responses.service import find_by_patient
from healthforms.security.principal import Role
from tests.support.apps import asgi_client
from tests.support.plaintext import sqlite_files_holding, tables_holding
from tests.support.response_factory import (
    INTAKE_FIELDS,
    PublishedForm,
    create_form,
    create_organization,
    create_response,
    intake_answers,
)
from tests.support.response_fixtures import StaffFactory

MARKER_NAME = "Quixbeeq Wobblethorpe"  # a name no other test writes


async def listed_events(db: Database, organization_id: str) -> list[AuditEventRow]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(AuditEventRow)
            .where(
                AuditEventRow.organization_id == organization_id,
                AuditEventRow.action == "responses.listed",
            )
            .order_by(AuditEventRow.id)
        )
        return list(rows.scalars())


async def public_id_of(db: Database, form: PublishedForm) -> str:
    async with db.sessions() as session:
        found = await session.execute(
            text("select public_id from forms where id = :id"), {"id": form.form_id}
        )
        return str(found.scalar_one())


async def submit(app: FastAPI, public_id: str, answers: dict[str, object]) -> str:
    """Through the patient's endpoints, as a phone would; returns the confirmation."""
    async with asgi_client(app) as patient:
        page = await patient.get(f"/api/public/forms/{public_id}")
        assert page.status_code == 200, page.text
        sent = await patient.post(
            f"/api/public/forms/{public_id}/responses",
            json={"nonce": page.json()["nonce"], "answers": answers},
        )
        assert sent.status_code == 201, sent.text
        return str(sent.json()["confirmation"])


async def test_a_submitted_name_is_listed_searchable_and_nowhere_in_plaintext(
    app: FastAPI,
    db: Database,
    keys: KeyRing,
    clinic: PublishedForm,
    admin: httpx.AsyncClient,
    database_url: str,
) -> None:
    public_id = await public_id_of(db, clinic)
    answers = intake_answers(name=f"  {MARKER_NAME} ", dob="1961-07-14")
    answers.pop("signature")
    code = await submit(app, public_id, answers)
    await submit(app, public_id, intake_answers(name="Ada Lovelace", dob="1815-12-10"))

    listed = await admin.get(f"/api/forms/{clinic.form_id}/responses")
    assert listed.status_code == 200, listed.text
    rows = listed.json()["responses"]
    by_code = {r["confirmation"]: r for r in rows}
    mine = by_code[code]
    assert mine["patient"] == {"name": MARKER_NAME, "birthDate": "1961-07-14"}
    assert "answers" not in mine
    # One list-view event naming the responses whose patients were shown; no names.
    (event,) = await listed_events(db, clinic.organization_id)
    assert event.resource_type == "form" and event.resource_id == clinic.form_id
    assert json.loads(event.detail or "{}") == {
        "count": 2,
        "responseIds": sorted(r["id"] for r in rows),
    }
    assert "Wobblethorpe".casefold() not in repr(vars(event)).casefold()

    # Search: whole words, any case or accent, in either order; and the date of birth.
    base = f"/api/forms/{clinic.form_id}/responses"
    for query in (
        {"name": "wobblethorpe"},
        {"name": "WOBBLETHORPE quixbeeq"},
        {"name": "Quïxbeeq"},
        {"birthDate": "1961-07-14"},
        {"birthDate": "07/14/1961"},
        {"name": "Wobblethorpe", "birthDate": "14.07.1961"},
    ):
        found = (await admin.get(base, params=query)).json()["responses"]
        assert [r["id"] for r in found] == [mine["id"]], query
    for query in ({"name": "Wobble"}, {"name": "Wobblethorpe", "birthDate": "1961-07-15"}):
        assert (await admin.get(base, params=query)).json()["responses"] == [], query
    across = await admin.get("/api/responses", params={"name": "wobblethorpe"})
    assert [r["id"] for r in across.json()["responses"]] == [mine["id"]]
    searched = (await listed_events(db, clinic.organization_id))[-1]
    assert json.loads(searched.detail or "{}")["search"] == ["name"]
    for bad in ({"name": "!!!"}, {"birthDate": "yesterday"}, {"birthDate": "02/30/1990"}):
        refused = await admin.get(base, params=bad)
        assert refused.status_code == 422, bad
        assert set(refused.json()["fields"]) <= {"name", "birthDate"}

    # Not in plaintext anywhere: no table, no column, not the SQLite file or its log.
    for marker in ("Wobblethorpe", "1961-07-14"):
        assert await tables_holding(db, marker) == [], marker
        assert sqlite_files_holding(database_url, marker) == [], marker
    assert (await verify_chains(db, keys)).intact


async def test_another_clinic_never_matches_and_its_patients_stay_hidden(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    ours = await create_response(db, keys, clinic, intake_answers(name="Maria Garcia"))
    other_form = (await create_form(db, await create_organization(db)))[0]
    await create_response(db, keys, other_form, intake_answers(name="Maria Garcia"))
    found = await admin.get("/api/responses", params={"name": "maria garcia"})
    assert [r["id"] for r in found.json()["responses"]] == [ours]
    theirs = await admin.get(f"/api/forms/{other_form.form_id}/responses")
    assert theirs.status_code == 404


async def test_a_form_without_identifying_fields_lists_as_before_and_audits_nothing(
    db: Database, keys: KeyRing, admin: httpx.AsyncClient, clinic: PublishedForm
) -> None:
    plain_fields = [{k: v for k, v in f.items() if k != "identifies"} for f in INTAKE_FIELDS]
    form = (await create_form(db, clinic.organization_id, fields=plain_fields))[0]
    response_id = await create_response(db, keys, form, intake_answers())
    listed = (await admin.get(f"/api/forms/{form.form_id}/responses")).json()["responses"]
    assert [(r["id"], r["patient"]) for r in listed] == [(response_id, None)]
    assert await listed_events(db, clinic.organization_id) == []


async def test_viewers_see_names_editors_search_and_every_view_is_one_event(
    db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    start = datetime(2026, 10, 1, 9, tzinfo=UTC)
    ids = [
        await create_response(
            db,
            keys,
            clinic,
            intake_answers(name=f"Patient {i}"),
            submitted_at=start - timedelta(hours=i),
        )
        for i in range(5)
    ]
    async with staff(clinic.organization_id, Role.VIEWER) as viewer:
        first = (
            await viewer.get(f"/api/forms/{clinic.form_id}/responses", params={"limit": 2})
        ).json()
        second = (
            await viewer.get(
                f"/api/forms/{clinic.form_id}/responses",
                params={"limit": 2, "after": first["next"]},
            )
        ).json()
    assert [r["patient"]["name"] for r in first["responses"] + second["responses"]] == [
        f"Patient {i}" for i in range(4)
    ]
    events = await listed_events(db, clinic.organization_id)
    assert [json.loads(e.detail or "{}")["responseIds"] for e in events] == [
        sorted(ids[:2]),
        sorted(ids[2:4]),
    ]


async def test_a_patient_whose_identity_will_not_decrypt_is_marked_not_a_500(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    async with db.sessions() as session, session.begin():
        await session.execute(
            text("update response_identities set ciphertext = :c where response_id = :id"),
            {"c": b"\x00" * 64, "id": response_id},
        )
    listed = await admin.get(f"/api/forms/{clinic.form_id}/responses")
    assert listed.status_code == 200
    (row,) = listed.json()["responses"]
    assert row["patient"] == {"name": None, "birthDate": None, "unreadable": True}


async def test_key_rotation_keeps_patients_findable(
    db: Database, keys: KeyRing, clinic: PublishedForm
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers(name="Rotated Person"))
    rotated = KeyRing(current=base64.b64decode(generate_key()), previous=(keys.current,))
    search = parse_search("person rotated", None)

    async def found(ring: KeyRing) -> list[str]:
        async with db.sessions() as session:
            rows = await find_by_patient(session, ring, clinic.organization_id, search)
            return [row.id for row in rows]

    # Before the rotation runs, a service on the new key still finds it (old tokens).
    assert await found(rotated) == [response_id]
    counts = {c.name: c for c in await rotate_keys(db, rotated)}
    assert counts["response_search_tokens"].rewrapped >= 1
    assert counts["response_identities"].rewrapped >= 1
    # Now under the new key alone: the old one can be retired.
    alone = KeyRing(current=rotated.current)
    assert await found(alone) == [response_id]
    async with db.sessions() as session:
        (identity,) = (await read_identities(session, alone, [response_id])).values()
    assert identity is not None and identity.name == "Rotated Person"


async def test_reindex_finds_patients_of_responses_stored_before_the_fields_were_marked(
    db: Database, keys: KeyRing, clinic: PublishedForm
) -> None:
    plain_fields = [{k: v for k, v in f.items() if k != "identifies"} for f in INTAKE_FIELDS]
    form = (await create_form(db, clinic.organization_id, fields=plain_fields))[0]
    earlier = await create_response(db, keys, form, intake_answers(name="Early Bird"))
    search = parse_search("early bird", None)

    async def found() -> list[str]:
        async with db.sessions() as session:
            rows = await find_by_patient(session, keys, clinic.organization_id, search)
            return [row.id for row in rows]

    assert await found() == []
    # The editor marks the name field (the stored version is edited here to stand in
    # for a republished one: reindex reads each response's own version).
    async with db.sessions() as session, session.begin():
        await session.execute(
            text("update form_versions set fields = :f where id = :id"),
            {"f": json.dumps(INTAKE_FIELDS), "id": form.version_id},
        )
    count = await reindex_patients(db, keys, form_id=form.form_id)
    assert (count.indexed, count.failed) == (1, 0)
    assert await found() == [earlier]
    async with db.sessions() as session:
        event = (
            await session.execute(
                select(AuditEventRow).where(
                    AuditEventRow.action == "responses.reindexed",
                    AuditEventRow.resource_id == form.form_id,
                )
            )
        ).scalar_one()
    assert json.loads(event.detail or "{}") == {"count": 1, "responseIds": [earlier]}
    again = await reindex_patients(db, keys, form_id=form.form_id)
    assert again.indexed == 1 and await found() == [earlier]  # safe to run again


def test_names_are_searched_by_words_without_case_or_accents() -> None:
    assert name_words("  Zoë  Ångström-Łukasiewicz ") == ["zoe", "angstrom", "łukasiewicz"]
    assert name_words("O'Neil, MARY mary") == ["o", "neil", "mary"]
    assert name_words("!!!") == []
    assert parse_birth_date("2001-04-30") == "2001-04-30"
    assert parse_birth_date("4/30/2001") == "2001-04-30"
    assert parse_birth_date("30.04.2001") == "2001-04-30"
    assert parse_birth_date("2001-02-30") is None
    assert parse_birth_date("1/2") is None


def test_only_fitting_fields_can_identify_the_patient() -> None:
    def problem(fields: list[dict[str, object]]) -> dict[str, str]:
        try:
            validate_fields(fields)
        except ValidationFailed as exc:
            return dict(exc.extra["fields"])
        return {}

    assert problem([{"id": "a", "type": "text", "label": "A", "identifies": "name"}]) == {}
    assert "a" in problem([{"id": "a", "type": "email", "label": "A", "identifies": "name"}])
    assert "a" in problem([{"id": "a", "type": "text", "label": "A", "identifies": "birthDate"}])
    assert "a" in problem([{"id": "a", "type": "text", "label": "A", "identifies": "ssn"}])
    two_dates: list[dict[str, object]] = [
        {"id": "a", "type": "date", "label": "A", "identifies": "birthDate"},
        {"id": "b", "type": "date", "label": "B", "identifies": "birthDate"},
    ]
    assert list(problem(two_dates)) == ["b"]


async def test_the_find_a_patient_page_lists_matches_across_forms_and_audits_them(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    second_form = (await create_form(db, clinic.organization_id, title="Consent"))[0]
    ids = {
        await create_response(db, keys, clinic, intake_answers(name="Noor Haddad")),
        await create_response(db, keys, second_form, intake_answers(name="Noor Haddad")),
    }
    await create_response(db, keys, clinic, intake_answers(name="Someone Else"))
    page = await admin.get("/responses/patients", params={"name": "haddad", "dob": ""})
    assert page.status_code == 200
    assert page.text.count("Noor Haddad") == 2 and "Someone Else" not in page.text
    assert "Consent" in page.text and "New patient intake" in page.text
    assert page.headers["cache-control"].startswith("no-store")
    event = (await listed_events(db, clinic.organization_id))[-1]
    assert set(json.loads(event.detail or "{}")["responseIds"]) == ids
    for params in ({"name": "", "dob": ""}, {"name": "!!", "dob": ""}, {"dob": "not-a-date"}):
        refused = await admin.get("/responses/patients", params=params)
        assert refused.status_code == 200
        assert "Enter a name (whole words) or a date of birth." in refused.text
    none = await admin.get("/responses/patients", params={"name": "Nobody"})
    assert "No response of your clinic matches" in none.text
