"""The retention purge: each form's responses older than its retention period are
deleted with every record they own, and each batch commits with the audit event that
says so (docs/retention.md).

- What expires: for every form with a `retention_days` (archived forms too), the
  responses submitted before now minus that many days. The cutoff is cut to the whole
  second, so the event's RFC 3339 `before` is exactly the bound that was applied.
- What goes with them: responses/service.py RESPONSE_RECORDS (PDFs, staff notes; a
  later feature's records add one line there). Audit events stay: they hold no PHI and
  are the record that the responses existed and were purged.
- Batches of at most `batch` responses (PURGE_BATCH), each in one transaction with ONE
  `responses.purged` event (the form's organisation, no actor, resource the form,
  detail {count, responseIds, retentionDays, before}): either the rows are gone and the
  event says so, or neither is.
- Safe to run twice at once (the daily job on two instances, the command beside the
  service): a batch takes its rows FOR UPDATE SKIP LOCKED on PostgreSQL, and DELETE ...
  RETURNING says which rows this transaction deleted, so each response is named by
  exactly one event; on SQLite the second writer finds them gone. Idempotent: run again,
  it finds nothing left.
- No PHI: events and log lines carry ids and counts only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, and_, delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from healthforms.audit.events import REQUESTS_PURGED, RESPONSES_PURGED, AuditEvent
from healthforms.audit.store import append_in
from healthforms.clock import rfc3339, utcnow
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database, DatabaseUnavailable
from healthforms.forms.models import Form
from healthforms.patient_requests.models import PatientRequest
from healthforms.responses.models import ResponseRow
from healthforms.responses.service import delete_responses

log = structlog.get_logger("healthforms.retention")

# Responses per transaction: a short write that holds the chain's lock and the SQLite
# writer only briefly, and an event detail of about 15 KB of ids.
PURGE_BATCH = 500
FORM_RESOURCE = "form"


@dataclass(frozen=True, slots=True)
class RetainedForm:
    """A form with a retention period, and the cutoff of this run."""

    form_id: str
    organization_id: str
    retention_days: int
    before: datetime  # responses submitted before this have expired


@dataclass(frozen=True, slots=True)
class FormPurge:
    """What one run did to (or, dry, found in) one form."""

    form: RetainedForm
    count: int  # responses purged, or expired (a dry run)
    failed: str | None = None  # the error class that stopped it; `count` were purged first


def cutoff(now: datetime, retention_days: int) -> datetime:
    """The first submission time that is still kept, to the whole second."""
    return (now - timedelta(days=retention_days)).replace(microsecond=0)


async def retained_forms(db: Database, now: datetime) -> list[RetainedForm]:
    """Every form with a retention period (any status, any organisation)."""
    async with db.sessions() as session:
        rows = await session.execute(
            select(Form.id, Form.organization_id, Form.retention_days)
            .where(Form.retention_days.is_not(None))
            .order_by(Form.organization_id, Form.id)
        )
        return [
            RetainedForm(form_id, organization_id, days, cutoff(now, days))
            for form_id, organization_id, days in rows
            if days is not None
        ]


def _expired(form: RetainedForm) -> ColumnElement[bool]:
    return and_(
        ResponseRow.form_id == form.form_id,
        ResponseRow.organization_id == form.organization_id,
        ResponseRow.submitted_at < form.before,
    )


async def count_expired(db: Database, *, now: datetime | None = None) -> list[FormPurge]:
    """What a purge now would delete, per form with a retention period (the dry run)."""
    found = []
    for form in await retained_forms(db, now or utcnow()):
        async with db.sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(ResponseRow).where(_expired(form))
            )
        found.append(FormPurge(form, int(count or 0)))
    return found


def purged_event(form: RetainedForm, response_ids: list[str]) -> AuditEvent:
    """The `responses.purged` event of one batch: ids and counts, never PHI."""
    return AuditEvent(
        action=RESPONSES_PURGED,
        organization_id=form.organization_id,
        resource_type=FORM_RESOURCE,
        resource_id=form.form_id,
        detail={
            "count": len(response_ids),
            "responseIds": response_ids,
            "retentionDays": form.retention_days,
            "before": rfc3339(form.before),
        },
    )


async def _purge_batch(
    db: Database, keys: KeyRing, form: RetainedForm, batch: int
) -> tuple[int, list[str]]:
    """One transaction: (expired responses it found, the ids it deleted)."""
    async with db.sessions() as session, session.begin():
        # SKIP LOCKED: rows another purge is deleting right now are its to report.
        candidates = list(
            (
                await session.execute(
                    select(ResponseRow.id)
                    .where(_expired(form))
                    .order_by(ResponseRow.submitted_at, ResponseRow.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        deleted = await delete_responses(session, candidates)
        if deleted:
            await append_in(session, keys, purged_event(form, deleted))
    if deleted:
        log.info(
            "responses_purged",
            form_id=form.form_id,
            organization_id=form.organization_id,
            count=len(deleted),
            retention_days=form.retention_days,
            before=rfc3339(form.before),
        )
    return len(candidates), deleted


async def _purge_requests_batch(
    db: Database, keys: KeyRing, form: RetainedForm, batch: int
) -> list[str]:
    """One transaction: delete up to `batch` of the form's requests that never produced
    a response and stopped working (expired, or cancelled: both carry `expires_at`)
    before the cutoff, with one `requests.purged` event; their ids. A request that did
    produce a response goes with that response (RESPONSE_RECORDS)."""
    async with db.sessions() as session, session.begin():
        ended = list(
            (
                await session.execute(
                    select(PatientRequest.id)
                    .where(
                        PatientRequest.form_id == form.form_id,
                        PatientRequest.response_id.is_(None),
                        PatientRequest.state != "completed",
                        PatientRequest.expires_at < form.before,
                    )
                    .order_by(PatientRequest.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        if not ended:
            return []
        deleted = sorted(
            (
                await session.execute(
                    delete(PatientRequest)
                    .where(PatientRequest.id.in_(ended))
                    .returning(PatientRequest.id)
                    .execution_options(synchronize_session=False)
                )
            ).scalars()
        )
        if deleted:
            await append_in(
                session,
                keys,
                AuditEvent(
                    action=REQUESTS_PURGED,
                    organization_id=form.organization_id,
                    resource_type=FORM_RESOURCE,
                    resource_id=form.form_id,
                    detail={
                        "count": len(deleted),
                        "requestIds": deleted,
                        "retentionDays": form.retention_days,
                        "before": rfc3339(form.before),
                    },
                ),
            )
    return deleted


async def purge_form(
    db: Database,
    keys: KeyRing,
    form: RetainedForm,
    *,
    batch: int = PURGE_BATCH,
    should_stop: Callable[[], bool] = lambda: False,
) -> FormPurge:
    """Purge one form's expired responses, batch after batch, until none is left (or
    `should_stop()` says so between batches: the service is shutting down)."""
    purged = 0
    try:
        while not should_stop():
            found, deleted = await _purge_batch(db, keys, form, batch)
            purged += len(deleted)
            if found == 0:
                break
        # Requests that asked a patient and were never answered hold the patient's name
        # and contact details: they go once ended for longer than the period too.
        while not should_stop() and len(await _purge_requests_batch(db, keys, form, batch)):
            pass
    except (SQLAlchemyError, DatabaseUnavailable, OSError) as exc:
        # The batch rolled back with its event; the next run picks it up again.
        log.error("purge_failed", form_id=form.form_id, error_type=type(exc).__name__)
        return FormPurge(form, purged, failed=type(exc).__name__)
    return FormPurge(form, purged)


async def purge_expired(
    db: Database,
    keys: KeyRing,
    *,
    now: datetime | None = None,
    batch: int = PURGE_BATCH,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[FormPurge]:
    """Purge every form's expired responses; one form's failure does not stop the
    others (each result says whether it failed)."""
    results = []
    for form in await retained_forms(db, now or utcnow()):
        if should_stop():
            break
        results.append(await purge_form(db, keys, form, batch=batch, should_stop=should_stop))
    return results
