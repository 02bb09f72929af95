"""HTTP API of forms (API.md "Forms"): parse, call FormService, render the Form JSON."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import JSONResponse

from healthforms.audit.events import (
    FORM_CREATED,
    FORM_PUBLISHED,
    FORM_UPDATED,
    LOCK_CONFLICT,
    Outcome,
)
from healthforms.audit.recorder import Auditor, AuditorDep
from healthforms.errors import NotFound, ValidationFailed
from healthforms.forms.edit_lock import FormEditLocks, FormLocked, lock_json
from healthforms.forms.schema import fields_from_json
from healthforms.forms.service import UNCHANGED, FormService, StaleLock, form_json
from healthforms.forms.templates import TEMPLATES, find_template
from healthforms.forms.translations import validate_translations
from healthforms.forms.validation import (
    validate_description,
    validate_fields,
    validate_retention_days,
    validate_thank_you_message,
    validate_title,
)
from healthforms.security.context import CurrentPrincipal, EditorPrincipal
from healthforms.state import AppState, DbSessionDep, StateDep

router = APIRouter(prefix="/api/forms", tags=["forms"])
# The template gallery (docs/templates.md): read-only data, any signed-in staff member.
templates_router = APIRouter(prefix="/api/form-templates", tags=["forms"])

JsonObject = dict[str, Any]


def _revision(body: JsonObject) -> int | None:
    revision = body.get("revision")
    if revision is None:
        return None
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise ValidationFailed({"revision": "revision must be an integer"})
    return revision


def _retention_detail(previous: int | None, current: int | None) -> dict[str, object] | None:
    """What a save says of the retention period in its audit event, when it changed it:
    a shorter period deletes responses at the next purge, so the trail keeps both."""
    if previous == current:
        return None
    return {"retentionDays": current, "previousRetentionDays": previous}


async def _conflict(auditor: Auditor, form_id: str, error: FormLocked) -> FormLocked:
    await auditor.record(
        LOCK_CONFLICT, outcome=Outcome.DENIED, resource_type="form", resource_id=form_id
    )
    return error


# The reads answer a JSONResponse of what form_json built (plain JSON types already):
# returning the dict made FastAPI validate and re-encode it through pydantic and
# jsonable_encoder, the largest cost of GET /api/forms for a clinic with 50 forms.
@router.get("")
async def list_forms(
    principal: CurrentPrincipal,
    session: DbSessionDep,
    status: str | None = Query(default=None, max_length=16),
) -> JSONResponse:
    forms = await FormService(session, principal).list_forms(status)
    return JSONResponse({"forms": [form_json(form) for form in forms]})


@router.post("", status_code=201)
async def create_form(
    principal: EditorPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
    body: JsonObject = Body(...),  # noqa: B008
) -> JsonObject:
    detail: dict[str, object] = {}
    if "template" in body:
        # From the gallery: the template's fields, its title and description unless given.
        template = find_template(body["template"])
        if template is None:
            raise ValidationFailed({"template": "not a template of the gallery"})
        if body.get("fields"):
            raise ValidationFailed({"fields": "give either a template or fields, not both"})
        detail["template"] = template.id
        body = {
            "title": template.title,
            "description": template.description,
            **{k: v for k, v in body.items() if k in ("title", "description", "retentionDays")},
            "fields": list(template.fields),
        }
    title = validate_title(body.get("title"))
    description = validate_description(body.get("description"))
    fields = validate_fields(body.get("fields") or [])
    retention_days = validate_retention_days(body.get("retentionDays"))
    thank_you = validate_thank_you_message(body.get("thankYouMessage"))
    translations = validate_translations(body.get("translations"), fields)
    form = await FormService(session, principal).create(
        title=title,
        description=description,
        fields=fields,
        retention_days=retention_days,
        thank_you_message=thank_you,
        translations=translations,
    )
    if form.retention_days is not None:
        detail["retentionDays"] = form.retention_days
    await auditor.record(
        FORM_CREATED, resource_type="form", resource_id=form.id, detail=detail or None
    )
    return form_json(form)


@router.post("/{form_id}/duplicate", status_code=201)
async def duplicate_form(
    form_id: str, principal: EditorPrincipal, session: DbSessionDep, auditor: AuditorDep
) -> JsonObject:
    """A new draft with the form's current fields, titled "<title> (copy)"."""
    form = await FormService(session, principal).duplicate(form_id)
    detail: dict[str, object] = {"duplicateOf": form_id}
    if form.retention_days is not None:
        detail["retentionDays"] = form.retention_days
    await auditor.record(FORM_CREATED, resource_type="form", resource_id=form.id, detail=detail)
    return form_json(form)


@templates_router.get("")
async def list_templates(principal: CurrentPrincipal) -> JSONResponse:
    return JSONResponse({"templates": [t.summary_json() for t in TEMPLATES.values()]})


