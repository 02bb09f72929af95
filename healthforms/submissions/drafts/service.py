"""Saved drafts: a patient stops half-way and comes back, on this device or another.

What is stored (docs/drafts.md):
- The answers, sealed like a response's (envelope encryption, AAD = draft id + form
  id), in the database: the only place a draft's content lives.
- The resume link's token (32 bytes, URL-safe) and the code a patient types (10
  Crockford base32 characters, 50 bits) are never stored. Both are derived from the
  row's random seed with keys derived from the master key (HKDF purposes
  "draft-link" and "draft-code"), so the service can show them again after any save
  or resume, on any device, while a reader of the database alone has neither. The row
  keeps SHA-256 of the token (a 256-bit secret needs no salt) and an HMAC of the code
  (a 50-bit secret would fall to a plain hash), each UNIQUE: one index probe a lookup.
- Redis holds `draft:{<token hash>}` -> draft id, with the draft's remaining life as
  its TTL: no answers, no PHI. It is a pointer only; the database is the last word
  (Redis flushed or down: the lookup goes to the token hash's index, counted as a
  degraded decision).

Who may do what: the token is the draft (whoever has the link may read and update it);
the code opens it too, only on its form's page and under two rate limits (per client
address and per form: http/ratelimits.py policies draft_code and draft_code_form).

Life: every save sets the expiry to now + HEALTHFORMS_DRAFT_TTL_HOURS. A draft is
deleted in the transaction of the submission that sends it (DraftSent, a submissions
ResponseLink), or by the sweep once expired (sweep_expired, run with the retention
purge); an expired draft not yet swept is refused (410) as if it were gone.

Files: a file answer is a list of upload ids (uploads/). A save keeps those pending
uploads alive until the draft's expiry, in the save's transaction; a resume on a new
page binds them to that page's nonce (the submission only attaches its own page's
uploads) and lists them, so the patient sees what is kept and may remove it. Once the
draft is sent its files are attached; deleted or expired, they are swept at the
draft's expiry like any pending upload.

Concurrency: the first save of a page is keyed by the page's nonce (UNIQUE nonce_id):
two first saves at once make one draft, the second updating the first's row. Later
saves name the draft by its token and replace its answers whole (the last one wins).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import (
    DRAFT_DELETED,
    DRAFT_EMAILED,
    DRAFT_RESUMED,
    DRAFT_SAVED,
    AuditEvent,
)
from healthforms.audit.recorder import Auditor
from healthforms.audit.store import append_in
from healthforms.clock import utcnow
from healthforms.crypto.envelope import DecryptionFailed, Sealed, draft_aad, open_json, seal_json
from healthforms.crypto.keys import KeyRing, key_id
from healthforms.db.base import new_id
from healthforms.db.engine import Database
from healthforms.errors import HealthformsError, NotFound, ValidationFailed
from healthforms.forms.schema import FieldDef, FieldType
from healthforms.languages import N_
from healthforms.redis.errors import RedisUnavailable
from healthforms.responses.models import ResponseRow
from healthforms.responses.patients import PatientIdentity
from healthforms.state import AppState
from healthforms.submissions import nonces
from healthforms.submissions.drafts.answers import check_draft_answers, fit_answers
from healthforms.submissions.drafts.mail import enqueue_link
from healthforms.submissions.drafts.models import FormDraft
from healthforms.submissions.service import PublishedForm, current_published
from healthforms.submissions.validation import validate_answers
from healthforms.uploads.service import (
    PENDING_GRACE,
    StoredUpload,
    extend_pending,
    pending_uploads,
)

log = structlog.get_logger("healthforms.drafts")

RESOURCE_TYPE = "draft"
POINTER_KEY = "draft:{{{token_hash}}}"  # braces: a Cluster hash tag
TOKEN_PURPOSE = "draft-link"  # noqa: S105 - an HKDF purpose, not a secret
CODE_PURPOSE = "draft-code"
CODE_INDEX_PURPOSE = "draft-code-index"
SEED_BYTES = 32
# Crockford's base32: no I, L, O or U, so a code read aloud or typed is not misread.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10  # 50 bits
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
# What a patient may type: any case, spaces and dashes, and the letters Crockford reads
# as digits (O -> 0, I and L -> 1).
_CODE_SEPARATORS = re.compile(r"[\s-]+")
_CODE_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
MAX_CODE_INPUT = 40
SWEEP_BATCH = 500

# The reasons of a `draft.deleted` event (its detail: never PHI).
SENT, EXPIRED, DISCARDED = "submitted", "expired", "discarded"


class DraftNotFound(HealthformsError):
    status_code, code = 404, "draft_not_found"
    message = N_("No saved form was found for this link. It may have been sent already.")


class DraftCodeNotFound(HealthformsError):
    status_code, code = 404, "draft_not_found"
    message = N_("No saved form matches this code. Check the code and try again.")


class DraftExpired(HealthformsError):
    status_code, code = 410, "draft_expired"
    message = N_("This saved form has expired. Please fill in the form again.")


class DraftNonceInvalid(HealthformsError):
    status_code, code = 400, "nonce_invalid"
    message = N_("This form link has expired. Reload the page and save again.")


class DraftAfterSending(HealthformsError):
    status_code, code = 409, "nonce_used"
    message = N_("This form was already sent from this page: there is nothing left to save.")


# Secrets ----------------------------------------------------------------------------------


def _mac(key: bytes, *parts: str | bytes) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        mac.update(len(data).to_bytes(4, "big") + data)
    return mac.digest()


def _secret_key(keys: KeyRing, kid: str, purpose: str) -> bytes | None:
    return keys.hmac_key_for(kid, purpose)


def derive_token(key: bytes, draft_id: str, seed: bytes) -> str:
    """The resume link's token: 43 URL-safe characters (256 bits)."""
    return base64.urlsafe_b64encode(_mac(key, "token", draft_id, seed)).rstrip(b"=").decode()


