"""The pages people use: staff sign-in, forms, builder, responses, account, admin; the
patient form at /f/{publicId}; static assets and the favicon.

Pages are server-rendered shells; their data comes from the same JSON API (and the same
session cookie and CSRF rules) as any other client, through static/js/api.js. What the
API does not offer a page (response counts for the list, a response's frozen version
labels, the users with their `disabled` flag, the published form a patient fills in) a
page reads through the owning feature's service: this module runs no SQL of its own.

Staff pages take their signed-in member through ONE dependency, `StaffPage` (or
`EditorPage`, `AdminPage`): someone not signed in, or whose account was disabled or
moved to another clinic, is sent to the sign-in page (303, with `next`), which the
routes' own class (`PageRoute`) answers; a role that may not see a page gets 403.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.staticfiles import StaticFiles

from healthforms.alerts.service import list_alerts, mark_read, unread_count
from healthforms.audit.recorder import AuditorDep
from healthforms.branding.service import BrandingService, patient_branding
from healthforms.errors import Forbidden, NotFound, Unauthenticated, ValidationFailed
from healthforms.forms.templates import TEMPLATES
from healthforms.http.errors import wants_html
from healthforms.http.hot_routes import from_request
from healthforms.http.ratelimits import take_policy_token
from healthforms.identity.routes.sessions import csrf_token_hot
from healthforms.identity.service import (
    OrgScope,
    current_user,
    list_users,
    recovery_codes_left,
)
from healthforms.languages import (
    DEFAULT_LANGUAGE,
    LANGUAGE_NAMES,
    is_supported,
)
from healthforms.patient_requests.service import (
    RequestClosed,
    clinic_name,
    live_request,
    nonce_scope,
)
from healthforms.pdf.routes import pdf_response
from healthforms.pdf.service import PdfInProgress, PdfNotGenerated, PdfService
from healthforms.responses.models import ResponseRow
from healthforms.responses.patients import PatientIdentity, parse_search
from healthforms.responses.service import (
    find_by_confirmation,
    find_by_patient,
    forms_with_response_counts,
    get_form,
    get_response,
    get_version,
    normalise_confirmation,
    patients_of,
)
from healthforms.security.context import request_state
from healthforms.security.principal import Principal, Role
from healthforms.state import AppState, DbSessionDep, StateDep
from healthforms.web.pages import (
    STATIC_DIR,
    login_url,
    render,
    safe_next,
)
from healthforms.web.patient_page import (
    PatientPage,
    closed_page,
    fresh_form_page,
    public_page,
)


class SignInRequired(Exception):
    """A staff page asked for by someone who must sign in first (answered by PageRoute)."""


class PageRoute(APIRoute):
    """A page route: `SignInRequired`, from its dependencies or the page itself, becomes
    a 303 to the sign-in page that comes back here afterwards."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return RedirectResponse(login_url(request), status_code=303)

        return page


router = APIRouter(include_in_schema=False, tags=["web"], route_class=PageRoute)

_static = StaticFiles(directory=str(STATIC_DIR))


@router.get("/static/{path:path}")
async def static_file(path: str, request: Request) -> Response:
    """Every asset comes from the service itself: PHI pages never call third parties."""
    response = await _static.get_response(path, request.scope)
    if response.status_code == 200:
        # Asset URLs carry a content hash (pages.asset_url), so they may be cached long.
        response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "favicon.ico",
        media_type="image/x-icon",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@dataclass(frozen=True, slots=True)
class Staff:
    """The signed-in staff member a page is drawn for: their principal and what the
    pages show of their user row."""

    principal: Principal
    user_id: str
    name: str
    email: str
    totp_enabled: bool
    unread_alerts: int  # shown beside "Alerts" in every staff page's menu


def _principal(request: Request) -> Principal | None:
    return request_state(request.scope).principal


async def _staff_page(request: Request, db: DbSessionDep) -> Staff:
    """The signed-in staff member and their user row, or SignInRequired."""
    principal = _principal(request)
    if principal is None:
        raise SignInRequired()
    try:
        user = await current_user(db, principal)
    except Unauthenticated:  # disabled, deleted, or moved to another clinic
        raise SignInRequired() from None
    return Staff(
        principal=principal,
        user_id=user.id,
        name=user.name,
        email=user.email,
        totp_enabled=user.totp_enabled,
        unread_alerts=await unread_count(db, user.id),
    )


StaffPage = Annotated[Staff, Depends(_staff_page)]


async def _editor_page(staff: StaffPage) -> Staff:
    if not staff.principal.can_edit:
        raise Forbidden()
    return staff


async def _admin_page(staff: StaffPage) -> Staff:
    if not staff.principal.is_admin:
        raise Forbidden()
    return staff


