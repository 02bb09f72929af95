"""Drills for the audit trail's guarantees over HTTP, on a real database and Redis:
patient writes and their events commit together, floods of forged requests cannot
grow the table, patients' addresses are pseudonyms, request ids cannot be chosen by
clients, and the service's database role cannot rewrite the trail."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import delete, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from healthforms.audit.checkpoints import read_checkpoints
from healthforms.audit.events import (
    CSRF_REJECTED,
    PDF_GENERATED,
    RATELIMIT_EXCEEDED,
    RESPONSE_SUBMITTED,
    AuditEvent,
)
from healthforms.audit.models import AuditEventRow
from healthforms.audit.store import append_event, verify_chains
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.db.migrate import grant_app_role
from healthforms.responses.models import ResponsePdf
from healthforms.security.principal import Role
from tests.forms.helpers import GENEROUS_RATE, StaffDirectory, feature_settings, signed_in
from tests.submissions.helpers import fetch_nonce, good_answers, publish, stored_rows, submit
from tests.support.apps import running_app
from tests.support.identity import GENEROUS_AUTH_RATE, new_client

PATIENT_IP = "198.51.100.23"
PATIENT_UA = "PatientPhone/1.0 (ZQX-UA-MARKER)"
FOREIGN = {"Origin": "https://evil.example", "Cookie": "session=garbage.not-a-session"}


def _refuse_events(db: Database, action: str) -> tuple[str, ...]:
    """SQL that makes the audit table refuse `action`: an audit store that fails."""
    if db.is_sqlite:
        return (
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events "
            f"WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
        )
    return (
        "CREATE FUNCTION audit_down() RETURNS trigger AS $$ BEGIN "
        f"IF NEW.action = '{action}' THEN RAISE EXCEPTION 'audit refused'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_down()",
    )


async def refusing(db: Database, action: str) -> None:
    async with db.engine.begin() as conn:
        for statement in _refuse_events(db, action):
            await conn.execute(text(statement))


async def accepting(db: Database) -> None:
    async with db.engine.begin() as conn:
        on = "" if db.is_sqlite else " ON audit_events"
        await conn.execute(text("DROP TRIGGER audit_down" + on))


@pytest.fixture
def public_rate() -> str:
    return GENEROUS_RATE


@pytest.fixture
async def app(
    fresh_database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    redis_client: Redis,
    public_rate: str,
) -> AsyncIterator[FastAPI]:
    settings = feature_settings(
        database_url=fresh_database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        rate_limit_auth=GENEROUS_AUTH_RATE,
        rate_limit_public=public_rate,
        audit_checkpoint_interval_s=0.2,
    )
    async with running_app(settings) as application:
        yield application


@pytest.fixture
async def editor_http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    directory = StaffDirectory(app)
    async with signed_in(app, directory, await directory.user(Role.EDITOR)) as http:
        yield http


@pytest.fixture
async def patient(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with new_client(app, ip=PATIENT_IP) as http:
        http.headers["User-Agent"] = PATIENT_UA
        yield http


async def events(app: FastAPI, action: str) -> list[AuditEventRow]:
    async with app.state.hf.db.sessions() as session:
        query = select(AuditEventRow).where(AuditEventRow.action == action)
        return list((await session.execute(query.order_by(AuditEventRow.id))).scalars())


async def test_a_submission_whose_audit_event_fails_is_not_stored(
    app: FastAPI, editor_http: httpx.AsyncClient, patient: httpx.AsyncClient
) -> None:
    """A response and its `response.submitted` commit together: when the event cannot
    be written, nothing is stored, and the patient's resend succeeds once it can."""
    form = await publish(editor_http)
    db: Database = app.state.hf.db
    await refusing(db, RESPONSE_SUBMITTED)
    nonce = await fetch_nonce(patient, form["publicId"])
    failed = await submit(patient, form["publicId"], nonce, good_answers())
    assert failed.status_code >= 500
    assert "Ada" not in failed.text
    assert await stored_rows(app, form["id"]) == []  # before: stored, unaudited
    assert await events(app, RESPONSE_SUBMITTED) == []

    await accepting(db)
    again = await submit(patient, form["publicId"], nonce, good_answers())
    assert again.status_code == 201, again.text
    rows = await stored_rows(app, form["id"])
    submitted = await events(app, RESPONSE_SUBMITTED)
    assert [r.id for r in rows] == [e.resource_id for e in submitted]


