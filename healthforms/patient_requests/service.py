"""Requests to a patient: a personal, single-use link to one published form.

The link's token is 32 random bytes (as strong as a session id), shown to staff once
and never stored: the row keeps its SHA-256, so a database reader cannot use a link and
a lookup is one indexed equality. Who the request is for (name, email, phone, prefilled
answers) is sealed like answers (crypto/envelope.py, AAD = the request id).

States, and who moves them (every move a conditional UPDATE, so two at once give one):

    created --sent--> sent --opened--> opened --completed--> completed
       \\________________\\____________\\-------cancelled--> cancelled

`expired` is derived, never stored: not completed or cancelled and `expires_at` passed.
A reissue (a new token; the old link stops working) puts a live request back to
`created`. Completion happens in the response's own transaction (RequestCompletion, a
submissions ResponseLink): the response INSERT, this UPDATE and both audit events commit
together, and an UPDATE that finds the request no longer live refuses the whole
submission, so one request never produces two responses, whatever arrives at once.
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import segno
import structlog
from sqlalchemy import Select, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import (
    REQUEST_CANCELLED,
    REQUEST_COMPLETED,
    REQUEST_CREATED,
    REQUEST_OPENED,
    REQUEST_REISSUED,
    REQUEST_SENT,
    AuditEvent,
)
from healthforms.audit.recorder import Auditor
from healthforms.clock import rfc3339, utcnow
from healthforms.crypto.envelope import DecryptionFailed, Sealed, open_json, request_aad, seal_json
from healthforms.crypto.keys import KeyRing
from healthforms.db.base import new_id
from healthforms.errors import Conflict, HealthformsError, NotFound, ValidationFailed
from healthforms.forms.models import Form
from healthforms.forms.schema import FieldDef, FieldType
from healthforms.identity.models import Organization
from healthforms.languages import DEFAULT_LANGUAGE, N_
from healthforms.outbox.store import REQUEST_COMPLETED as REQUEST_COMPLETED_MESSAGE
from healthforms.outbox.store import enqueue
from healthforms.patient_requests.mail import enqueue_link, enqueue_receipt
from healthforms.patient_requests.models import PatientRequest
from healthforms.responses.patients import PatientIdentity
from healthforms.responses.service import get_form
from healthforms.security.context import RequestContext
from healthforms.security.ratelimit import RateVerdict
from healthforms.state import AppState
from healthforms.submissions.service import (
    PublishedForm,
    SubmissionResult,
    SubmissionService,
    current_published,
)
from healthforms.submissions.validation import validate_answers

log = structlog.get_logger("healthforms.requests")

RESOURCE_TYPE = "request"

CREATED, SENT, OPENED, COMPLETED, CANCELLED = "created", "sent", "opened", "completed", "cancelled"
EXPIRED = "expired"  # derived from expires_at, never stored
LIVE = (CREATED, SENT, OPENED)
STATES = (CREATED, SENT, OPENED, COMPLETED, CANCELLED, EXPIRED)

TOKEN_BYTES = 32
# token_urlsafe(32): 43 characters of the URL-safe alphabet. Anything else is not a
# token of ours and is answered 404 without a query.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")

MAX_NAME = 200
DEFAULT_EXPIRY_DAYS = 7
MAX_EXPIRY_DAYS = 90
MAX_PREFILL_FIELDS = 200

CHANNEL_HANDOVER = "handover"  # staff printed it, showed the QR code or read it out
CHANNEL_EMAIL = "email"


class RequestClosed(HealthformsError):
    status_code, code = 410, "request_closed"
    message = N_("This link was already used or has expired. Contact your clinic.")


class FormNotPublished(Conflict):
    code = "form_not_published"
    message = "Publish the form before sending it to a patient."


class InvalidTransition(Conflict):
    code = "invalid_transition"
    message = "The request cannot make that change in its current state."

    def __init__(self, state: str) -> None:
        super().__init__(extra={"state": state})


# Tokens --------------------------------------------------------------------------------


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the database holds of a link: SHA-256, hex. A 256-bit random token needs no
    salt or slow hash (there is nothing to guess), and equal tokens hash equal, so the
    lookup is one UNIQUE index probe."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def is_token_shaped(raw: object) -> bool:
    """Whether `raw` could be a token of ours (length and alphabet): hostile input of any
    shape is answered as an unknown link, never an exception."""
    return isinstance(raw, str) and _TOKEN_RE.fullmatch(raw) is not None


def qr_svg(link: str) -> str:
    """The link as a QR code: a standalone SVG (medium error correction, so a print
    with a crease still scans), made here: nothing leaves the service."""
    out = io.BytesIO()
    segno.make(link, error="m", micro=False).save(
        out, kind="svg", xmldecl=False, scale=4, border=4, title="QR code of the link"
    )
    return out.getvalue().decode("utf-8")


# The sealed contact ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contact:
    """Who a request is for: PHI, sealed in the row, never logged or audited."""

    name: str
    email: str | None = None
    phone: str | None = None
    prefill: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "prefill": self.prefill,
        }


def seal_contact(keys: KeyRing, request_id: str, contact: Contact) -> Sealed:
    return seal_json(keys, contact.as_json(), request_aad(request_id))


def open_contact(keys: KeyRing, row: PatientRequest) -> Contact | None:
    """The contact, or None when it will not decrypt (altered, or its key is gone)."""
    sealed = Sealed(ciphertext=row.ciphertext, wrapped_key=row.wrapped_key, key_id=row.key_id)
    try:
        payload = open_json(keys, sealed, request_aad(row.id))
    except (DecryptionFailed, UnicodeDecodeError, ValueError) as exc:
        log.error("request_decrypt_failed", request_id=row.id, reason=type(exc).__name__)
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return None
    email, phone, prefill = payload.get("email"), payload.get("phone"), payload.get("prefill")
    return Contact(
        name=payload["name"],
        email=email if isinstance(email, str) else None,
        phone=phone if isinstance(phone, str) else None,
        prefill=prefill if isinstance(prefill, dict) else {},
    )


# What staff send ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewRequest:
    contact: Contact
    expires_in: timedelta
    send_email: bool = False  # email the link to the patient (patient_requests/notify.py)


_CONTACT_FIELDS = [
    FieldDef(id="email", type=FieldType.EMAIL, label="Email"),
    FieldDef(id="phone", type=FieldType.PHONE, label="Phone"),
]
_BODY_KEYS = frozenset({"patientName", "email", "phone", "prefill", "expiresInDays", "sendEmail"})


def parse_expiry(body: dict[str, Any], errors: dict[str, str]) -> timedelta:
    days = body.get("expiresInDays", DEFAULT_EXPIRY_DAYS)
    if days is None:
        days = DEFAULT_EXPIRY_DAYS
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRY_DAYS:
        errors["expiresInDays"] = f"a whole number of days from 1 to {MAX_EXPIRY_DAYS}"
        return timedelta(days=DEFAULT_EXPIRY_DAYS)
    return timedelta(days=days)


def _optional_text(body: dict[str, Any], key: str) -> object:
    """A contact field's value; an empty string (a blank input on the page) is absent."""
    value = body.get(key)
    if isinstance(value, str) and not value.strip():
        return None
    return value


