"""Fifty concurrent writers against a real server: no 5xx, nothing lost, nothing twice.

One `healthforms serve` process on the leg's database (SQLite on leg A, PostgreSQL on
leg B) and Redis, driven by 50 concurrent clients at once: patients fetching and
submitting, staff saving forms with revisions, taking edit locks and reading responses
(each read audited). Before the writer slot and the one-connection audit, 50 audited
reads took every pooled connection and waited for a second one (0 answers in 4 s), and
50 saves on SQLite slept in its busy handler until they failed with 503.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import func, select

from healthforms.audit.events import FORM_UPDATED, RESPONSE_SUBMITTED, RESPONSE_VIEWED
from healthforms.audit.models import AuditEventRow
from healthforms.db.engine import Database
from healthforms.forms.models import Form
from healthforms.responses.models import ResponseRow
from tests.support import workflow
from tests.support.servers import start_server

pytestmark = pytest.mark.multiprocess

WRITERS = 50
EDITED_FORMS = 10
LATE = 20  # patients and lock takers in the mixed round


async def _patient(http: httpx.AsyncClient, public_id: str) -> tuple[int, str | None]:
    page = await http.get(f"/api/public/forms/{public_id}")
    if page.status_code != 200:
        return page.status_code, None
    sent = await http.post(
        f"/api/public/forms/{public_id}/responses",
        json={"nonce": page.json()["nonce"], "answers": workflow.DRILL_ANSWERS},
    )
    confirmation = sent.json().get("confirmation") if sent.status_code < 300 else None
    return sent.status_code, confirmation


async def _editor(
    http: httpx.AsyncClient, staff: workflow.StaffSession, form_id: str, index: int
) -> tuple[int, int]:
    """Read the form, save it with the revision read; (GET status, PUT status)."""
    current = await http.get(f"/api/forms/{form_id}", headers=staff.headers())
    if current.status_code != 200:
        return current.status_code, 0
    saved = await http.put(
        f"/api/forms/{form_id}",
        json={
            "title": f"Edited by writer {index}",
            "fields": workflow.DRILL_FIELDS,
            "revision": current.json()["revision"],
        },
        headers=staff.headers(unsafe=True),
    )
    return current.status_code, saved.status_code


async def _count(database_url: str, statement: Any) -> Any:
    db = Database.connect(database_url)
    try:
        async with db.sessions() as session:
            return (await session.execute(statement)).all()
    finally:
        await db.dispose()


async def test_fifty_concurrent_writers_lose_nothing_and_never_fail(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    env = workflow.server_env(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        extra={"HEALTHFORMS_REDIS_PREFIX": redis_prefix, "HEALTHFORMS_LOG_LEVEL": "warning"},
    )
    server = start_server(env, tmp_path / "logs")
    try:
        workflow.create_admin(env, "writers@drill.example", organization="Writers Clinic")
        staff = workflow.login(server.base_url, "writers@drill.example")
        form = workflow.publish_form(server.base_url, staff, "Concurrent intake")
        workflow.submit_once(server.base_url, form.public_id)
        response_id = workflow.first_response_id(server.base_url, staff, form.id)
        limits = httpx.Limits(max_connections=WRITERS * 2, max_keepalive_connections=WRITERS)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as http:
            edited = []
            for index in range(EDITED_FORMS):
                made = await http.post(
                    "/api/forms",
                    json={"title": f"Draft {index}", "fields": workflow.DRILL_FIELDS},
                    headers=staff.headers(unsafe=True),
                )
                assert made.status_code == 201, made.text
                edited.append(made.json()["id"])

            # Round 1: 50 patients at once. Round 2: 50 audited reads, 50 editors, 20
            # patients and 20 edit locks, all at once.
            patients = await asyncio.gather(
                *(_patient(http, form.public_id) for _ in range(WRITERS))
            )
            mixed = await asyncio.gather(
                *(http.get(f"/api/responses/{response_id}", headers=staff.headers())
                  for _ in range(WRITERS)),
                *(_editor(http, staff, edited[i % EDITED_FORMS], i) for i in range(WRITERS)),
                *(_patient(http, form.public_id) for _ in range(LATE)),
                *(http.post(f"/api/forms/{edited[i % EDITED_FORMS]}/lock",
                            headers=staff.headers(unsafe=True)) for i in range(LATE)),
            )  # fmt: skip
    finally:
        server.stop()

    # gather() of mixed kinds answers list[object]: name each slice's kind.
    reads = cast(list[httpx.Response], mixed[:WRITERS])
    saves = cast(list[tuple[int, int]], mixed[WRITERS : WRITERS * 2])
    late = cast(list[tuple[int, str | None]], mixed[WRITERS * 2 : WRITERS * 2 + LATE])
    submissions = list(patients) + late
    locks = cast(list[httpx.Response], mixed[WRITERS * 2 + LATE :])

    statuses = Counter(status for status, _ in submissions)
    assert statuses == Counter({201: len(submissions)}), statuses
    confirmations = [confirmation for _, confirmation in submissions]
    assert len(set(confirmations)) == len(confirmations)
    # A save may lose the race for its revision (409 stale_revision); never a 5xx.
    save_statuses = Counter(put for _, put in saves)
    assert set(save_statuses) <= {200, 409}, save_statuses
    assert save_statuses[200] >= EDITED_FORMS  # every form saved at least once
    assert all(get == 200 for get, _ in saves)
    assert [lock.status_code for lock in locks] == [200] * LATE
    assert [read.status_code for read in reads] == [200] * WRITERS
    assert "Traceback" not in server.log_text()

    # Exactly one row per accepted submission: the first one plus every 201 above.
    stored = await _count(
        database_url,
        select(ResponseRow.confirmation).where(ResponseRow.form_id == form.id),
    )
    stored_confirmations = sorted(row[0] for row in stored)
    assert len(stored_confirmations) == len(submissions) + 1
    assert set(confirmations) <= set(stored_confirmations)
    # No lost update: every 200 moved its form's revision by one, and nothing else did.
    revisions = await _count(
        database_url, select(func.sum(Form.revision - 1)).where(Form.id.in_(edited))
    )
    assert revisions[0][0] == save_statuses[200]
    # Audit completeness: one event per accepted submission, save and read (the
    # session's database is shared with other tests: count this test's resources only).
    stored_ids = await _count(
        database_url, select(ResponseRow.id).where(ResponseRow.form_id == form.id)
    )
    mine = [row[0] for row in stored_ids] + edited
    actions = dict(
        await _count(
            database_url,
            select(AuditEventRow.action, func.count())
            .where(
                AuditEventRow.action.in_([RESPONSE_SUBMITTED, FORM_UPDATED, RESPONSE_VIEWED]),
                AuditEventRow.resource_id.in_(mine),
            )
            .group_by(AuditEventRow.action),
        )
    )
    assert actions[RESPONSE_SUBMITTED] == len(submissions) + 1
    assert actions[FORM_UPDATED] == save_statuses[200]
    assert actions[RESPONSE_VIEWED] == WRITERS