def derive_code(key: bytes, draft_id: str, seed: bytes) -> str:
    """The code to type: 10 Crockford base32 characters (the first 50 bits of a MAC)."""
    bits = int.from_bytes(_mac(key, "code", draft_id, seed)[:8], "big") >> (64 - 5 * CODE_LENGTH)
    chars = [CROCKFORD[(bits >> (5 * i)) & 31] for i in reversed(range(CODE_LENGTH))]
    return "".join(chars)


def display_code(code: str) -> str:
    """A code as shown: two groups of five ("7KQ2M-9XD4R")."""
    return f"{code[:5]}-{code[5:]}"


def normalize_code(raw: object) -> str | None:
    """What a patient typed as the canonical code, or None when it cannot be one."""
    if not isinstance(raw, str) or len(raw) > MAX_CODE_INPUT:
        return None
    code = _CODE_SEPARATORS.sub("", raw).upper().translate(_CODE_ALIASES)
    if len(code) != CODE_LENGTH or any(ch not in CROCKFORD for ch in code):
        return None
    return code


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def code_hash(index_key: bytes, code: str) -> str:
    return hmac.new(index_key, code.encode("ascii"), hashlib.sha256).hexdigest()


def code_hashes(keys: KeyRing, code: str) -> list[str]:
    """The code's index under every configured master key: a draft saved before a key
    rotation is still found (it lives a few days at most)."""
    found = [code_hash(keys.hmac_key(CODE_INDEX_PURPOSE), code)]
    for previous in keys.previous:
        index_key = keys.hmac_key_for(key_id(previous), CODE_INDEX_PURPOSE)
        if index_key is not None:
            found.append(code_hash(index_key, code))
    return found


def is_token_shaped(raw: object) -> bool:
    return isinstance(raw, str) and _TOKEN_RE.fullmatch(raw) is not None


@dataclass(frozen=True, slots=True)
class DraftSecrets:
    token: str
    code: str  # canonical, ungrouped


