"""The pages people use: staff sign-in, forms, builder, responses, account, admin; the
patient form at /f/{publicId}; static assets and the favicon.

Pages are server-rendered shells; their data comes from the same JSON API (and the same
session cookie and CSRF rules) as any other client, through static/js/api.js. A page reads
the database itself only for what the API does not offer a page: response counts for the
list, a response's frozen version labels, and the published form a patient fills in.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import func, select
from starlette.staticfiles import StaticFiles

from healthforms.errors import Forbidden, NotFound
from healthforms.forms.models import Form, FormVersion
from healthforms.identity.models import Role, User
from healthforms.responses.models import ResponseRow
from healthforms.responses.service import get_form, get_response, get_version
from healthforms.security.principal import Principal
from healthforms.state import DbSessionDep, StateDep
from healthforms.web.pages import STATIC_DIR, login_url, render, safe_next

router = APIRouter(include_in_schema=False, tags=["web"])

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


def _principal(request: Request) -> Principal | None:
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else None


async def _staff(request: Request, db: DbSessionDep) -> tuple[Principal, User] | Response:
    """The signed-in staff member and their user row, or a 303 to the sign-in page."""
    principal = _principal(request)
    if principal is None:
        return RedirectResponse(login_url(request), status_code=303)
    user = await db.get(User, principal.user_id)
    if user is None or user.disabled or user.organization_id != principal.organization_id:
        return RedirectResponse(login_url(request), status_code=303)
    return principal, user


def _staff_context(state: StateDep, principal: Principal, user: User) -> dict[str, Any]:
    return {
        "me": {"id": user.id, "name": user.name, "role": principal.role.value},
        "is_admin": principal.role is Role.ADMIN,
        "can_edit": principal.can_edit,
        "idle_timeout": state.settings.session_idle_timeout,
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


@router.get("/forms")
async def forms_page(request: Request, state: StateDep, db: DbSessionDep) -> Response:
    staff = await _staff(request, db)
    if isinstance(staff, Response):
        return staff
    principal, user = staff
    counts = (
        select(ResponseRow.form_id, func.count().label("n"))
        .where(ResponseRow.organization_id == principal.organization_id)
        .group_by(ResponseRow.form_id)
        .subquery()
    )
    rows = (
        await db.execute(
            select(Form, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.form_id == Form.id)
            .where(Form.organization_id == principal.organization_id)
            .where(Form.status != "archived")
            .order_by(Form.updated_at.desc())
        )
    ).all()
    forms = [
        {
            "id": form.id,
            "title": form.title,
            "status": form.status,
            "version": form.version,
            "has_changes": form.has_unpublished_changes and form.status == "published",
            "responses": int(count),
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
        **_staff_context(state, principal, user),
    )


@router.get("/forms/new")
async def new_form_page(request: Request, state: StateDep, db: DbSessionDep) -> Response:
    staff = await _staff(request, db)
    if isinstance(staff, Response):
        return staff
    principal, user = staff
    if not principal.can_edit:
        raise Forbidden()
    return render(
        request, "form_new.html", title="New form", nav="forms", **_staff_context(state, *staff)
    )


async def _org_form(db: DbSessionDep, principal: Principal, form_id: str) -> Form:
    # The same organisation-scoped lookup the responses API uses (404 for other clinics).
    return await get_form(db, principal.organization_id, form_id)


@router.get("/forms/{form_id}")
async def builder_page(
    form_id: str, request: Request, state: StateDep, db: DbSessionDep
) -> Response:
    staff = await _staff(request, db)
    if isinstance(staff, Response):
        return staff
    form = await _org_form(db, staff[0], form_id)
    return render(
        request,
        "builder.html",
        title=f"Edit {form.title}",
        nav="forms",
        form_id=form.id,
        form_title=form.title,
        **_staff_context(state, *staff),
    )


@router.get("/forms/{form_id}/responses")
async def responses_page(
    form_id: str, request: Request, state: StateDep, db: DbSessionDep
) -> Response:
    staff = await _staff(request, db)
    if isinstance(staff, Response):
        return staff
    form = await _org_form(db, staff[0], form_id)
    return render(
        request,
        "responses_list.html",
        title=f"Responses: {form.title}",
        nav="forms",
        form_id=form.id,
        form_title=form.title,
        **_staff_context(state, *staff),
    )


@router.get("/responses/{response_id}")
async def response_page(
    response_id: str, request: Request, state: StateDep, db: DbSessionDep
) -> Response:
    staff = await _staff(request, db)
    if isinstance(staff, Response):
        return staff
    principal = staff[0]
    row = await get_response(db, principal.organization_id, response_id)
    form = await _org_form(db, principal, row.form_id)
    version = await get_version(db, row)
    fields = list(version.fields)
    return render(
        request,
        "response.html",
        title=f"Response to {version.title}",
        nav="forms",
        response_id=row.id,
        form_id=form.id,
        form_title=version.title,
        form_version=row.form_version,
        submitted_at=row.submitted_at,
        fields=fields,
        **_staff_context(state, *staff),
    )


@router.get("/account")
async def account_page(request: Request, state: StateDep, db: DbSessionDep) -> Response:
    staff = await _staff(request, db)
    if isinstance(staff, Response):
        return staff
    principal, user = staff
    return render(
        request,
        "account.html",
        title="My account",
        nav="account",
        email=user.email,
        totp_enabled=user.totp_enabled,
        **_staff_context(state, principal, user),
    )


async def _admin(request: Request, db: DbSessionDep) -> tuple[Principal, User] | Response:
    staff = await _staff(request, db)
    if not isinstance(staff, Response) and not staff[0].is_admin:
        raise Forbidden()
    return staff


@router.get("/admin/users")
async def users_page(request: Request, state: StateDep, db: DbSessionDep) -> Response:
    staff = await _admin(request, db)
    if isinstance(staff, Response):
        return staff
    # Rendered here because the API's User carries no `disabled` flag to show.
    users = (
        (
            await db.execute(
                select(User)
                .where(User.organization_id == staff[0].organization_id)
                .order_by(User.created_at, User.id)
            )
        )
        .scalars()
        .all()
    )
    return render(
        request,
        "admin_users.html",
        title="Users",
        nav="users",
        users=users,
        **_staff_context(state, *staff),
    )


@router.get("/admin/audit")
async def audit_page(request: Request, state: StateDep, db: DbSessionDep) -> Response:
    staff = await _admin(request, db)
    if isinstance(staff, Response):
        return staff
    return render(
        request, "admin_audit.html", title="Audit log", nav="audit", **_staff_context(state, *staff)
    )


@router.get("/f/{public_id}")
async def public_form_page(public_id: str, request: Request, db: DbSessionDep) -> Response:
    """The published version of a form, rendered for a patient's phone."""
    if len(public_id) > 64:
        raise NotFound("This form link is not valid.")
    form = (
        await db.execute(
            select(Form).where(Form.public_id == public_id).where(Form.status == "published")
        )
    ).scalar_one_or_none()
    version = None
    if form is not None:
        version = (
            await db.execute(
                select(FormVersion)
                .where(FormVersion.form_id == form.id)
                .where(FormVersion.version == form.version)
            )
        ).scalar_one_or_none()
    if form is None or version is None:
        raise NotFound("This form link is not valid.")
    return render(
        request,
        "public_form.html",
        title=version.title,
        public_id=public_id,
        form_title=version.title,
        description=version.description,
        fields=version.fields,
        version=version.version,
    )