@templates_router.get("/{template_id}")
async def get_template(template_id: str, principal: CurrentPrincipal) -> JSONResponse:
    template = find_template(template_id)
    if template is None:
        raise NotFound()
    return JSONResponse(template.json())


@router.get("/{form_id}")
async def get_form(
    form_id: str, principal: CurrentPrincipal, session: DbSessionDep
) -> JSONResponse:
    return JSONResponse(form_json(await FormService(session, principal).get(form_id)))


@router.put("/{form_id}")
async def update_form(
    form_id: str,
    principal: EditorPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
    state: StateDep,
    body: JsonObject = Body(...),  # noqa: B008
) -> JsonObject:
    service = FormService(session, principal)
    # 404 before any validation detail leaks. The save is a compare-and-set on the
    # revision read here, so this is the retention period the save replaces.
    stored = await service.get(form_id)
    previous_retention = stored.retention_days
    try:
        guard = await FormEditLocks(state.locks, session, principal).guard_save(form_id)
    except FormLocked as error:
        raise await _conflict(auditor, form_id, error) from None
    title = validate_title(body["title"]) if "title" in body else None
    description = validate_description(body["description"]) if "description" in body else None
    fields = validate_fields(body["fields"]) if "fields" in body else None
    retention_days = (
        validate_retention_days(body["retentionDays"]) if "retentionDays" in body else UNCHANGED
    )
    thank_you = (
        validate_thank_you_message(body["thankYouMessage"])
        if "thankYouMessage" in body
        else UNCHANGED
    )
    # Checked against the fields they are saved with (the stored ones when the save
    # leaves the fields as they are).
    translations = (
        validate_translations(
            body["translations"],
            fields if fields is not None else fields_from_json(list(stored.fields or [])),
        )
        if "translations" in body
        else UNCHANGED
    )
    edit_locks = FormEditLocks(state.locks, session, principal)
    try:
        form = await service.update(
            form_id,
            title=title,
            description=description,
            fields=fields,
            revision=_revision(body),
            retention_days=retention_days,
            thank_you_message=thank_you,
            translations=translations,
            fence=guard.fence,
            fence_check=guard.check,
        )
    except StaleLock:
        # Our lease lapsed and a newer holder saved: say who holds the form now.
        raise await _conflict(auditor, form_id, await edit_locks.locked_error(form_id)) from None
    await auditor.record(
        FORM_UPDATED,
        resource_type="form",
        resource_id=form.id,
        detail=_retention_detail(previous_retention, form.retention_days),
    )
    return form_json(form)


async def withdraw_published(state: AppState, public_id: str | None) -> None:
    """Public pages of every instance stop showing the version they cached."""
    if public_id is not None:
        await state.published_forms.invalidate(public_id)


@router.delete("/{form_id}", status_code=204)
async def archive_form(
    form_id: str,
    principal: EditorPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
    state: StateDep,
) -> Response:
    form = await FormService(session, principal).archive(form_id)
    await withdraw_published(state, form.public_id)
    await auditor.record(FORM_UPDATED, resource_type="form", resource_id=form.id)
    return Response(status_code=204)


@router.post("/{form_id}/publish")
async def publish_form(
    form_id: str,
    principal: EditorPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
    state: StateDep,
) -> JsonObject:
    form = await FormService(session, principal).publish(form_id)
    await withdraw_published(state, form.public_id)  # the link may show a newer version
    state.outbox.nudge()  # its form.published message
    await auditor.record(FORM_PUBLISHED, resource_type="form", resource_id=form.id)
    return form_json(form)


@router.post("/{form_id}/unpublish")
async def unpublish_form(
    form_id: str,
    principal: EditorPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
    state: StateDep,
) -> JsonObject:
    form = await FormService(session, principal).unpublish(form_id)
    await withdraw_published(state, form.public_id)
    await auditor.record(FORM_UPDATED, resource_type="form", resource_id=form.id)
    return form_json(form)


@router.post("/{form_id}/lock")
async def lock_form(
    form_id: str,
    principal: EditorPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
    state: StateDep,
) -> JsonObject:
    await FormService(session, principal).get(form_id)
    try:
        owner, expires_at = await FormEditLocks(state.locks, session, principal).acquire(form_id)
    except FormLocked as error:
        raise await _conflict(auditor, form_id, error) from None
    return lock_json(owner, expires_at)


@router.delete("/{form_id}/lock", status_code=204)
async def unlock_form(
    form_id: str,
    principal: EditorPrincipal,
    session: DbSessionDep,
    auditor: AuditorDep,
    state: StateDep,
) -> Response:
    await FormService(session, principal).get(form_id)
    try:
        await FormEditLocks(state.locks, session, principal).release(form_id)
    except FormLocked as error:
        raise await _conflict(auditor, form_id, error) from None
    return Response(status_code=204)