def secrets_of(keys: KeyRing, row: FormDraft) -> DraftSecrets | None:
    """The draft's token and code again, or None when its master key is no longer held."""
    token_key = _secret_key(keys, row.secret_key_id, TOKEN_PURPOSE)
    code_key = _secret_key(keys, row.secret_key_id, CODE_PURPOSE)
    if token_key is None or code_key is None:
        return None
    return DraftSecrets(
        derive_token(token_key, row.id, row.seed), derive_code(code_key, row.id, row.seed)
    )


# What the API answers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DraftView:
    """A draft as its holder sees it (docs/drafts.md "Draft")."""

    draft_id: str
    token: str
    code: str
    expires_at: datetime
    public_id: str


@dataclass(frozen=True, slots=True)
class SavedDraft:
    view: DraftView
    created: bool  # True: a new draft (201); False: the same draft updated (200)


@dataclass(frozen=True, slots=True)
class ResumedDraft:
    view: DraftView
    form: PublishedForm
    answers: dict[str, Any]
    dropped: list[str]  # field ids of saved answers the current version has no place for
    # The pending uploads each file answer still names, by field id.
    files: dict[str, list[StoredUpload]]


def _view(keys: KeyRing, row: FormDraft, expires_at: datetime) -> DraftView:
    found = secrets_of(keys, row)
    if found is None:  # its master key was dropped from the ring: the link is dead
        raise DraftNotFound()
    return DraftView(row.id, found.token, found.code, expires_at, row.public_id)


# The Redis pointer ---------------------------------------------------------------------


def _degraded(state: AppState, decision: str) -> None:
    state.metrics.degraded_decisions.labels(feature="drafts", decision=decision).inc()
    log.warning("draft_pointer_fallback", decision=decision)


async def _set_pointer(state: AppState, hashed: str, draft_id: str, expires_at: datetime) -> None:
    ttl_ms = int((expires_at - utcnow()).total_seconds() * 1000)
    if ttl_ms <= 0:
        return
    key = state.redis.key(POINTER_KEY.format(token_hash=hashed))
    try:
        await state.redis.pipelined(
            lambda r: r.execute("SET", key, draft_id, "PX", ttl_ms), idempotent=True
        )
    except RedisUnavailable:
        _degraded(state, "pointer_not_set")


async def _pointer(state: AppState, hashed: str) -> str | None:
    """The draft id Redis points to, or None (no pointer, or Redis unavailable)."""
    if not state.redis.available:
        _degraded(state, "lookup_without_redis")
        return None
    key = state.redis.key(POINTER_KEY.format(token_hash=hashed))
    try:
        value = await state.redis.pipelined(lambda r: r.execute("GET", key), idempotent=True)
    except RedisUnavailable:
        _degraded(state, "lookup_without_redis")
        return None
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


async def forget_pointer(state: AppState, raw_token: object) -> None:
    """Drop a deleted draft's pointer (best effort: it expires with the draft anyway,
    and a pointer to a missing row finds nothing)."""
    if not is_token_shaped(raw_token) or not state.redis.available:
        return
    assert isinstance(raw_token, str)
    key = state.redis.key(POINTER_KEY.format(token_hash=token_hash(raw_token)))
    try:
        await state.redis.pipelined(lambda r: r.execute("DEL", key), idempotent=True)
    except RedisUnavailable:
        _degraded(state, "pointer_not_deleted")


# Saving --------------------------------------------------------------------------------


def _seal(keys: KeyRing, draft_id: str, form_id: str, answers: dict[str, Any]) -> Sealed:
    return seal_json(keys, {"answers": answers}, draft_aad(draft_id, form_id))