def parse_new_request(body: object, form: PublishedForm) -> NewRequest:
    """A create body, checked; 422 naming each key that is wrong (never echoing it).

    Prefilled answers are checked by the submissions validator against the published
    version, every field optional (a prefill may be partial; the patient completes it).
    """
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "must be an object"})
    errors: dict[str, str] = {}
    for key in body:
        if key not in _BODY_KEYS and len(errors) < 10:
            errors[str(key)[:64]] = "unknown key"
    name = body.get("patientName")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME:
        errors["patientName"] = f"the patient's name, 1 to {MAX_NAME} characters"
        name = ""
    contact_answers = {
        key: value for key in ("email", "phone") if (value := _optional_text(body, key)) is not None
    }
    checked: dict[str, Any] = {}
    try:
        checked = validate_answers(_CONTACT_FIELDS, contact_answers)
    except ValidationFailed as exc:
        errors.update(exc.extra["fields"])
    prefill: dict[str, Any] = {}
    raw_prefill = body.get("prefill")
    if raw_prefill is not None:
        if not isinstance(raw_prefill, dict) or len(raw_prefill) > MAX_PREFILL_FIELDS:
            errors["prefill"] = "must be an object of answers by field id"
        else:
            try:
                prefill = validate_prefill(form.fields, raw_prefill)
            except ValidationFailed as exc:
                errors.update({f"prefill.{k}": v for k, v in exc.extra["fields"].items()})
    expires_in = parse_expiry(body, errors)
    send_email = body.get("sendEmail", False)
    if not isinstance(send_email, bool):
        errors["sendEmail"] = "true or false"
        send_email = False
    elif send_email and not checked.get("email") and "email" not in errors:
        errors["sendEmail"] = "give the patient's email address to send the link to"
    if errors:
        raise ValidationFailed(errors)
    return NewRequest(
        send_email=send_email,
        contact=Contact(
            name=name.strip(),
            email=checked.get("email"),
            phone=checked.get("phone"),
            prefill=prefill,
        ),
        expires_in=expires_in,
    )