async def test_a_pdf_whose_audit_event_fails_is_not_stored(
    app: FastAPI, editor_http: httpx.AsyncClient, patient: httpx.AsyncClient
) -> None:
    """A generated PDF is patient data too: stored with its `pdf.generated`, or not."""
    form = await publish(editor_http)
    nonce = await fetch_nonce(patient, form["publicId"])
    assert (await submit(patient, form["publicId"], nonce, good_answers())).status_code == 201
    (row,) = await stored_rows(app, form["id"])
    db: Database = app.state.hf.db
    await refusing(db, PDF_GENERATED)
    failed = await editor_http.post(f"/api/responses/{row.id}/generate-pdf")
    # SQLite's trigger failure is an IntegrityError, read as a lost race (409); what
    # matters is that no PDF was stored without its event.
    assert failed.status_code in (409, 500), failed.text
    async with db.sessions() as session:
        assert await session.get(ResponsePdf, row.id) is None  # before: stored, unaudited
    await accepting(db)
    printed = await editor_http.post(f"/api/responses/{row.id}/generate-pdf")
    assert printed.status_code == 200 and printed.content.startswith(b"%PDF")
    assert [e.resource_id for e in await events(app, PDF_GENERATED)] == [row.id]


async def test_many_submissions_at_once_each_have_exactly_one_event(
    app: FastAPI, editor_http: httpx.AsyncClient, patient: httpx.AsyncClient
) -> None:
    form = await publish(editor_http)
    nonces = [await fetch_nonce(patient, form["publicId"]) for _ in range(20)]
    replies = await asyncio.gather(
        *(submit(patient, form["publicId"], n, good_answers()) for n in nonces)
    )
    assert [r.status_code for r in replies] == [201] * 20
    rows = await stored_rows(app, form["id"])
    submitted = await events(app, RESPONSE_SUBMITTED)
    assert sorted(r.id for r in rows) == sorted(e.resource_id or "" for e in submitted)
    state = app.state.hf
    result = await verify_chains(state.db, state.keys)
    assert result.intact, result.breaks


@pytest.mark.parametrize("public_rate", ["60/min+20"])  # a bucket that outlives the test
async def test_patient_addresses_are_pseudonyms_in_audit_rows_and_redis_keys(
    app: FastAPI,
    editor_http: httpx.AsyncClient,
    patient: httpx.AsyncClient,
    redis_client: Redis,
    redis_prefix: str,
) -> None:
    form = await publish(editor_http)
    nonce = await fetch_nonce(patient, form["publicId"])
    assert (await submit(patient, form["publicId"], nonce, good_answers())).status_code == 201
    (event,) = await events(app, RESPONSE_SUBMITTED)
    keys: KeyRing = app.state.hf.keys
    assert event.ip == keys.pseudonym(PATIENT_IP)
    assert event.user_agent == keys.pseudonym(PATIENT_UA)
    assert event.ip is not None and event.ip.startswith("h:") and PATIENT_IP not in event.ip
    names = [k.decode() async for k in redis_client.scan_iter(match=f"{redis_prefix}*")]
    assert any(":public" in name for name in names)  # the patient's bucket exists...
    assert not [n for n in names if PATIENT_IP in n or "198.51.100" in n]  # ...under a pseudonym
    # Staff events keep the workforce member's address: an investigation needs it.
    logins = await events(app, "auth.login")
    assert logins and logins[0].ip == "203.0.113.10"


