"""Public forms: serve the published version with a nonce; store each submission once.

Fetching makes no Redis round trip of its own (issuing a nonce writes nothing).
Posting makes two: the claim, sent in one write with the client's rate-limit token,
then the confirmation after the commit.
Whatever Redis says, the UNIQUE nonce id of the response row is the last word: a
second copy that reaches the database anyway (Redis flushed, unreachable, or a claim
lapsed) fails the constraint and is answered like a resend or a reuse by comparing
the answers' digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import RESPONSE_SUBMITTED, AuditEvent
from healthforms.audit.recorder import Auditor
from healthforms.clock import rfc3339, utcnow
from healthforms.crypto.envelope import response_aad, seal_json
from healthforms.db.base import new_id
from healthforms.errors import (
    Conflict,
    HealthformsError,
    NotFound,
    RateLimited,
    ValidationFailed,
)
from healthforms.forms.conditions import visible_fields
from healthforms.forms.models import Form, FormVersion
from healthforms.forms.schema import FieldDef, FieldType, fields_from_json
from healthforms.forms.scores import (
    ScoreResult,
    calculate_scores,
    patient_definition,
    patient_scores,
    scores_json,
)
from healthforms.languages import DEFAULT_LANGUAGE, N_, is_supported
from healthforms.outbox.store import RESPONSE_SUBMITTED as RESPONSE_SUBMITTED_MESSAGE
from healthforms.outbox.store import enqueue
from healthforms.redis.errors import RedisUnavailable
from healthforms.responses.models import ResponseRow
from healthforms.responses.patients import PatientIdentity, identity_of, store_identity
from healthforms.responses.scores import store_scores
from healthforms.security.context import RequestContext
from healthforms.security.ratelimit import RateVerdict
from healthforms.state import AppState
from healthforms.submissions import nonces
from healthforms.submissions.nonces import ClaimState, Nonce, NonceStore
from healthforms.submissions.validation import too_many_files, validate_answers
from healthforms.uploads.receive import PostedFile, read_upload
from healthforms.uploads.service import (
    MAX_FILE_BYTES,
    StoredUpload,
    attach_uploads,
    file_field,
    receive_upload,
    sweep_expired,
    too_large,
)

log = structlog.get_logger("healthforms.submissions")

# No 0/O or 1/I/L: a patient reads the code out over the phone.
CONFIRMATION_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CONFIRMATION_LENGTH = 10


class NonceInvalid(HealthformsError):
    status_code, code = 400, "nonce_invalid"
    message = N_("This form link has expired. Reload the page and submit again.")


class NonceUsed(Conflict):
    code = "nonce_used"
    message = N_("This form was already submitted with different answers.")


class SubmissionInProgress(Conflict):
    code = "submission_in_progress"
    message = N_("This submission is being stored. Wait a moment and try again.")


@dataclass(frozen=True, slots=True)
class PublishedForm:
    form_id: str
    organization_id: str
    public_id: str
    version_id: str
    version: int
    title: str
    description: str
    raw_fields: list[dict[str, Any]]
    fields: list[FieldDef]
    thank_you_message: str | None = None  # the version's, shown after sending
    # The version's texts in other languages (forms/translations.py); {} if none.
    translations: dict[str, Any] = field(default_factory=dict)

    @property
    def patient_fields(self) -> list[dict[str, Any]]:
        """The definition a patient's page gets: no score fields, no option scores."""
        return patient_definition(self.raw_fields)

    def public_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "title": self.title,
            "description": self.description,
            "fields": self.patient_fields,
            "version": self.version,
        }
        if self.translations:
            body["translations"] = self.translations
        return body


@dataclass(frozen=True, slots=True)
class IssuedNonce:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SubmissionResult:
    confirmation: str
    response_id: str | None  # known when stored now or looked up in the database
    created: bool  # True: stored now (201); False: a resend of a stored one (200)
    # The form's scores of these answers (forms/scores.py): a resend recalculates the
    # same ones from the same answers. Only `showPatient` ones may reach the patient.
    scores: tuple[ScoreResult, ...] = ()


def confirmation_json(result: SubmissionResult) -> dict[str, Any]:
    """The body of a stored (201) or resent (200) submission: the confirmation code and,
    when the form says so (`showPatient`), the scores the patient may see."""
    body: dict[str, Any] = {"confirmation": result.confirmation}
    shown = patient_scores(result.scores)
    if shown:
        body["scores"] = shown
    return body