EditorPage = Annotated[Staff, Depends(_editor_page)]
AdminPage = Annotated[Staff, Depends(_admin_page)]


def _staff_context(state: StateDep, staff: Staff) -> dict[str, Any]:
    return {
        "me": {"id": staff.user_id, "name": staff.name, "role": staff.principal.role.value},
        "is_admin": staff.principal.role is Role.ADMIN,
        "can_edit": staff.principal.can_edit,
        "idle_timeout": state.settings.session_idle_timeout,
        "unread_alerts": staff.unread_alerts,
    }


@router.get("/")
async def home(request: Request) -> RedirectResponse:
    target = "/forms" if _principal(request) else "/login"
    return RedirectResponse(target, status_code=303)


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    target = safe_next(next)
    if _principal(request) is not None and next is None:
        return RedirectResponse(target, status_code=303)
    return render(request, "login.html", title="Sign in", next_path=target)


@router.get("/alerts")
async def alerts_page(
    request: Request, staff: StaffPage, state: StateDep, db: DbSessionDep
) -> Response:
    """The newest alerts; opening the page marks them read."""
    alerts = await list_alerts(db, staff.user_id)
    if staff.unread_alerts:
        await mark_read(db, staff.user_id)
        await db.commit()
    return render(
        request,
        "alerts.html",
        title="Alerts",
        nav="alerts",
        alerts=alerts,
        **_staff_context(state, staff),
    )


@router.get("/forms")
async def forms_page(
    request: Request, staff: StaffPage, state: StateDep, db: DbSessionDep
) -> Response:
    return await _forms_list(request, staff, state, db)


async def _forms_list(
    request: Request,
    staff: Staff,
    state: AppState,
    db: AsyncSession,
    *,
    find_message: str | None = None,
    find_code: str = "",
) -> Response:
    rows = await forms_with_response_counts(db, staff.principal.organization_id)
    forms = [
        {
            "id": form.id,
            "title": form.title,
            "status": form.status,
            "version": form.version,
            "has_changes": form.has_unpublished_changes and form.status == "published",
            "responses": count,
            "updated_at": form.updated_at,
        }
        for form, count in rows
    ]
    return render(
        request,
        "forms_list.html",
        title="Forms",
        nav="forms",
        forms=forms,
        find_message=find_message,
        find_code=find_code,
        **_staff_context(state, staff),
    )


@router.get("/forms/new")
async def new_form_page(request: Request, staff: EditorPage, state: StateDep) -> Response:
    return render(
        request,
        "form_new.html",
        title="New form",
        nav="forms",
        templates=[t.summary_json() for t in TEMPLATES.values()],  # the gallery
        **_staff_context(state, staff),
    )


@router.get("/forms/{form_id}")
async def builder_page(
    form_id: str, request: Request, staff: StaffPage, state: StateDep, db: DbSessionDep
) -> Response:
    # The same organisation-scoped lookup the responses API uses (404 for other clinics).
    form = await get_form(db, staff.principal.organization_id, form_id)
    return render(
        request,
        "builder.html",
        title=f"Edit {form.title}",
        nav="forms",
        form_id=form.id,
        form_title=form.title,
        **_staff_context(state, staff),
    )


@router.get("/forms/{form_id}/responses")
async def responses_page(
    form_id: str, request: Request, staff: StaffPage, state: StateDep, db: DbSessionDep
) -> Response:
    form = await get_form(db, staff.principal.organization_id, form_id)
    return render(
        request,
        "responses_list.html",
        title=f"Responses: {form.title}",
        nav="forms",
        form_id=form.id,
        form_title=form.title,
        # A Score column (forms/scores.py) when the form has a score field.
        has_scores=any(f.get("type") == "score" for f in form.fields or []),
        **_staff_context(state, staff),
    )


async def _form_csrf_token(request: Request, state: StateDep, staff: Staff) -> str:
    """A CSRF token of this session for a plain HTML form's `csrf_token` field (API.md
    "Pages"), handed out like GET /api/auth/csrf-token (another never revokes it)."""
    issued = await csrf_token_hot(from_request(request.scope, state, staff.principal))
    return str(issued["csrfToken"])


@router.get("/responses/find")
async def find_response_page(
    request: Request, staff: StaffPage, state: StateDep, db: DbSessionDep, code: str = ""
) -> Response:
    """ "Find by confirmation code" on the forms page: a plain GET form, so it works
    without JavaScript. One match opens the response; otherwise the forms page says so."""
    normalised = normalise_confirmation(code[:64])
    found = (
        await find_by_confirmation(db, staff.principal.organization_id, normalised)
        if normalised
        else []
    )
    if len(found) == 1:
        return RedirectResponse(f"/responses/{found[0].id}", status_code=303)
    if not normalised:
        message = "Enter the confirmation code the patient was shown (letters and digits)."
    elif not found:
        message = f"No response of your clinic has the confirmation code {normalised}."
    else:
        message = f"Several responses have the code {normalised}: open them from their form."
    return await _forms_list(request, staff, state, db, find_message=message, find_code=code[:64])