async def test_a_flood_of_forged_requests_writes_one_audit_row_and_is_refused(
    app: FastAPI,
) -> None:
    """50 anonymous requests with a garbage cookie and a foreign Origin: before, 50
    audit rows and no 429; now one row per address and minute, and a 429 after the
    `anonymous` policy's burst."""
    async with new_client(app, ip="192.0.2.66") as attacker:
        replies = [await attacker.post("/api/forms", json={}, headers=FOREIGN) for _ in range(50)]
    codes = [r.status_code for r in replies]
    assert set(codes) == {403, 429}
    assert 40 <= codes.index(429) <= 43  # 30/min + 10: 40 at once, then one each 2 s
    assert replies[-1].headers["retry-after"]
    rejected = await events(app, CSRF_REJECTED)
    assert len(rejected) == 1 and rejected[0].actor_id is None
    assert len(await events(app, RATELIMIT_EXCEEDED)) == 1


async def test_a_real_sessions_cross_site_request_is_audited_every_time(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    for _ in range(3):
        reply = await editor_http.post(
            "/api/forms", json={}, headers={"Origin": "https://evil.example"}
        )
        assert reply.status_code == 403
    rejected = await events(app, CSRF_REJECTED)
    assert len(rejected) == 3 and all(e.actor_id for e in rejected)


async def test_the_audit_request_id_is_the_servers_and_the_clients_is_kept_apart(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    chosen = "client-chosen-id-0001"
    reply = await editor_http.post(
        "/api/forms", json={"title": "T", "fields": []}, headers={"X-Request-ID": chosen}
    )
    assert reply.status_code == 201, reply.text
    server_id = reply.headers["x-request-id"]
    assert server_id != chosen
    (created,) = await events(app, "form.created")
    assert created.request_id == server_id
    assert created.client_request_id == chosen


async def test_the_app_role_can_append_but_never_rewrite_the_trail(
    fresh_database_url: str, keys: KeyRing
) -> None:
    url = make_url(fresh_database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("roles and grants are PostgreSQL's; SQLite's file has no users")
    role = f"hf_app_{secrets.token_hex(4)}"
    await asyncio.to_thread(grant_app_role, fresh_database_url, role)
    await asyncio.to_thread(grant_app_role, fresh_database_url, role)  # idempotent
    as_role = Database.connect(url.set(username=role, password=None).render_as_string(False))
    owner = Database.connect(fresh_database_url)
    try:
        await append_event(as_role, keys, AuditEvent(action="form.updated"))
        async with as_role.sessions() as session:
            assert len((await session.execute(select(AuditEventRow))).scalars().all()) == 1
        for statement in (
            "UPDATE audit_events SET action = 'x'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(DBAPIError, match="permission denied"):
                async with as_role.engine.begin() as conn:
                    await conn.execute(text(statement))
        async with as_role.engine.begin() as conn:  # the rest of the schema stays usable
            await conn.execute(text("DELETE FROM session_revocations"))
    finally:
        await as_role.dispose()
        async with owner.engine.begin() as conn:
            await conn.execute(text(f'DROP OWNED BY "{role}"'))
            await conn.execute(text(f'DROP ROLE "{role}"'))
        await owner.dispose()


async def test_the_service_checkpoints_its_chains_at_its_cadence(
    app: FastAPI, editor_http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A running service writes signed heads outside the database by itself; cutting
    the newest events afterwards is then named by `audit verify`."""
    state = app.state.hf
    path = state.settings.resolved_audit_checkpoint_path()
    assert path.parent == tmp_path / "data"
    await publish(editor_http)  # form.created, form.published in the clinic's chain
    org = (await events(app, "form.published"))[0].chain
    for _ in range(50):
        heads = read_checkpoints(state.keys, path).heads
        if any(h.chain == org and h.seq >= 3 for h, _ in heads):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"no checkpoint of chain {org} in {path}")
    assert (await verify_chains(state.db, state.keys, heads)).intact
    async with state.db.sessions() as session, session.begin():
        await session.execute(delete(AuditEventRow).where(AuditEventRow.action == "form.published"))
    result = await verify_chains(state.db, state.keys, read_checkpoints(state.keys, path).heads)
    assert [b.chain for b in result.breaks] == [org]
    assert "removed after the checkpoint" in result.breaks[0].reason