def open_answers(keys: KeyRing, row: FormDraft) -> dict[str, Any] | None:
    """The draft's answers, or None when they will not decrypt (altered, key gone)."""
    sealed = Sealed(ciphertext=row.ciphertext, wrapped_key=row.wrapped_key, key_id=row.key_id)
    try:
        payload = open_json(keys, sealed, draft_aad(row.id, row.form_id))
    except (DecryptionFailed, UnicodeDecodeError, ValueError) as exc:
        log.error("draft_decrypt_failed", draft_id=row.id, reason=type(exc).__name__)
        return None
    answers = payload.get("answers") if isinstance(payload, dict) else None
    return answers if isinstance(answers, dict) else None


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def _by_token(
    state: AppState, session: AsyncSession, raw_token: object
) -> tuple[FormDraft, str]:
    """The draft a token names and the token's hash; 404 unknown (any shape), 410 expired."""
    if not is_token_shaped(raw_token):
        raise DraftNotFound()
    assert isinstance(raw_token, str)
    hashed = token_hash(raw_token)
    query = select(FormDraft).where(FormDraft.token_hash == hashed)
    pointed = await _pointer(state, hashed)
    if pointed is not None:
        query = query.where(FormDraft.id == pointed)
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None and pointed is not None:
        # A stale pointer (the row was replaced): the token's own index decides.
        query = select(FormDraft).where(FormDraft.token_hash == hashed)
        row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise DraftNotFound()
    if row.expires_at <= utcnow():
        raise DraftExpired()
    return row, hashed


def _new_row(
    state: AppState, form: PublishedForm, nonce_id: str, answers: dict[str, Any], now: datetime
) -> FormDraft:
    keys = state.keys
    draft_id = new_id("drf_")
    seed = secrets.token_bytes(SEED_BYTES)
    token = derive_token(keys.hmac_key(TOKEN_PURPOSE), draft_id, seed)
    code = derive_code(keys.hmac_key(CODE_PURPOSE), draft_id, seed)
    sealed = _seal(keys, draft_id, form.form_id, answers)
    return FormDraft(
        id=draft_id,
        organization_id=form.organization_id,
        form_id=form.form_id,
        public_id=form.public_id,
        form_version=form.version,
        nonce_id=nonce_id,
        token_hash=token_hash(token),
        code_hash=code_hash(keys.hmac_key(CODE_INDEX_PURPOSE), code),
        seed=seed,
        secret_key_id=keys.current_id,
        ciphertext=sealed.ciphertext,
        wrapped_key=sealed.wrapped_key,
        key_id=sealed.key_id,
        created_at=now,
        updated_at=now,
        expires_at=now + ttl(state),
    )


def ttl(state: AppState) -> timedelta:
    return timedelta(hours=state.settings.draft_ttl_hours)


async def _update(
    state: AppState,
    session: AsyncSession,
    row: FormDraft,
    form: PublishedForm,
    answers: dict[str, Any],
    now: datetime,
) -> datetime | None:
    """Replace a live draft's answers and renew its life; its new expiry, or None when
    it expired or was deleted meanwhile."""
    sealed = _seal(state.keys, row.id, row.form_id, answers)
    expires_at = now + ttl(state)
    result = await session.execute(
        update(FormDraft)
        .where(FormDraft.id == row.id, FormDraft.expires_at > now)
        .values(
            ciphertext=sealed.ciphertext,
            wrapped_key=sealed.wrapped_key,
            key_id=sealed.key_id,
            form_version=form.version,
            updated_at=now,
            expires_at=expires_at,
        )
        .execution_options(synchronize_session=False)
    )
    return expires_at if _rowcount(result) == 1 else None


def file_answers(fields: list[FieldDef], answers: dict[str, Any]) -> dict[str, list[str]]:
    """The upload ids each file answer names (ids only: their owner is checked when used)."""
    found: dict[str, list[str]] = {}
    for field in fields:
        value = answers.get(field.id)
        if field.type is FieldType.FILE and isinstance(value, list):
            found[field.id] = [item for item in value if isinstance(item, str)]
    return found


def _all_ids(by_field: dict[str, list[str]]) -> list[str]:
    return [upload_id for ids in by_field.values() for upload_id in ids]