@router.get("/responses/patients")
async def find_patient_page(
    request: Request,
    staff: StaffPage,
    state: StateDep,
    db: DbSessionDep,
    auditor: AuditorDep,
    name: str = "",
    dob: str = "",
) -> Response:
    """ "Find a patient's responses" on the forms page: a plain GET form (name and/or date
    of birth) answered with a list across the clinic's forms; one audited list view."""
    rows: list[ResponseRow] = []
    patients: dict[str, PatientIdentity | None] = {}
    message: str | None = None
    try:
        search = parse_search(name[:400], dob[:40])
    except ValidationFailed:
        search, message = None, "Enter a name (whole words) or a date of birth."
    if search is not None and search.is_empty():
        search, message = None, "Enter a name (whole words) or a date of birth."
    if search is not None:
        rows = await find_by_patient(db, state.keys, staff.principal.organization_id, search)
        patients = await patients_of(db, state.keys, auditor, rows, search)
        if not rows:
            message = "No response of your clinic matches. Names match by whole words."
    titles = {form.id: form.title for form, _ in await forms_with_response_counts(
        db, staff.principal.organization_id
    )}  # fmt: skip
    found = [
        {
            "id": row.id,
            "form_title": titles.get(row.form_id, "(archived form)"),
            "form_id": row.form_id,
            "submitted_at": row.submitted_at,
            "status": row.review_status,
            "confirmation": row.confirmation,
            "patient": patients.get(row.id),
        }
        for row in rows
    ]
    return render(
        request,
        "responses_found.html",
        title="Find a patient's responses",
        nav="forms",
        found=found,
        message=message,
        name=name[:200],
        dob=dob[:40],
        **_staff_context(state, staff),
    )


@router.get("/forms/{form_id}/requests")
async def requests_page(
    form_id: str, request: Request, staff: StaffPage, state: StateDep, db: DbSessionDep
) -> Response:
    """Requests to a patient (patient_requests/): a new one's link and QR code to hand
    over or print, and the form's requests with their states (data: the JSON API)."""
    form = await get_form(db, staff.principal.organization_id, form_id)
    return render(
        request,
        "requests_list.html",
        title=f"Requests: {form.title}",
        nav="forms",
        form_id=form.id,
        form_title=form.title,
        form_published=form.status == "published",
        mail_enabled=state.settings.mail_enabled,
        **_staff_context(state, staff),
    )


@router.get("/responses/{response_id}")
async def response_page(
    response_id: str,
    request: Request,
    staff: StaffPage,
    state: StateDep,
    db: DbSessionDep,
    pdf: str | None = None,
) -> Response:
    organization_id = staff.principal.organization_id
    row = await get_response(db, organization_id, response_id)
    form = await get_form(db, organization_id, row.form_id)
    version = await get_version(db, row)
    # The PDF button: "Download PDF" (a GET) once one is stored, else "Generate PDF"
    # (a POST; a GET never generates).
    pdf_state = await PdfService(state).state_of(row.id)
    csrf_token = await _form_csrf_token(request, state, staff) if pdf_state == "none" else ""
    return render(
        request,
        "response.html",
        title=f"Response to {version.title}",
        nav="forms",
        response_id=row.id,
        confirmation=row.confirmation,  # typed by an admin to confirm a delete
        form_id=form.id,
        form_title=version.title,
        form_version=row.form_version,
        submitted_at=row.submitted_at,
        fields=list(version.fields),
        pdf_state=pdf_state,
        # A response answered in another language also offers the clinic's copy.
        answered_in=row.language or DEFAULT_LANGUAGE,
        clinic_language=DEFAULT_LANGUAGE,
        language_names=LANGUAGE_NAMES,
        pdf_just_generated=pdf == "generated" and pdf_state == "stored",
        csrf_token=csrf_token,
        **_staff_context(state, staff),
    )