class ResponseLink(Protocol):
    """What a caller adds to a response's own transaction: patient_requests/ completes
    the request a response answers. Raising from `stored` refuses the submission:
    nothing is stored and the nonce is given back."""

    def identity(self, from_answers: PatientIdentity) -> PatientIdentity:
        """The patient's identity to store with the response (given the answers')."""
        ...

    async def stored(
        self, session: AsyncSession, response_id: str, at: datetime, auditor: Auditor
    ) -> list[AuditEvent]:
        """Run right after the response's INSERT, in its transaction; return the audit
        events (from `auditor.event`) to commit with the response's own."""
        ...


# A public id is a URL-safe token: anything else (a NUL byte, which PostgreSQL refuses in
# text) is a 404 before it reaches the database.
_PUBLIC_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def new_confirmation() -> str:
    return "".join(secrets.choice(CONFIRMATION_ALPHABET) for _ in range(CONFIRMATION_LENGTH))


async def load_published(session: AsyncSession, public_id: str) -> PublishedForm:
    """The currently published version behind a public link, or 404."""
    if not _PUBLIC_ID.fullmatch(public_id):
        raise NotFound()
    query = (
        select(Form, FormVersion)
        .join(
            FormVersion,
            (FormVersion.form_id == Form.id) & (FormVersion.version == Form.version),
        )
        .where(Form.public_id == public_id, Form.status == "published")
    )
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound()
    form, version = row
    return PublishedForm(
        form_id=form.id,
        organization_id=form.organization_id,
        public_id=public_id,
        version_id=version.id,
        version=version.version,
        title=version.title,
        description=version.description,
        raw_fields=list(version.fields),
        fields=fields_from_json(version.fields),
        thank_you_message=version.thank_you_message,
        translations=dict(version.translations or {}),
    )


async def published_form(state: AppState, session: AsyncSession, public_id: str) -> PublishedForm:
    """What a patient's page shows: the published version, from this process's cache
    once read (published versions are frozen; forms/ invalidates a publish, unpublish or
    archive in every instance), so a page view reads nothing from the database. A
    submission asks the database which version is current (current_published): it is
    the last word."""
    cached = state.published_forms.get(public_id)
    if isinstance(cached, PublishedForm):
        return cached
    form = await load_published(session, public_id)
    state.published_forms.put(public_id, form)
    return form


# Built once, values bound at execution (see audit/store.py).
_INSERT_RESPONSE = insert(cast(Table, ResponseRow.__table__))
_CURRENT_VERSION = select(Form.version).where(
    Form.public_id == bindparam("public_id"), Form.status == "published"
)


async def current_published(
    state: AppState, session: AsyncSession, public_id: str
) -> PublishedForm:
    """What a submission is checked against. The database stays the last word on which
    version is published now (one indexed lookup of two columns); the version itself
    is frozen, so this process's cached copy serves when it is that version."""
    if not _PUBLIC_ID.fullmatch(public_id):
        raise NotFound()
    cached = state.published_forms.get(public_id)
    if isinstance(cached, PublishedForm):
        current = (await session.execute(_CURRENT_VERSION, {"public_id": public_id})).first()
        if current is None:
            raise NotFound()
        if current[0] == cached.version:
            return cached
    form = await load_published(session, public_id)
    state.published_forms.put(public_id, form)
    return form