def validate_prefill(fields: list[FieldDef], raw: object) -> dict[str, Any]:
    """Prefilled answers as a submission would store them, no field required."""
    optional = [f.model_copy(update={"required": False}) for f in fields]
    return validate_answers(optional, raw)


def parse_reissue(body: object) -> timedelta:
    """A reissue body: `{}` or nothing, or `{"expiresInDays": 1..90}`."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "must be an object"})
    errors: dict[str, str] = {
        str(key)[:64]: "unknown key" for key in list(body)[:10] if key != "expiresInDays"
    }
    expires_in = parse_expiry(body, errors)
    if errors:
        raise ValidationFailed(errors)
    return expires_in


# Reading -------------------------------------------------------------------------------


def state_of(row: PatientRequest, now: datetime | None = None) -> str:
    if row.state in LIVE and row.expires_at <= (now or utcnow()):
        return EXPIRED
    return row.state


def request_json(row: PatientRequest, contact: Contact | None, now: datetime) -> dict[str, Any]:
    """A Request (docs/requests.md). `contact` None: it will not decrypt."""

    def when(at: datetime | None) -> str | None:
        return rfc3339(at) if at else None

    body: dict[str, Any] = {
        "id": row.id,
        "formId": row.form_id,
        "state": state_of(row, now),
        "patientName": contact.name if contact else None,
        "createdAt": rfc3339(row.created_at),
        "expiresAt": rfc3339(row.expires_at),
        "sentAt": when(row.sent_at),
        "openedAt": when(row.opened_at),
        "completedAt": when(row.completed_at),
        "responseId": row.response_id,
    }
    if contact is None:
        body["unreadable"] = True
    else:
        if contact.email:
            body["email"] = contact.email
        if contact.phone:
            body["phone"] = contact.phone
    return body


async def get_request(
    session: AsyncSession, organization_id: str, request_id: str
) -> PatientRequest:
    """A request of this organisation, or 404 (also for another clinic's)."""
    if not request_id or len(request_id) > 40:
        raise NotFound()
    row = (
        await session.execute(
            select(PatientRequest).where(
                PatientRequest.id == request_id, PatientRequest.organization_id == organization_id
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound()
    return row


def _state_filter(
    query: Select[PatientRequest], state: str, now: datetime
) -> Select[PatientRequest]:
    if state == EXPIRED:
        return query.where(PatientRequest.state.in_(LIVE), PatientRequest.expires_at <= now)
    if state in LIVE:
        return query.where(PatientRequest.state == state, PatientRequest.expires_at > now)
    return query.where(PatientRequest.state == state)


async def list_requests(
    session: AsyncSession, organization_id: str, form_id: str, state: str | None, now: datetime
) -> list[PatientRequest]:
    """A form's requests, newest first, optionally in one (derived) state; 404 for
    another organisation's form."""
    await get_form(session, organization_id, form_id)
    query = select(PatientRequest).where(
        PatientRequest.organization_id == organization_id, PatientRequest.form_id == form_id
    )
    if state is not None:
        query = _state_filter(query, state, now)
    query = query.order_by(PatientRequest.created_at.desc(), PatientRequest.id.desc()).limit(500)
    return list((await session.execute(query)).scalars())


async def published_version(
    state: AppState, session: AsyncSession, form: Form
) -> PublishedForm | None:
    """The version a patient gets through a request: the one published now (as through
    the public link), or None while the form is not published."""
    if form.status != "published" or not form.public_id:
        return None
    try:
        return await current_published(state, session, form.public_id)
    except NotFound:
        return None


async def clinic_name(session: AsyncSession, organization_id: str) -> str:
    name = (
        await session.execute(select(Organization.name).where(Organization.id == organization_id))
    ).scalar_one_or_none()
    return name or "your clinic"


# Staff: create, reissue, sent, cancel --------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedRequest:
    """A request with its link's token: the only moment the token exists in clear."""

    row: PatientRequest
    contact: Contact | None
    token: str


async def _commit_with(session: AsyncSession, auditor: Auditor, event: AuditEvent) -> None:
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)


async def create_request(
    state: AppState,
    session: AsyncSession,
    organization_id: str,
    user_id: str,
    form_id: str,
    body: object,
    auditor: Auditor,
) -> IssuedRequest:
    form = await get_form(session, organization_id, form_id)
    published = await published_version(state, session, form)
    if published is None:
        raise FormNotPublished()
    new = parse_new_request(body, published)
    if new.send_email and not state.settings.mail_enabled:
        raise ValidationFailed(
            {"sendEmail": "this service sends no email (HEALTHFORMS_SMTP_HOST is not set)"}
        )
    now = utcnow()
    token = new_token()
    request_id = new_id("req_")
    sealed = seal_contact(state.keys, request_id, new.contact)
    row = PatientRequest(
        id=request_id,
        organization_id=organization_id,
        form_id=form.id,
        token_hash=token_hash(token),
        ciphertext=sealed.ciphertext,
        wrapped_key=sealed.wrapped_key,
        key_id=sealed.key_id,
        state=CREATED,
        expires_at=now + new.expires_in,
        created_by=user_id,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    if new.send_email:
        # Committed with the request: the email cannot be lost, nor sent for a request
        # that was not stored.
        await enqueue_link(session, state.keys, row, token)
    event = auditor.event(
        REQUEST_CREATED,
        resource_type=RESOURCE_TYPE,
        resource_id=request_id,
        detail={"formId": form.id},
    )
    await _commit_with(session, auditor, event)
    return IssuedRequest(row, new.contact, token)


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def reissue_request(
    state: AppState,
    session: AsyncSession,
    organization_id: str,
    request_id: str,
    body: object,
    auditor: Auditor,
) -> IssuedRequest:
    """A new link for a request that is not completed or cancelled (an expired one
    included: a reissue sets a new expiry). The old token stops working at once; the
    request is back to `created` (the new link was not handed over or opened yet)."""
    row = await get_request(session, organization_id, request_id)
    expires_in = parse_reissue(body)
    if row.state not in LIVE:
        raise InvalidTransition(row.state)
    now = utcnow()
    token = new_token()
    result = await session.execute(
        update(PatientRequest)
        .where(PatientRequest.id == row.id, PatientRequest.state.in_(LIVE))
        .values(
            token_hash=token_hash(token),
            state=CREATED,
            expires_at=now + expires_in,
            sent_at=None,
            opened_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:  # completed or cancelled since we read it
        await session.rollback()
        current = await get_request(session, organization_id, request_id)
        raise InvalidTransition(current.state)
    event = auditor.event(REQUEST_REISSUED, resource_type=RESOURCE_TYPE, resource_id=row.id)
    await _commit_with(session, auditor, event)
    fresh = await get_request(session, organization_id, request_id)
    await session.refresh(fresh)
    return IssuedRequest(fresh, open_contact(state.keys, fresh), token)


@dataclass(frozen=True, slots=True)
class Moved:
    """The request after a move, and the event written in the caller's transaction
    (None: it already was there, nothing changed)."""

    row: PatientRequest
    event: AuditEvent | None


async def move_to_sent(
    session: AsyncSession, request_id: str, organization_id: str, now: datetime
) -> bool:
    """created -> sent if the request is still created and unexpired; True if it moved.

    The one transition both staff ("Mark as handed over", mark_sent) and the email
    outbox (notify.py, once the link is handed to the mail server) make; each records
    its own `request.sent` event in the same transaction."""
    result = await session.execute(
        update(PatientRequest)
        .where(
            PatientRequest.id == request_id,
            PatientRequest.organization_id == organization_id,
            PatientRequest.state == CREATED,
            PatientRequest.expires_at > now,
        )
        .values(state=SENT, sent_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def mark_sent(
    session: AsyncSession,
    request_id: str,
    *,
    organization_id: str,
    auditor: Auditor,
    channel: str = CHANNEL_HANDOVER,
) -> Moved:
    """created -> sent, with a `request.sent` event ({"channel"}) in the caller's
    transaction: commit, then `auditor.committed(moved.event)` when it is not None.

    Already sent: no change. Opened, completed, cancelled or expired: InvalidTransition
    (409). The email outbox calls this with channel="email" once a message is handed to
    the mail server; staff's "Mark as handed over" with the default."""
    now = utcnow()
    moved = await move_to_sent(session, request_id, organization_id, now)
    row = await get_request(session, organization_id, request_id)
    if moved:
        await session.refresh(row)
        event = auditor.event(
            REQUEST_SENT,
            resource_type=RESOURCE_TYPE,
            resource_id=request_id,
            organization_id=organization_id,
            detail={"channel": channel},
        )
        await auditor.record_in(session, event)
        return Moved(row, event)
    current = state_of(row, now)
    if current == SENT:
        return Moved(row, None)
    raise InvalidTransition(current)


async def cancel_request(
    session: AsyncSession, request_id: str, *, organization_id: str, auditor: Auditor
) -> Moved:
    """Any request not completed (an expired one too) -> cancelled, its link dead for
    good; cancelling a cancelled one changes nothing. Event in the caller's transaction,
    as for mark_sent."""
    result = await session.execute(
        update(PatientRequest)
        .where(
            PatientRequest.id == request_id,
            PatientRequest.organization_id == organization_id,
            PatientRequest.state.in_(LIVE),
        )
        .values(state=CANCELLED)
        .execution_options(synchronize_session=False)
    )
    row = await get_request(session, organization_id, request_id)
    if _rowcount(result) == 1:
        await session.refresh(row)
        event = auditor.event(
            REQUEST_CANCELLED,
            resource_type=RESOURCE_TYPE,
            resource_id=request_id,
            organization_id=organization_id,
        )
        await auditor.record_in(session, event)
        return Moved(row, event)
    if row.state == CANCELLED:
        return Moved(row, None)
    raise InvalidTransition(row.state)


# The patient's side --------------------------------------------------------------------


async def find_by_token(session: AsyncSession, raw_token: object) -> PatientRequest:
    """The request a link's token names, or 404 (also for anything not token-shaped)."""
    if not is_token_shaped(raw_token):
        raise NotFound()
    assert isinstance(raw_token, str)
    row = (
        await session.execute(
            select(PatientRequest).where(PatientRequest.token_hash == token_hash(raw_token))
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound()
    return row


def served_prefill(fields: list[FieldDef], contact: Contact) -> dict[str, Any]:
    """The answers the patient's page starts with: the prefill staff gave, for the
    fields the published version still has, and the request's name in the form's one
    name field (when it marks exactly one and staff did not prefill it)."""
    known = {f.id for f in fields}
    prefill = {k: v for k, v in contact.prefill.items() if k in known}
    name_fields = [f for f in fields if f.identifies == "name" and f.type is FieldType.TEXT]
    if len(name_fields) == 1 and name_fields[0].id not in prefill:
        only = name_fields[0]
        try:
            prefill.update(validate_prefill([only], {only.id: contact.name}))
        except ValidationFailed:
            pass  # the field's own rules refuse it (too long, a pattern): the patient types it
    return prefill


@dataclass(frozen=True, slots=True)
class OpenedRequest:
    row: PatientRequest
    form: PublishedForm
    prefill: dict[str, Any]


async def live_request(
    state: AppState, session: AsyncSession, raw_token: object
) -> tuple[PatientRequest, PublishedForm]:
    """A live request and the version it serves; 404 unknown, 410 closed (used,
    expired, cancelled, or its form no longer published)."""
    row = await find_by_token(session, raw_token)
    if state_of(row) not in LIVE:
        raise RequestClosed()
    form = await get_form(session, row.organization_id, row.form_id)
    published = await published_version(state, session, form)
    if published is None:
        raise RequestClosed()
    return row, published


async def open_request(
    state: AppState, session: AsyncSession, raw_token: object, auditor: Auditor
) -> OpenedRequest:
    """What the patient's page shows; the first time, created/sent -> opened with a
    `request.opened` event (the patient's, pseudonymised)."""
    row, form = await live_request(state, session, raw_token)
    if row.state in (CREATED, SENT):
        now = utcnow()
        result = await session.execute(
            update(PatientRequest)
            .where(
                PatientRequest.id == row.id,
                PatientRequest.state.in_((CREATED, SENT)),
                PatientRequest.expires_at > now,
            )
            .values(state=OPENED, opened_at=now)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) == 1:
            event = auditor.event(
                REQUEST_OPENED,
                resource_type=RESOURCE_TYPE,
                resource_id=row.id,
                organization_id=row.organization_id,
            )
            await _commit_with(session, auditor, event)
        else:
            await session.rollback()  # another tab opened it a moment ago
    contact = open_contact(state.keys, row)
    prefill = served_prefill(form.fields, contact) if contact else {}
    return OpenedRequest(row, form, prefill)


def nonce_scope(request_id: str) -> str:
    """Where a request's nonces are valid: this request only (not its form's public
    link, not another request of the same form)."""
    return f"request:{request_id}"


@dataclass(frozen=True, slots=True)
class RequestCompletion:
    """The submissions ResponseLink of a request: completes it in the response's
    transaction, or refuses the submission when it is no longer live."""

    request_id: str
    organization_id: str
    patient_name: str | None

    def identity(self, from_answers: PatientIdentity) -> PatientIdentity:
        # The patient's own answers win; a form that asks no name gets the request's.
        if from_answers.name or not self.patient_name:
            return from_answers
        return PatientIdentity(name=self.patient_name, birth_date=from_answers.birth_date)

    async def stored(
        self, session: AsyncSession, response_id: str, at: datetime, auditor: Auditor
    ) -> list[AuditEvent]:
        result = await session.execute(
            update(PatientRequest)
            .where(
                and_(
                    PatientRequest.id == self.request_id,
                    PatientRequest.state.in_(LIVE),
                    PatientRequest.expires_at > at,
                )
            )
            .values(state=COMPLETED, completed_at=at, response_id=response_id)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) != 1:
            # Used by another copy a moment ago, expired, or cancelled: store nothing.
            raise RequestClosed()
        # A receipt with the confirmation code, if the request has an email address.
        await enqueue_receipt(session, self.organization_id, self.request_id, response_id)
        # The webhooks' event, with the response's transaction (ids only).
        await enqueue(
            session,
            self.organization_id,
            REQUEST_COMPLETED_MESSAGE,
            {"requestId": self.request_id, "responseId": response_id},
        )
        return [
            auditor.event(
                REQUEST_COMPLETED,
                resource_type=RESOURCE_TYPE,
                resource_id=self.request_id,
                organization_id=self.organization_id,
                detail={"responseId": response_id},
            )
        ]


async def submittable_request(
    state: AppState, session: AsyncSession, raw_token: object
) -> tuple[PatientRequest, PublishedForm]:
    """A request a submission may be sent to and the version it is checked against: a
    live one, or a completed one (whose resend is answered); 404 unknown, 410 closed."""
    row = await find_by_token(session, raw_token)
    if state_of(row) not in (*LIVE, COMPLETED):
        raise RequestClosed()
    form = await get_form(session, row.organization_id, row.form_id)
    published = await published_version(state, session, form)
    if published is None:
        raise RequestClosed()
    return row, published


async def submit_to_request(
    state: AppState,
    session: AsyncSession,
    raw_token: object,
    body: object,
    context: RequestContext,
    auditor: Auditor,
    rate_check: Callable[[], Awaitable[RateVerdict]] | None = None,
    language: str = DEFAULT_LANGUAGE,
) -> SubmissionResult:
    """A submission through a request's link: SubmissionService's exactly-once storage
    (nonce claim, validation, resends) plus the request's completion in the same
    transaction. A completed request still answers a resend of the submission that
    completed it (the same nonce and answers: 200, the same confirmation); any other
    copy is 410."""
    row, published = await submittable_request(state, session, raw_token)
    contact = open_contact(state.keys, row)
    link = RequestCompletion(row.id, row.organization_id, contact.name if contact else None)
    return await SubmissionService(state).submit(
        session,
        published,
        body,
        context,
        auditor,
        rate_check,
        scope=nonce_scope(row.id),
        link=link,
        language=language,
    )