@router.get("/responses/{response_id}/pdf")
async def response_pdf_download(
    response_id: str,
    request: Request,
    staff: StaffPage,
    state: StateDep,
    auditor: AuditorDep,
    lang: str | None = None,
) -> Response:
    """The stored PDF as an attachment named after the form, the date and the
    confirmation code. Generates nothing and takes no `pdf` token: a GET has no side
    effects (API.md "Pages"); without a stored PDF, 404 (409 while one is generated),
    for a browser as a page that offers the button.

    `?lang=en` (any language we speak): the staff copy, the response printed in that
    language, rendered for this download and not stored (docs/languages.md); it takes
    a `pdf` token like a generation."""
    if lang is not None:
        if not is_supported(lang):
            raise ValidationFailed({"lang": "unsupported language"})
        await take_policy_token("pdf", request, staff.principal.user_id, state)
        return pdf_response(
            await PdfService(state).copy_in(staff.principal, response_id, lang, auditor)
        )
    try:
        pdf = await PdfService(state).serve_stored(staff.principal, response_id, auditor)
    except (PdfNotGenerated, PdfInProgress) as exc:
        if not wants_html(request):
            raise
        in_progress = isinstance(exc, PdfInProgress)
        return render(
            request,
            "response_pdf_missing.html",
            status_code=exc.status_code,
            title="PDF being generated" if in_progress else "No PDF yet",
            nav="forms",
            response_id=response_id,
            in_progress=in_progress,
            csrf_token="" if in_progress else await _form_csrf_token(request, state, staff),
            **_staff_context(state, staff),
        )
    return pdf_response(pdf)


@router.post("/responses/{response_id}/pdf")
async def response_pdf_generate(
    response_id: str, request: Request, staff: StaffPage, state: StateDep, auditor: AuditorDep
) -> Response:
    """The page's "Generate PDF" button (a plain form post, its CSRF token in the
    `csrf_token` field): generate and store the PDF once, then back to the page, which
    now offers the download. Spends a `pdf` token like POST .../generate-pdf."""
    await take_policy_token("pdf", request, staff.principal.user_id, state)
    try:
        await PdfService(state).generate(staff.principal, response_id, auditor)
    except PdfInProgress:
        pass  # someone else is generating it: the page says so
    page = f"/responses/{quote(response_id, safe='')}?pdf=generated"
    return RedirectResponse(page, status_code=303)


@router.get("/account")
async def account_page(
    request: Request, staff: StaffPage, state: StateDep, db: DbSessionDep
) -> Response:
    left = await recovery_codes_left(db, staff.user_id) if staff.totp_enabled else 0
    return render(
        request,
        "account.html",
        title="My account",
        nav="account",
        email=staff.email,
        totp_enabled=staff.totp_enabled,
        recovery_codes_left=left,
        **_staff_context(state, staff),
    )


@router.get("/admin/users")
async def users_page(
    request: Request, staff: AdminPage, state: StateDep, db: DbSessionDep
) -> Response:
    # Rendered here because the API's User carries no `disabled` flag to show.
    users = await list_users(OrgScope(db, staff.principal))
    return render(
        request,
        "admin_users.html",
        title="Users",
        nav="users",
        users=users,
        **_staff_context(state, staff),
    )


@router.get("/admin/audit")
async def audit_page(request: Request, staff: AdminPage, state: StateDep) -> Response:
    return render(
        request, "admin_audit.html", title="Audit log", nav="audit", **_staff_context(state, staff)
    )


@router.get("/admin/branding")
async def branding_page(
    request: Request, staff: AdminPage, state: StateDep, db: DbSessionDep
) -> Response:
    """Name, accent colour and logo patients see (data and changes: the branding API)."""
    branding, _ = await BrandingService(db, staff.principal.organization_id).current()
    return render(
        request,
        "admin_branding.html",
        title="Branding",
        nav="branding",
        branding=branding,
        organization_name=await clinic_name(db, staff.principal.organization_id),
        **_staff_context(state, staff),
    )


@router.get("/f/{public_id}")
async def public_form_page(
    public_id: str, request: Request, db: DbSessionDep, state: StateDep
) -> Response:
    """The published version of a form, rendered for a patient's phone in their language,
    with the clinic's branding; it also posts without JavaScript (web/patient_page.py)."""
    return fresh_form_page(request, state, await public_page(state, db, public_id))


# The patient's personal link: no session, its token in the path (never in a Referer:
# every answer is no-referrer, http/edge.py) and the page no-store (render's default).
@router.get("/r/{token}")
async def request_form_page(
    token: str, request: Request, db: DbSessionDep, state: StateDep
) -> Response:
    """A patient's request: the published form, with the prefilled answers filled in by
    the page's script (public_form.js reads them from the JSON API, which also records
    that the link was opened: link previewers that fetch this HTML alone do not).
    Unknown, used, expired or cancelled: one message that says no more than that."""
    try:
        row, form = await live_request(state, db, token)
    except (NotFound, RequestClosed) as exc:
        return closed_page(request, exc.status_code)
    branding = await patient_branding(db, row.organization_id)
    clinic = branding.name if branding is not None else await clinic_name(db, row.organization_id)
    page = PatientPage(form=form, action=None, clinic=clinic, branding=branding)
    return fresh_form_page(request, state, page, scope=nonce_scope(row.id))