class SubmissionService:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.nonces = NonceStore(state.redis)

    def _degraded(self, decision: str) -> None:
        self.state.metrics.degraded_decisions.labels(feature="nonces", decision=decision).inc()
        log.warning("nonce_fallback", decision=decision)

    def issue_nonce(self, form: PublishedForm, scope: str | None = None) -> IssuedNonce:
        """A nonce for the form's public link, or for `scope` (another link to the same
        form, e.g. one patient's request): a nonce works only where it was issued."""
        # Nothing to store: a nonce with a valid MAC and no key in Redis is issued.
        token, nonce = nonces.mint(self.state.keys, scope or form.public_id)
        return IssuedNonce(token, datetime.fromtimestamp(nonce.expires_at, UTC))

    def answers_digest(self, answers: dict[str, Any]) -> str:
        """HMAC of the canonical answers: tells a resend from a reuse without storing PHI."""
        key = self.state.keys.hmac_key("answers")
        return hmac.new(key, canonical_json(answers), hashlib.sha256).hexdigest()

    async def submit(
        self,
        session: AsyncSession,
        form: PublishedForm,
        body: object,
        context: RequestContext,
        auditor: Auditor,
        rate_check: Callable[[], Awaitable[RateVerdict]] | None = None,
        *,
        scope: str | None = None,
        link: ResponseLink | None = None,
        language: str = DEFAULT_LANGUAGE,
    ) -> SubmissionResult:
        """Store one submission once, with its `response.submitted` audit event in the
        same transaction. `rate_check` takes the client's `public` token; it is run
        together with the nonce claim (http/ratelimits.py). `scope` is where the nonce
        was issued (issue_nonce); `link` adds its work to the response's transaction.
        The response records the language the patient answered in: the body's
        `language` when it is one we speak, else `language` (the client's
        Accept-Language)."""
        if not isinstance(body, dict):
            raise NonceInvalid()
        if is_supported(body.get("language")):
            language = str(body["language"])
        nonce = nonces.verify(self.state.keys, scope or form.public_id, body.get("nonce"))
        if nonce is None:
            raise NonceInvalid()
        # Validation first: a 422 leaves the nonce untouched, so the patient can resend.
        answers = validate_answers(
            form.fields, body.get("answers"), max_bytes=self.state.settings.max_answers_bytes
        )
        digest = self.answers_digest(answers)
        shown = {f.id for f in visible_fields(form.fields, answers)}
        scores = tuple(calculate_scores(form.fields, answers, shown))
        if nonce.is_expired():
            # Only a late resend of a stored submission still gets its confirmation.
            existing = await self._stored(session, nonce)
            if existing is None:
                raise NonceInvalid()
            return replace(self._resend(existing, digest), scores=scores)

        if rate_check is None:
            state, redis_up = await self._claim(nonce, digest)
        else:
            # The rate token and the claim leave in one write: one round trip for both.
            verdict, (state, redis_up) = await asyncio.gather(
                rate_check(), self._claim(nonce, digest)
            )
            if not verdict.allowed:
                if state.claimed and redis_up:
                    with contextlib.suppress(RedisUnavailable):
                        await self.nonces.release(nonce, digest)
                raise RateLimited()
        if state.kind == "claiming":
            # Another copy is being stored, or was by an instance that died between
            # its commit and the confirmation (its claim lingers for the lease): the
            # database knows. A resend through the balancer then gets its reply now.
            existing = await self._stored(session, nonce)
            if existing is not None:
                return replace(self._resend(existing, digest), scores=scores)
            raise SubmissionInProgress()
        if state.kind == "used":
            if hmac.compare_digest(state.digest, digest):
                return SubmissionResult(state.confirmation, None, created=False, scores=scores)
            raise NonceUsed()
        stored = await self._store(
            session,
            form,
            nonce,
            answers,
            digest,
            context,
            auditor,
            redis_up,
            link,
            language=language,
            scores=scores,
        )
        return replace(stored, scores=scores)

    async def upload(
        self,
        session: AsyncSession,
        form: PublishedForm,
        content_type: str | None,
        body: AsyncIterator[bytes],
        *,
        scope: str | None = None,
    ) -> StoredUpload:
        """Keep one file for a file field of the page whose nonce comes with it
        (docs/uploads.md). The nonce is only verified, never claimed: the page's
        submission still uses it, and names the upload's id in its answers."""
        received = await read_upload(content_type, body, max_file_bytes=MAX_FILE_BYTES)
        nonce = nonces.verify(self.state.keys, scope or form.public_id, received.nonce)
        if nonce is None or nonce.is_expired():
            raise NonceInvalid()
        field = file_field(form.fields, received.field_id)
        if received.truncated:
            raise ValidationFailed({field.id: too_large(field.file_size_limit)})
        # Pending uploads whose page is long gone go first (an indexed range, bounded).
        await sweep_expired(session)
        return await receive_upload(
            session,
            self.state.keys,
            organization_id=form.organization_id,
            form_id=form.form_id,
            field=field,
            scope=scope or form.public_id,
            nonce_id=nonce.nonce_id,
            nonce_expires_at=datetime.fromtimestamp(nonce.expires_at, UTC),
            data=received.data,
        )

    async def upload_posted(
        self,
        session: AsyncSession,
        form: PublishedForm,
        raw_nonce: object,
        files: Sequence[PostedFile],
        *,
        scope: str | None = None,
    ) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Keep the files of a page posted without JavaScript as its script would have
        uploaded them, one by one (docs/uploads.md: checked by content, cleaned, sealed,
        bound to the page's nonce): their ids by field, and each refused field's
        message (a refused file keeps nothing). NonceInvalid when the page's nonce is.
        The submission then names the ids like any other page's."""
        if not files:
            return {}, {}
        nonce = nonces.verify(self.state.keys, scope or form.public_id, raw_nonce)
        if nonce is None or nonce.is_expired():
            raise NonceInvalid()
        by_id = {f.id: f for f in form.fields if f.type is FieldType.FILE}
        sent: dict[str, int] = {}
        for posted in files:
            sent[posted.field_id] = sent.get(posted.field_id, 0) + 1
        uploaded: dict[str, list[str]] = {}
        refused: dict[str, str] = {}
        await sweep_expired(session)
        for posted in files:
            field = by_id.get(posted.field_id)
            if field is None or field.id in refused:
                continue
            if sent[field.id] > field.file_count_limit:
                refused[field.id] = too_many_files(field.file_count_limit)
                continue
            if posted.truncated:
                refused[field.id] = too_large(field.file_size_limit)
                continue
            try:
                stored = await receive_upload(
                    session,
                    self.state.keys,
                    organization_id=form.organization_id,
                    form_id=form.form_id,
                    field=field,
                    scope=scope or form.public_id,
                    nonce_id=nonce.nonce_id,
                    nonce_expires_at=datetime.fromtimestamp(nonce.expires_at, UTC),
                    data=posted.data,
                )
            except ValidationFailed as exc:
                refused.update(exc.extra.get("fields", {}))
                continue
            uploaded.setdefault(field.id, []).append(stored.id)
        return uploaded, refused

    async def _claim(self, nonce: Nonce, digest: str) -> tuple[ClaimState, bool]:
        """The claim's outcome and whether Redis answered it."""
        try:
            return await self.nonces.claim(nonce, digest), True
        except RedisUnavailable:
            self._degraded("claim_without_redis")
            return ClaimState(nonces.MISSING), False

    async def _stored(self, session: AsyncSession, nonce: Nonce) -> ResponseRow | None:
        query = select(ResponseRow).where(ResponseRow.nonce_id == nonce.nonce_id)
        return (await session.execute(query)).scalar_one_or_none()

    def _resend(self, row: ResponseRow, digest: str) -> SubmissionResult:
        if hmac.compare_digest(row.answers_digest, digest):
            return SubmissionResult(row.confirmation, row.id, created=False)
        raise NonceUsed()

    def _evidence(
        self, form: PublishedForm, answers: dict[str, Any], context: RequestContext, at: datetime
    ) -> dict[str, Any]:
        signature_ids = [
            f.id for f in form.fields if f.type is FieldType.SIGNATURE and f.id in answers
        ]
        if not signature_ids:
            return {}
        shown: dict[str, Any] = {
            "formId": form.form_id,
            "version": form.version,
            "title": form.title,
            "description": form.description,
            "fields": form.raw_fields,
        }
        if form.translations:  # what was signed may have been read in another language
            shown["translations"] = form.translations
        version_hash = hashlib.sha256(canonical_json(shown)).hexdigest()
        others = {k: v for k, v in answers.items() if k not in signature_ids}
        answers_hash = hashlib.sha256(canonical_json(others)).hexdigest()
        return {
            field_id: {
                "versionHash": version_hash,
                "answersHash": answers_hash,
                "signedAt": rfc3339(at),
                "ip": context.ip,
                "userAgent": context.user_agent,
            }
            for field_id in signature_ids
        }

    async def _store(
        self,
        session: AsyncSession,
        form: PublishedForm,
        nonce: Nonce,
        answers: dict[str, Any],
        digest: str,
        context: RequestContext,
        auditor: Auditor,
        redis_up: bool,
        link: ResponseLink | None = None,
        scores: tuple[ScoreResult, ...] = (),
        language: str = DEFAULT_LANGUAGE,
    ) -> SubmissionResult:
        now = utcnow()
        linked_events: list[AuditEvent] = []
        response_id = new_id("rsp_")
        payload = {"answers": answers, "signatures": self._evidence(form, answers, context, now)}
        if scores:
            # Calculated here from the answers just validated, sealed with them.
            payload["scores"] = scores_json(scores)
        sealed = seal_json(self.state.keys, payload, response_aad(response_id, form.form_id))
        confirmation = new_confirmation()
        try:
            # A Core INSERT: the ORM's unit of work cost more than the statement.
            await session.execute(
                _INSERT_RESPONSE,
                {
                    "id": response_id,
                    "organization_id": form.organization_id,
                    "form_id": form.form_id,
                    "form_version_id": form.version_id,
                    "form_version": form.version,
                    "nonce_id": nonce.nonce_id,
                    "answers_digest": digest,
                    "confirmation": confirmation,
                    "ciphertext": sealed.ciphertext,
                    "wrapped_key": sealed.wrapped_key,
                    "key_id": sealed.key_id,
                    "submitted_at": now,
                    "language": language,
                },
            )
            # The files the answers name become the response's, in its transaction.
            files = {
                f.id: answers[f.id]
                for f in form.fields
                if f.type is FieldType.FILE and f.id in answers
            }
            if files:
                await attach_uploads(
                    session,
                    form_id=form.form_id,
                    scope=nonce.public_id,
                    nonce_id=nonce.nonce_id,
                    response_id=response_id,
                    files=files,
                    now=now,
                )
            identity = identity_of(form.fields, answers)
            if link is not None:
                # Before the audit chain's lock: a refused copy (the link was used by
                # another phone a moment ago) holds nothing others wait for.
                linked_events = await link.stored(session, response_id, now, auditor)
                identity = link.identity(identity)
            # Whose response it is (sealed, and blind indexes to find it), if the form
            # marks the fields that say so.
            await store_identity(
                session, self.state.keys, form.organization_id, response_id, identity
            )
            # The scores again, in a small sealed record the responses list can open
            # without decrypting every answer (responses/scores.py).
            await store_scores(session, self.state.keys, form.organization_id, response_id, scores)
            # The alert that a response arrived: committed with it, so neither a crash
            # nor a Redis outage loses it (outbox/).
            await enqueue(
                session,
                form.organization_id,
                RESPONSE_SUBMITTED_MESSAGE,
                {"responseId": response_id, "formId": form.form_id},
            )
            # In the response's transaction: no stored response without its event (a
            # crash between two commits would leave an unaudited write of PHI).
            event = auditor.event(
                RESPONSE_SUBMITTED,
                resource_type="response",
                resource_id=response_id,
                organization_id=form.organization_id,
            )
            await auditor.record_in(session, event)
            for linked in linked_events:
                await auditor.record_in(session, linked)
            await session.commit()
        except IntegrityError:
            # Another copy got there first (the nonce id is UNIQUE): answer as a resend.
            await session.rollback()
            existing = await self._stored(session, nonce)
            if existing is None:
                await self._release(nonce, digest, redis_up)  # nothing stored: resendable
                raise
            await self._confirm(nonce, existing.answers_digest, existing.confirmation, redis_up)
            return self._resend(existing, digest)
        except BaseException:
            await session.rollback()
            await self._release(nonce, digest, redis_up)
            raise
        auditor.committed(event)
        self.state.outbox.nudge()
        for linked in linked_events:
            auditor.committed(linked)
        await self._confirm(nonce, digest, confirmation, redis_up)
        return SubmissionResult(confirmation, response_id, created=True)

    async def _release(self, nonce: Nonce, digest: str, redis_up: bool) -> None:
        """Give the nonce back after a failed store, so the patient's resend can succeed."""
        if redis_up:
            try:
                await self.nonces.release(nonce, digest)
            except RedisUnavailable:
                pass  # the claim lapses after its lease

    async def _confirm(self, nonce: Nonce, digest: str, confirmation: str, redis_up: bool) -> None:
        if not redis_up and not self.state.redis.available:
            return
        try:
            await self.nonces.confirm(nonce, digest, confirmation)
        except RedisUnavailable:
            self._degraded("confirm_without_redis")