async def _by_nonce(session: AsyncSession, nonce_id: str) -> FormDraft | None:
    query = select(FormDraft).where(FormDraft.nonce_id == nonce_id)
    return (await session.execute(query)).scalar_one_or_none()


async def save_draft(
    state: AppState,
    session: AsyncSession,
    form: PublishedForm,
    body: object,
    auditor: Auditor,
) -> SavedDraft:
    """Save the answers as a draft of `form` (the version published now); with `draft`
    (a token) in the body, update that draft. The `draft.saved` event commits with it."""
    if not isinstance(body, dict):
        raise DraftNonceInvalid()
    answers = check_draft_answers(
        form.fields, body.get("answers"), max_bytes=state.settings.max_answers_bytes
    )
    now = utcnow()
    raw_token = body.get("draft")
    created = False
    if raw_token is not None:
        row, _hashed = await _by_token(state, session, raw_token)
        if row.form_id != form.form_id:
            raise DraftNotFound()  # another form's draft: not this page's to change
        expires_at = await _update(state, session, row, form, answers, now)
        if expires_at is None:
            raise DraftExpired()
    else:
        nonce = nonces.verify(state.keys, form.public_id, body.get("nonce"))
        if nonce is None:
            raise DraftNonceInvalid()
        row, expires_at, created = await _save_by_nonce(state, session, form, nonce, answers, now)
    # The files the answers name live as long as the draft (same transaction: a save
    # that fails keeps nothing alive). Only this form's pending uploads are touched.
    await extend_pending(
        session, _all_ids(file_answers(form.fields, answers)), expires_at, form_id=form.form_id
    )
    event = auditor.event(
        DRAFT_SAVED,
        resource_type=RESOURCE_TYPE,
        resource_id=row.id,
        organization_id=row.organization_id,
        detail={"formId": row.form_id, "created": created},
    )
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    view = _view(state.keys, row, expires_at)
    await _set_pointer(state, token_hash(view.token), row.id, expires_at)
    return SavedDraft(view, created)


async def _save_by_nonce(
    state: AppState,
    session: AsyncSession,
    form: PublishedForm,
    nonce: nonces.Nonce,
    answers: dict[str, Any],
    now: datetime,
) -> tuple[FormDraft, datetime, bool]:
    """A page's first save (no token yet): the draft of this nonce, made or updated.
    Refused once the page sent its response: a draft made then would outlive the form
    it belongs to until it expired."""
    sent = await session.execute(
        select(ResponseRow.id).where(ResponseRow.nonce_id == nonce.nonce_id)
    )
    if sent.first() is not None:
        raise DraftAfterSending()
    for _attempt in range(3):
        existing = await _by_nonce(session, nonce.nonce_id)
        if existing is not None and existing.form_id == form.form_id:
            expires_at = await _update(state, session, existing, form, answers, now)
            if expires_at is not None:
                return existing, expires_at, False
        if existing is not None:
            # Expired (or another form's: a forged pairing): it makes way for a new one.
            await session.execute(delete(FormDraft).where(FormDraft.id == existing.id))
        row = _new_row(state, form, nonce.nonce_id, answers, now)
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:
            # Another save of the same page got there first: update its draft instead
            # (nothing else was written in this transaction yet).
            await session.rollback()
            continue
        return row, row.expires_at, True
    raise DraftNonceInvalid()  # pragma: no cover - three lost races in a row


# Resuming ------------------------------------------------------------------------------


