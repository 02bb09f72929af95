"""The retention purge (retention/service.py): what expired goes with its PDF and notes,
nothing else does, each batch commits with one `responses.purged` event naming exactly
its ids, the audit chains still verify, and two purges at once never both take a row."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.audit.store import verify_chains
from healthforms.clock import rfc3339, utcnow
from healthforms.crypto.keys import KeyRing
from healthforms.db.base import new_id
from healthforms.db.engine import Database
from healthforms.patient_requests.models import PatientRequest
from healthforms.retention.service import cutoff, purge_expired
from tests.retention.helpers import (
    accept_purge_events,
    clinic_form,
    days_old,
    detail,
    event_count,
    left_of,
    purge_events,
    refuse_purge_events,
    retained_form,
    submitted,
)
from tests.support.response_factory import create_organization


async def test_purge_deletes_what_expired_with_its_records_and_nothing_else(
    own_db: Database, ring: KeyRing
) -> None:
    now = utcnow()
    before = cutoff(now, 30)
    clinic = await create_organization(own_db)
    monthly = await retained_form(own_db, clinic, 30)
    yearly = await retained_form(own_db, clinic, 365)
    forever = await retained_form(own_db, clinic, None)
    elsewhere = await clinic_form(own_db, 30)  # another clinic, the same period

    expired = await days_old(own_db, ring, monthly, 31, 400)
    just_expired = await submitted(own_db, ring, monthly, before - timedelta(seconds=1))
    # Submitted at the cutoff itself: kept (only what came before it has expired).
    at_cutoff = await submitted(own_db, ring, monthly, before)
    young = await days_old(own_db, ring, monthly, 29, 0.5, now=now)
    yearly_kept = await days_old(own_db, ring, yearly, 31, 364, now=now)
    yearly_expired = await days_old(own_db, ring, yearly, 366, now=now)
    kept_forever = await days_old(own_db, ring, forever, 4000, now=now)
    elsewhere_expired = await days_old(own_db, ring, elsewhere, 45, now=now)

    results = await purge_expired(own_db, ring, now=now)

    counts = {r.form.form_id: r.count for r in results}
    assert counts == {monthly.form_id: 3, yearly.form_id: 1, elsewhere.form_id: 1}
    assert all(r.failed is None for r in results)
    gone = expired + just_expired + yearly_expired + elsewhere_expired
    kept = at_cutoff + young + yearly_kept + kept_forever
    for kind, ids in (await left_of(own_db, gone)).items():
        assert ids == set(), kind
    for kind, ids in (await left_of(own_db, kept)).items():
        assert ids == set(kept), kind

    (event,) = await purge_events(own_db, monthly.form_id)
    assert detail(event) == {
        "count": 3,
        "responseIds": sorted(expired + just_expired),
        "retentionDays": 30,
        "before": rfc3339(before),
    }
    assert (event.organization_id, event.actor_id) == (clinic, None)
    assert (event.resource_type, event.outcome) == ("form", "success")
    (other,) = await purge_events(own_db, elsewhere.form_id)
    assert other.organization_id == elsewhere.organization_id
    assert detail(other)["responseIds"] == elsewhere_expired
    assert await purge_events(own_db, forever.form_id) == []

    verified = await verify_chains(own_db, ring)
    assert verified.intact, [b.describe() for b in verified.breaks]

    # Idempotent: nothing is left to purge, so nothing is deleted or recorded.
    events = await event_count(own_db)
    again = await purge_expired(own_db, ring, now=now)
    assert {r.form.form_id: r.count for r in again}[monthly.form_id] == 0
    assert sum(r.count for r in again) == 0
    assert await event_count(own_db) == events


async def test_each_batch_commits_with_one_event_naming_exactly_its_responses(
    own_db: Database, ring: KeyRing
) -> None:
    form = await clinic_form(own_db, 7)
    ids = await days_old(own_db, ring, form, *(10 + i for i in range(7)))

    (result,) = await purge_expired(own_db, ring, batch=3)

    assert result.count == 7
    events = await purge_events(own_db, form.form_id)
    named = [detail(e)["responseIds"] for e in events]
    assert [len(batch) for batch in named] == [3, 3, 1]
    assert [detail(e)["count"] for e in events] == [3, 3, 1]
    assert sorted(i for batch in named for i in batch) == sorted(ids)
    # Oldest first: the batches follow the submission times.
    oldest_first = list(reversed(ids))
    assert named[0] == sorted(oldest_first[:3])


async def test_a_batch_whose_event_is_refused_deletes_nothing(
    own_db: Database, ring: KeyRing
) -> None:
    """The rows and their event commit together: when the event cannot be written,
    the responses, PDFs and notes all stay, and the next run purges them."""
    form = await clinic_form(own_db, 30)
    ids = await days_old(own_db, ring, form, 40, 50)
    await refuse_purge_events(own_db)

    (failed,) = await purge_expired(own_db, ring)

    assert failed.failed is not None and failed.count == 0
    assert await left_of(own_db, ids) == {k: set(ids) for k in ("responses", "pdfs", "notes")}
    assert await purge_events(own_db, form.form_id) == []

    await accept_purge_events(own_db)
    (retried,) = await purge_expired(own_db, ring)
    assert retried.failed is None and retried.count == 2
    assert await left_of(own_db, ids) == {k: set() for k in ("responses", "pdfs", "notes")}
    (event,) = await purge_events(own_db, form.form_id)
    assert detail(event)["responseIds"] == sorted(ids)
    assert (await verify_chains(own_db, ring)).intact


async def test_two_purges_at_once_take_each_response_once(
    own_db: Database, ring: KeyRing, fresh_database_url: str
) -> None:
    """Two purges (as two processes: each its own engine and connections) in small
    batches over the same rows: every response is named by exactly one event."""
    form = await clinic_form(own_db, 30)
    ids = await days_old(own_db, ring, form, *(31 + i % 20 for i in range(60)))
    second = Database.connect(fresh_database_url)
    try:
        first_run, second_run = await asyncio.gather(
            purge_expired(own_db, ring, batch=7), purge_expired(second, ring, batch=7)
        )
    finally:
        await second.dispose()

    ran = first_run + second_run
    assert all(r.failed is None for r in ran)
    assert sum(r.count for r in ran) == len(ids)
    named = [i for e in await purge_events(own_db, form.form_id) for i in detail(e)["responseIds"]]
    assert sorted(named) == sorted(ids)  # each once: no duplicate, none missing
    assert await left_of(own_db, ids) == {k: set() for k in ("responses", "pdfs", "notes")}
    assert (await verify_chains(own_db, ring)).intact


async def test_requests_that_ended_unanswered_before_the_cutoff_are_purged_with_an_event(
    own_db: Database, ring: KeyRing
) -> None:
    """A request holds the patient's name and contact details: one that was never
    answered goes once it stopped working longer ago than the form's period; a live one,
    a recent one and one of a form without a period stay."""
    now = utcnow()
    clinic = await create_organization(own_db)
    monthly = await retained_form(own_db, clinic, 30)
    forever = await retained_form(own_db, clinic, None)

    async def request(form_id: str, expired_days_ago: float, state: str = "created") -> str:
        request_id = new_id("req_")
        async with own_db.sessions() as session, session.begin():
            session.add(
                PatientRequest(
                    id=request_id,
                    organization_id=clinic,
                    form_id=form_id,
                    token_hash=secrets.token_hex(32),
                    ciphertext=b"sealed contact",
                    wrapped_key=b"wrapped",
                    key_id=ring.current_id,
                    state=state,
                    expires_at=now - timedelta(days=expired_days_ago),
                    created_by="usr_x",
                    created_at=now - timedelta(days=expired_days_ago + 7),
                )
            )
        return request_id

    long_expired = await request(monthly.form_id, 45)
    long_cancelled = await request(monthly.form_id, 31, state="cancelled")
    recently_expired = await request(monthly.form_id, 10)
    live = await request(monthly.form_id, -3)
    of_forever = await request(forever.form_id, 4000)

    await purge_expired(own_db, ring, now=now)

    async with own_db.sessions() as session:
        left = set((await session.execute(select(PatientRequest.id))).scalars())
        events = (
            (
                await session.execute(
                    select(AuditEventRow).where(AuditEventRow.action == "requests.purged")
                )
            )
            .scalars()
            .all()
        )
    assert left >= {recently_expired, live, of_forever}
    assert not left & {long_expired, long_cancelled}
    (event,) = events
    assert (event.resource_id, event.actor_id) == (monthly.form_id, None)
    assert detail(event)["requestIds"] == sorted([long_expired, long_cancelled])
    assert (await verify_chains(own_db, ring)).intact
