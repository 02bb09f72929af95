"""The patient's form page, and its submission without JavaScript (docs/patient-page.md).

The page carries a nonce in a hidden field and posts to its own address (/f/{publicId}
or a request's /r/{token}) as a plain HTML form. The POST reads the form's own
controls into the typed answers of the JSON API (submissions/html_form.py) and hands
them to the same SubmissionService.submit: the same nonce claim, validation,
exactly-once storage and `public` rate limit (http/ratelimits.py takes its token
together with the claim, as for the API). With JavaScript the page's script sends the
same answers as JSON instead and this POST is never made.

A form with a file field posts as multipart/form-data: its body is read in memory
within the form's own bounds (uploads/receive.py `read_page_form`: never spooled to an
unencrypted temporary file as Starlette's parser would), each file goes through the
upload service as the page's script would have sent it (checked, cleaned, sealed,
bound to the page's nonce), and the submission names their ids. A refused file is an
error next to its field; the files kept meanwhile come back as "keep" boxes, so a
patient does not choose them again.

No session: the session layer skips /f/ and /r/ (http/sessions.py), so a staff
member's cookie neither helps nor hinders here, and nothing a session could authorise
happens. What protects the POST is what protects the API's: a nonce minted for this
link (scope), used once. Answers never go into a URL: every answer of a POST is a page
(no redirect), no-store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData, UploadFile

from healthforms.audit.recorder import PatientAuditorDep
from healthforms.branding.service import Branding, patient_branding
from healthforms.clock import rfc3339, utcnow
from healthforms.errors import NotFound, RateLimited, ValidationFailed
from healthforms.forms.schema import FieldType
from healthforms.forms.scores import patient_scores
from healthforms.forms.translations import localize
from healthforms.languages import (
    LANGUAGE_COOKIE,
    LANGUAGE_COOKIE_MAX_AGE,
    LANGUAGE_QUERY,
    N_,
    is_supported,
    translate,
)
from healthforms.patient_requests.service import (
    RequestClosed,
    clinic_name,
    nonce_scope,
    submit_to_request,
    submittable_request,
)
from healthforms.security.context import RequestState, RequestStateDep
from healthforms.state import DbSessionDep, StateDep
from healthforms.submissions import nonces
from healthforms.submissions.html_form import (
    MAX_TYPED_NAME,
    TYPED_SUFFIX,
    PostedForm,
    max_form_fields,
    posted_answers,
)
from healthforms.submissions.service import (
    NonceInvalid,
    NonceUsed,
    PublishedForm,
    SubmissionInProgress,
    SubmissionResult,
    SubmissionService,
    current_published,
    published_form,
)
from healthforms.submissions.validation import (
    MAX_SIGNATURE_CHARS,
    client_rules,
    validate_answers,
)
from healthforms.uploads.receive import PostedFile, read_page_form
from healthforms.uploads.service import StoredUpload, pending_uploads
from healthforms.web.pages import language_choices, patient_language, render

INVALID_LINK = N_("This form link is not valid.")
# A drawn signature (a data URL up to 256 KiB) is the largest control; the body as a
# whole is bounded by the edge layer (HEALTHFORMS_MAX_BODY_BYTES).
MAX_PART_BYTES = MAX_SIGNATURE_CHARS + 16 * 1024

EXPIRED_MESSAGE = N_(
    "This page was open for a long time and its link expired. Your answers are kept: "
    "check them and press Send again."
)
IN_PROGRESS_MESSAGE = N_(
    "Your answers are being stored. Wait a moment, then press Send again: "
    "they will not be stored twice."
)
ALREADY_SENT_MESSAGE = N_("This form was already sent from this page with other answers.")

router = APIRouter(include_in_schema=False, tags=["web"])


@dataclass(frozen=True, slots=True)
class PatientPage:
    """Where a patient form page posts to and what frames it (a public link or a
    patient's request)."""

    form: PublishedForm
    # None: the page's own address. A request's token never goes into its HTML (a saved
    # or shared copy of the page must not carry the link); the form posts to its URL.
    action: str | None
    public_id: str = ""
    clinic: str | None = None  # a request's clinic: the page greets with its name
    branding: Branding | None = None  # the clinic's name, logo and accent (branding/)

    def title(self, language: str, form_title: str) -> str:
        # What a browser's history shows: for a request no PHI, not even the form.
        if self.clinic:
            return translate(N_("Your form from {clinic}", clinic=self.clinic), language)
        return form_title


@dataclass(slots=True)
class Outcome:
    """What a POST's page shows besides the form: the answers to keep in the controls,
    the errors next to them, a message for the summary."""

    answers: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    new_response_link: bool = False
    # A file field's uploads this page keeps (posted without JavaScript), by field id.
    files: dict[str, list[StoredUpload]] = field(default_factory=dict)


def render_form_page(
    request: Request,
    page: PatientPage,
    nonce: str,
    nonce_expires_at: str,
    outcome: Outcome | None = None,
    *,
    status_code: int = 200,
) -> Response:
    """The form page: every field with its client rules (data-rules), the nonce in a
    hidden field, and after a POST the kept answers, errors and summary."""
    shown = outcome or Outcome()
    language = patient_language(request)
    form = page.form
    # The patient's definition: no score fields or option scores (forms/scores.py).
    texts = localize(form.title, form.description, form.patient_fields, form.translations, language)
    errors = {key: translate(text, language) for key, text in shown.errors.items()}
    views = {
        f.id: {
            "rules": client_rules(f, language),
            "answer": shown.answers.get(f.id),
            "typed": shown.answers.get(f.id + TYPED_SUFFIX),
            "error": _sentence(errors.get(f.id)),
            "files": shown.files.get(f.id, []),
        }
        for f in form.fields
    }
    labels = {str(f.get("id")): str(f.get("label", "")) for f in texts.fields}
    summary = [
        {"href": f"#q-{key}-wrap", "text": f"{labels[key]}: {text}"}
        if key in labels
        else {"href": None, "text": _sentence(text)}
        for key, text in errors.items()
    ]
    if shown.message:
        summary.append({"href": None, "text": translate(shown.message, language)})
    title = page.title(language, texts.title)
    if summary:
        title = translate(N_("Check your answers: {title}", title=title), language)
    html = render(
        request,
        "public_form.html",
        status_code=status_code,
        language=language,
        languages=language_choices(),
        title=title,
        public_id=page.public_id,
        request_mode=page.clinic is not None,
        clinic=page.clinic,
        form_title=texts.title,
        form_title_lang=texts.title_language,
        description=texts.description,
        description_lang=texts.description_language,
        fields=texts.fields,
        version=form.version,
        action=page.action,
        nonce=nonce,
        nonce_expires_at=nonce_expires_at,
        views=views,
        summary=summary,
        new_response_link=shown.new_response_link,
        branding=page.branding,
        thank_you_message=form.thank_you_message,
    )
    return remember_language(request, html)


def remember_language(request: Request, page: Response) -> Response:
    """The switch's choice (`?lang=`) kept in a cookie for the patient's next pages. Not
    PHI and read by no script: HttpOnly, SameSite=Lax, Secure over HTTPS."""
    chosen = request.query_params.get(LANGUAGE_QUERY)
    if is_supported(chosen):
        page.set_cookie(
            LANGUAGE_COOKIE,
            str(chosen),
            max_age=LANGUAGE_COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
    return page


def _sentence(text: str | None) -> str | None:
    """A validator's message as the page shows it ("is required" -> "Is required"),
    exactly as static/js/fields.js `showFieldErrors` does."""
    return text[:1].upper() + text[1:] if text else text


def fresh_form_page(
    request: Request, state: StateDep, page: PatientPage, scope: str | None = None
) -> Response:
    """The form page with a new nonce (issuing one writes nothing)."""
    issued = SubmissionService(state).issue_nonce(page.form, scope=scope)
    return render_form_page(request, page, issued.token, rfc3339(issued.expires_at))


async def public_page(state: StateDep, db: DbSessionDep, public_id: str) -> PatientPage:
    try:
        # The public API's own lookup: the page and the API agree on what is published.
        form = await published_form(state, db, public_id)
    except NotFound:
        raise NotFound(INVALID_LINK) from None
    branding = await patient_branding(db, form.organization_id)
    return PatientPage(form=form, action=f"/f/{public_id}", public_id=public_id, branding=branding)


async def _read_posted(
    request: Request, page: PatientPage
) -> tuple[PostedForm, FormData, list[PostedFile]]:
    """The posted controls and files, parsed within bounds (field count, part size, the
    form's file counts and sizes); a body that is not a form parses as an empty one (and
    then fails its nonce check)."""
    fields = page.form.fields
    files: list[PostedFile] = []
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        file_fields = [f for f in fields if f.type is FieldType.FILE]
        parts = await read_page_form(
            content_type,
            request.stream(),
            file_fields={f.id: f.file_count_limit for f in file_fields},
            max_texts=max_form_fields(fields),
            max_text_bytes=MAX_PART_BYTES,
            max_file_bytes=max((f.file_size_limit for f in file_fields), default=0),
        )
        texts: list[tuple[str, str | UploadFile]] = list(parts.texts)
        data = FormData(texts)
        files = parts.files
    else:
        data = await request.form(
            max_files=0, max_fields=max_form_fields(fields), max_part_size=MAX_PART_BYTES
        )

    def one(name: str) -> str | None:
        value = data.get(name)
        return value if isinstance(value, str) else None

    def every(name: str) -> list[str]:
        return [v for v in data.getlist(name) if isinstance(v, str)]

    return posted_answers(fields, one, every), data, files


def _kept(page: PatientPage, posted: PostedForm, data: FormData) -> dict[str, Any]:
    """The answers to put back into the controls: what the patient sent (a typed
    signature as the name they typed, so a corrected name is drawn anew)."""
    kept = dict(posted.answers)
    for f in page.form.fields:
        if f.type is FieldType.SIGNATURE:
            typed = data.get(f.id + TYPED_SUFFIX)
            if isinstance(typed, str) and typed.strip() and not data.get(f.id):
                kept[f.id + TYPED_SUFFIX] = typed[:MAX_TYPED_NAME]
                kept.pop(f.id, None)
    return kept


def _other_errors(page: PatientPage, posted: PostedForm, refused: dict[str, str]) -> dict[str, str]:
    """What the validator says of the answers besides the refused files' fields, so the
    page shows every error at once."""
    others = {k: v for k, v in posted.answers.items() if k not in refused}
    try:
        validate_answers(page.form.fields, others)
    except ValidationFailed as exc:
        fields: dict[str, str] = exc.extra.get("fields", {})
        return {k: v for k, v in fields.items() if k not in refused}
    return {}


async def _kept_files(
    state: StateDep,
    db: DbSessionDep,
    page: PatientPage,
    nonce: str,
    answers: dict[str, Any],
    scope: str | None,
) -> dict[str, list[StoredUpload]]:
    """The file answers' uploads still pending for this page's nonce, by field id."""
    by_field = {
        f.id: [i for i in answers.get(f.id) or [] if isinstance(i, str)]
        for f in page.form.fields
        if f.type is FieldType.FILE
    }
    ids = [i for found in by_field.values() for i in found]
    verified = nonces.verify(state.keys, scope or page.form.public_id, nonce) if ids else None
    if verified is None:
        return {}
    pending = await pending_uploads(
        db, page.form.form_id, ids, utcnow(), nonce_id=verified.nonce_id
    )
    return {
        field_id: [pending[i] for i in found if i in pending]
        for field_id, found in by_field.items()
        if any(i in pending for i in found)
    }


async def _submit_page(
    request: Request,
    current: RequestState,
    state: StateDep,
    db: DbSessionDep,
    page: PatientPage,
    posted: PostedForm,
    data: FormData,
    files: list[PostedFile],
    submit: Callable[[], Awaitable[SubmissionResult]],
    scope: str | None,
) -> Response:
    """Keep the posted files, run `submit` (SubmissionService.submit, bound) and answer
    with a page."""
    language = patient_language(request)
    nonce = posted.nonce or ""
    expires = _nonce_expiry(nonce)
    status_code = 200
    kept = _kept(page, posted, data)
    try:
        uploaded, refused = await SubmissionService(state).upload_posted(
            db, page.form, posted.nonce, files, scope=scope
        )
        for field_id, ids in uploaded.items():
            posted.answers[field_id] = [*(posted.answers.get(field_id) or []), *ids]
        kept = _kept(page, posted, data)
        if refused:
            raise ValidationFailed({**_other_errors(page, posted, refused), **refused})
        result = await submit()
    except RateLimited:
        outcome, status_code = Outcome(kept), RateLimited.status_code
    except ValidationFailed as exc:
        # Validation runs before the claim: the nonce was not used, so it stays.
        outcome, status_code = Outcome(kept, exc.extra.get("fields", {})), 422
    except NonceInvalid:
        issued = SubmissionService(state).issue_nonce(page.form, scope=scope)
        nonce, expires = issued.token, rfc3339(issued.expires_at)
        outcome, status_code = Outcome(kept, message=EXPIRED_MESSAGE), NonceInvalid.status_code
    except SubmissionInProgress:
        outcome = Outcome(kept, message=IN_PROGRESS_MESSAGE)
        status_code = SubmissionInProgress.status_code
    except NonceUsed:
        outcome = Outcome(kept, message=ALREADY_SENT_MESSAGE, new_response_link=not page.clinic)
        status_code = NonceUsed.status_code
    else:
        return render(
            request,
            "public_sent.html",
            language=language,
            languages=language_choices(),
            title=translate(N_("Your form was sent"), language),
            confirmation=result.confirmation,
            public_id=page.public_id,
            branding=page.branding,
            thank_you_message=page.form.thank_you_message,
            # Only the scores the form shows the patient (showPatient; docs/scores.md).
            scores=patient_scores(result.scores),
        )
    wait = await _over_limit(current)
    if wait is not None:
        # Over the `public` limit, whatever else was wrong: say so on the form itself, so
        # the answers stay (the rate-limit layer's own 429 would be a bare error body).
        current.refusal_drawn = True
        outcome = Outcome(kept, message=over_limit_message(wait))
        status_code = RateLimited.status_code
    outcome.files = await _kept_files(state, db, page, nonce, outcome.answers, scope)
    return render_form_page(request, page, nonce, expires, outcome, status_code=status_code)


async def _over_limit(current: RequestState) -> int | None:
    """Seconds to wait when this request is over the `public` limit, else None. Takes the
    request's token if the submission did not (the layer would take it anyway)."""
    if current.public_token is None:
        return None
    verdict = await current.public_token()
    if verdict.allowed:
        return None
    return max([d.retry_after_s for d in verdict.decisions if not d.allowed] or [1])


def over_limit_message(wait: int) -> str:
    if wait == 1:
        return N_(
            "Too many attempts from this connection. Wait 1 second, then press Send "
            "again: your answers are kept."
        )
    return N_(
        "Too many attempts from this connection. Wait {wait} seconds, then press Send "
        "again: your answers are kept.",
        wait=wait,
    )


def _nonce_expiry(token: str) -> str:
    """The expiry a nonce names (`<id>.<expiry>.<mac>`), for the page's script; its MAC
    is checked by the service, never here."""
    parts = token.split(".")
    if len(parts) == 3 and parts[1].isascii() and parts[1].isdigit() and len(parts[1]) <= 11:
        return rfc3339(datetime.fromtimestamp(int(parts[1]), UTC))
    return ""


@router.post("/f/{public_id}")
async def post_public_form(
    public_id: str,
    request: Request,
    current: RequestStateDep,
    state: StateDep,
    db: DbSessionDep,
    auditor: PatientAuditorDep,
) -> Response:
    """The form page's plain HTML POST (no JavaScript): the JSON API's submission."""
    if not public_id or len(public_id) > 64:
        raise NotFound(INVALID_LINK)
    try:
        form = await current_published(state, db, public_id)
    except NotFound:
        raise NotFound(INVALID_LINK) from None
    page = PatientPage(
        form=form,
        action=f"/f/{public_id}",
        public_id=public_id,
        branding=await patient_branding(db, form.organization_id),
    )
    posted, data, files = await _read_posted(request, page)

    async def submit() -> SubmissionResult:
        return await SubmissionService(state).submit(
            db,
            form,
            posted.body(),
            current.context,
            auditor,
            current.public_token,
            language=patient_language(request),
        )

    return await _submit_page(request, current, state, db, page, posted, data, files, submit, None)


@router.post("/r/{token}")
async def post_request_form(
    token: str,
    request: Request,
    current: RequestStateDep,
    state: StateDep,
    db: DbSessionDep,
    auditor: PatientAuditorDep,
) -> Response:
    """A patient's request link, posted without JavaScript: the request API's submission
    (the response and the request's completion in one transaction). A completed request
    still answers a resend of the submission that completed it."""
    try:
        row, form = await submittable_request(state, db, token)
    except (NotFound, RequestClosed) as exc:
        return closed_page(request, exc.status_code)
    branding = await patient_branding(db, row.organization_id)
    clinic = branding.name if branding is not None else await clinic_name(db, row.organization_id)
    page = PatientPage(form=form, action=None, clinic=clinic, branding=branding)
    posted, data, files = await _read_posted(request, page)

    async def submit() -> SubmissionResult:
        return await submit_to_request(
            state,
            db,
            token,
            posted.body(),
            current.context,
            auditor,
            current.public_token,
            language=patient_language(request),
        )

    try:
        return await _submit_page(
            request, current, state, db, page, posted, data, files, submit, nonce_scope(row.id)
        )
    except RequestClosed as exc:
        return closed_page(request, exc.status_code)


def closed_page(request: Request, status_code: int) -> Response:
    """Unknown, used, expired or cancelled: one page that says no more than that."""
    language = patient_language(request)
    page = render(
        request,
        "request_closed.html",
        status_code=status_code,
        language=language,
        languages=language_choices(),
        title=translate(N_("This link cannot be used"), language),
    )
    return remember_language(request, page)