async def _resumed(
    state: AppState,
    session: AsyncSession,
    row: FormDraft,
    auditor: Auditor,
    via: str,
    raw_nonce: object = None,
) -> ResumedDraft:
    """The draft on the version published now, with its `draft.resumed` event (a read
    of PHI: audited). With the new page's nonce, the draft's files are bound to it (so
    that page's submission attaches them); a file no longer pending is dropped."""
    try:
        form = await current_published(state, session, row.public_id)
    except NotFound:
        raise DraftNotFound() from None
    saved = open_answers(state.keys, row)
    if saved is None:
        raise DraftNotFound()
    fitted = fit_answers(form.fields, saved)
    answers, dropped = dict(fitted.answers), list(fitted.dropped)
    view = _view(state.keys, row, row.expires_at)
    by_field = file_answers(form.fields, answers)
    nonce = nonces.verify(state.keys, form.public_id, raw_nonce) if by_field else None
    if nonce is not None and not nonce.is_expired():
        # The new page's nonce may outlive the draft: keep them as long as either.
        page_until = datetime.fromtimestamp(nonce.expires_at, UTC) + PENDING_GRACE
        await extend_pending(
            session,
            _all_ids(by_field),
            max(row.expires_at, page_until),
            nonce_id=nonce.nonce_id,
            form_id=form.form_id,
        )
    pending = await pending_uploads(session, form.form_id, _all_ids(by_field), utcnow())
    files: dict[str, list[StoredUpload]] = {}
    for field_id, ids in by_field.items():
        kept = [pending[upload_id] for upload_id in ids if upload_id in pending]
        if kept:
            answers[field_id] = [upload.id for upload in kept]
            files[field_id] = kept
        if len(kept) != len(ids):  # expired or sent meanwhile: the patient adds it again
            if not kept:
                del answers[field_id]
            dropped.append(field_id)
    event = auditor.event(
        DRAFT_RESUMED,
        resource_type=RESOURCE_TYPE,
        resource_id=row.id,
        organization_id=row.organization_id,
        detail={"formId": row.form_id, "via": via, "dropped": len(dropped)},
    )
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    return ResumedDraft(view, form, answers, sorted(dropped), files)


async def resume_by_token(
    state: AppState,
    session: AsyncSession,
    raw_token: object,
    auditor: Auditor,
    raw_nonce: object = None,
) -> ResumedDraft:
    """The draft a resume link names; 404 unknown, 410 expired."""
    row, _hashed = await _by_token(state, session, raw_token)
    return await _resumed(state, session, row, auditor, "link", raw_nonce)


async def resume_by_code(
    state: AppState,
    session: AsyncSession,
    form: PublishedForm,
    raw_code: object,
    auditor: Auditor,
    raw_nonce: object = None,
) -> ResumedDraft:
    """The draft of `form` a typed code names; 404 for any code that names none (the
    caller has taken the rate-limit tokens first), 410 expired."""
    code = normalize_code(raw_code)
    if code is None:
        raise DraftCodeNotFound()
    query = select(FormDraft).where(
        FormDraft.code_hash.in_(code_hashes(state.keys, code)),
        FormDraft.form_id == form.form_id,
    )
    row = (await session.execute(query)).scalars().first()
    if row is None:
        raise DraftCodeNotFound()
    if row.expires_at <= utcnow():
        raise DraftExpired()
    return await _resumed(state, session, row, auditor, "code", raw_nonce)


async def discard_draft(
    state: AppState, session: AsyncSession, raw_token: object, auditor: Auditor
) -> None:
    """Delete a draft at its holder's request, with its `draft.deleted` event."""
    row, _hashed = await _by_token(state, session, raw_token)
    result = await session.execute(delete(FormDraft).where(FormDraft.id == row.id))
    if _rowcount(result) != 1:
        raise DraftNotFound()
    event = deleted_event(auditor, row.id, row.organization_id, DISCARDED)
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    await forget_pointer(state, raw_token)


def deleted_event(auditor: Auditor, draft_id: str, organization_id: str, reason: str) -> AuditEvent:
    return auditor.event(
        DRAFT_DELETED,
        resource_type=RESOURCE_TYPE,
        resource_id=draft_id,
        organization_id=organization_id,
        detail={"reason": reason},
    )


# Emailing the link ----------------------------------------------------------------------

EMAIL_WINDOW_MS = 60_000  # at most one email of a draft's link a minute
_EMAIL_FIELD = [FieldDef(id="email", type=FieldType.EMAIL, label="Email", required=True)]


class DraftEmailTooSoon(HealthformsError):
    status_code, code = 429, "rate_limited"
    message = N_("The link was emailed a moment ago. Wait a minute before asking again.")


async def email_link(
    state: AppState, session: AsyncSession, raw_token: object, body: object, auditor: Auditor
) -> None:
    """Put an email of the draft's link to the address in `body` in the outbox, with
    its `draft.emailed` event (no address in it); at most once a minute per draft, so a
    link cannot be turned into a mailer."""
    if not state.settings.mail_enabled:
        raise ValidationFailed({"email": N_("this service sends no email")})
    email = validate_answers(
        _EMAIL_FIELD, {"email": body.get("email") if isinstance(body, dict) else None}
    )["email"]
    row, _hashed = await _by_token(state, session, raw_token)
    if not await state.limiter.first_in_window(row.id, "draft-email", EMAIL_WINDOW_MS):
        raise DraftEmailTooSoon(headers={"Retry-After": str(EMAIL_WINDOW_MS // 1000)})
    assert isinstance(raw_token, str)  # _by_token checked its shape
    await enqueue_link(session, state.keys, row, raw_token, email)
    event = auditor.event(
        DRAFT_EMAILED,
        resource_type=RESOURCE_TYPE,
        resource_id=row.id,
        organization_id=row.organization_id,
    )
    await auditor.record_in(session, event)
    await session.commit()
    auditor.committed(event)
    state.outbox.nudge()


# Sent: deleted with the response -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DraftSent:
    """The submissions ResponseLink of a draft being sent: deletes it in the response's
    transaction. A draft already gone (expired, swept, sent from another device) does
    not refuse the submission: the answers arrived whole in the body."""

    raw_token: object
    form_id: str

    def identity(self, from_answers: PatientIdentity) -> PatientIdentity:
        return from_answers

    async def stored(
        self, session: AsyncSession, response_id: str, at: datetime, auditor: Auditor
    ) -> list[AuditEvent]:
        if not is_token_shaped(self.raw_token):
            return []
        assert isinstance(self.raw_token, str)
        hashed = token_hash(self.raw_token)
        row = (
            await session.execute(
                select(FormDraft.id, FormDraft.organization_id).where(
                    FormDraft.token_hash == hashed, FormDraft.form_id == self.form_id
                )
            )
        ).first()
        if row is None:
            return []
        result = await session.execute(delete(FormDraft).where(FormDraft.id == row.id))
        if _rowcount(result) != 1:
            return []  # another copy's transaction deleted it a moment ago
        return [deleted_event(auditor, row.id, row.organization_id, SENT)]


# The sweep -----------------------------------------------------------------------------------


async def sweep_expired(
    db: Database, keys: KeyRing, *, now: datetime | None = None, batch: int = SWEEP_BATCH
) -> int:
    """Delete every expired draft, in batches, each with one `draft.deleted` event per
    draft (reason "expired", no actor) in its transaction; how many were deleted."""
    cutoff = now or utcnow()
    deleted = 0
    while True:
        async with db.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(FormDraft.id, FormDraft.organization_id)
                    .where(FormDraft.expires_at <= cutoff)
                    .order_by(FormDraft.expires_at, FormDraft.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                break
            ids = [row.id for row in rows]
            result = await session.execute(
                delete(FormDraft)
                .where(FormDraft.id.in_(ids), FormDraft.expires_at <= cutoff)
                .returning(FormDraft.id)
            )
            gone = set(result.scalars())
            for row in rows:
                if row.id in gone:
                    await append_in(
                        session,
                        keys,
                        AuditEvent(
                            action=DRAFT_DELETED,
                            organization_id=row.organization_id,
                            resource_type=RESOURCE_TYPE,
                            resource_id=row.id,
                            detail={"reason": EXPIRED},
                        ),
                    )
        deleted += len(gone)
        log.info("drafts_swept", count=len(gone))
        if len(rows) < batch:
            break
    return deleted
