"""Forms of one organisation: create, edit (revisioned), publish (frozen versions), archive.

Every query goes through `FormService._scoped`, the ONE place that filters on the
caller's organisation: another organisation's form is indistinguishable from a
form that does not exist (404 `not_found`).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Any, Literal, cast

from sqlalchemy import Select, Table, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from healthforms.clock import rfc3339, utcnow
from healthforms.errors import Conflict, Forbidden, NotFound
from healthforms.forms.models import AlertSubscription, Form, FormVersion
from healthforms.forms.schema import FieldDef, fields_from_json, fields_to_json
from healthforms.outbox.store import FORM_PUBLISHED, enqueue
from healthforms.security.principal import Principal

STATUS_DRAFT = "draft"
STATUS_PUBLISHED = "published"
STATUS_ARCHIVED = "archived"
STATUSES = frozenset({STATUS_DRAFT, STATUS_PUBLISHED, STATUS_ARCHIVED})

# Checked inside the save's transaction; False refuses the save (see security/locks.py).
FenceCheck = Callable[[AsyncSession], Awaitable[bool]]


class Unchanged(Enum):
    """A save that leaves a setting as it is (None is a value: keep responses for ever)."""

    UNCHANGED = "unchanged"


UNCHANGED: Literal[Unchanged.UNCHANGED] = Unchanged.UNCHANGED


class StaleRevision(Conflict):
    code = "stale_revision"
    message = "The form was changed since you loaded it; reload and apply your edit again."


class FormArchived(Conflict):
    code = "form_archived"
    message = "The form is archived."


class StaleLock(Conflict):
    code = "locked"
    message = "Your edit lock expired and another editor has saved since."


class RetentionAdminOnly(Forbidden):
    message = "Only an admin can change how long this form's responses are kept."


def _check_retention_change(principal: Principal, current: int | None, wanted: int | None) -> None:
    """Refuse an editor who changes the retention period. A shorter period deletes
    patient records at the next purge, and deleting a response is an admin's decision
    (DELETE /api/responses/{id}); an editor's save that sends it unchanged passes."""
    if wanted != current and not principal.is_admin:
        raise RetentionAdminOnly()


def form_json(form: Form) -> dict[str, Any]:
    """The API.md Form object (`translations` only once a form has some)."""
    body: dict[str, Any] = {
        "id": form.id,
        "title": form.title,
        "description": form.description,
        "fields": list(form.fields or []),
        "status": form.status,
        "version": form.version,
        "revision": form.revision,
        "publicId": form.public_id,
        "hasUnpublishedChanges": form.has_unpublished_changes,
        "retentionDays": form.retention_days,
        "thankYouMessage": form.thank_you_message,
        "createdAt": rfc3339(form.created_at),
        "updatedAt": rfc3339(form.updated_at),
    }
    if form.translations:
        body["translations"] = dict(form.translations)
    return body


COPY_SUFFIX = " (copy)"
MAX_TITLE = 200  # forms.title is String(200)


def copy_title(title: str) -> str:
    """ "<title> (copy)", the title cut so the whole fits the column."""
    return title[: MAX_TITLE - len(COPY_SUFFIX)].rstrip() + COPY_SUFFIX


def new_public_id() -> str:
    """An unguessable public link id (128 random bits)."""
    return secrets.token_urlsafe(16)


class FormService:
    """Form operations on behalf of one signed-in staff member."""

    def __init__(self, session: AsyncSession, principal: Principal) -> None:
        self.session = session
        self.principal = principal

    def _scoped(self) -> Select[Form]:
        # The one organisation filter every read and write goes through.
        return select(Form).where(Form.organization_id == self.principal.organization_id)

    async def get(self, form_id: str, *, for_update: bool = False) -> Form:
        query = self._scoped().where(Form.id == form_id)
        if for_update:
            query = query.with_for_update()
        form = (await self.session.execute(query)).scalar_one_or_none()
        if form is None:
            raise NotFound()
        return form

    async def list_forms(self, status: str | None = None) -> Sequence[Form]:
        query = self._scoped()
        if status in STATUSES:
            query = query.where(Form.status == status)
        else:
            query = query.where(Form.status != STATUS_ARCHIVED)
        query = query.order_by(Form.updated_at.desc(), Form.id)
        return (await self.session.execute(query)).scalars().all()

    async def create(
        self,
        *,
        title: str,
        description: str,
        fields: list[FieldDef],
        retention_days: int | None = None,
        thank_you_message: str | None = None,
        translations: dict[str, Any] | None = None,
    ) -> Form:
        _check_retention_change(self.principal, None, retention_days)
        now = utcnow()
        form = Form(
            organization_id=self.principal.organization_id,
            title=title,
            description=description,
            fields=fields_to_json(fields),
            translations=translations or None,
            status=STATUS_DRAFT,
            revision=1,
            version=0,
            public_id=None,
            has_unpublished_changes=True,
            retention_days=retention_days,
            thank_you_message=thank_you_message,
            edit_fence=0,
            created_by=self.principal.user_id,
            created_at=now,
            updated_at=now,
        )
        self.session.add(form)
        await self.session.flush()
        # Whoever builds a form hears of its responses (alerts/); they can turn it off.
        self.session.add(
            AlertSubscription(
                user_id=self.principal.user_id,
                form_id=form.id,
                organization_id=form.organization_id,
            )
        )
        await self.session.commit()
        return form

    async def duplicate(self, form_id: str) -> Form:
        """A new draft copy of the form: its current (draft) title, description and
        fields, titled "<title> (copy)". The retention period is copied only for an
        admin, who alone may set one (an editor's copy keeps responses for ever until an
        admin sets it); nothing else (status, versions, public link, responses) is."""
        source = await self.get(form_id)
        fields = fields_from_json(list(source.fields or []))
        retention = source.retention_days if self.principal.is_admin else None
        return await self.create(
            title=copy_title(source.title),
            description=source.description,
            fields=fields,
            retention_days=retention,
        )

    async def update(
        self,
        form_id: str,
        *,
        title: str | None,
        description: str | None,
        fields: list[FieldDef] | None,
        revision: int | None,
        retention_days: int | None | Literal[Unchanged.UNCHANGED] = UNCHANGED,
        thank_you_message: str | None | Literal[Unchanged.UNCHANGED] = UNCHANGED,
        translations: dict[str, Any] | Literal[Unchanged.UNCHANGED] = UNCHANGED,
        fence: int | None = None,
        fence_check: FenceCheck | None = None,
    ) -> Form:
        """Save the draft; bump `revision`; refuse a stale revision or a stale lock holder."""
        form = await self.get(form_id)
        if form.status == STATUS_ARCHIVED:
            raise FormArchived()
        current = form.revision
        if revision is not None and revision != current:
            raise StaleRevision(extra={"revision": current})
        values: dict[str, Any] = {
            "revision": current + 1,
            "has_unpublished_changes": True,
            "updated_at": utcnow(),
        }
        if title is not None:
            values["title"] = title
        if description is not None:
            values["description"] = description
        if fields is not None:
            values["fields"] = fields_to_json(fields)
        if translations is not UNCHANGED:
            values["translations"] = translations or None
        if retention_days is not UNCHANGED:
            _check_retention_change(self.principal, form.retention_days, retention_days)
            values["retention_days"] = retention_days
        if thank_you_message is not UNCHANGED:
            values["thank_you_message"] = thank_you_message
        if fence is not None:
            values["edit_fence"] = fence
        if fence_check is not None and not await fence_check(self.session):
            await self.session.rollback()
            raise StaleLock()
        # Compare-and-set on the revision: of two saves that read the same revision,
        # exactly one succeeds; the other is told, never silently overwritten.
        # RETURNING brings the row back as saved (a publish may have moved its status in
        # between): no second SELECT to refresh it.
        table = cast(Table, Form.__table__)
        saved = (
            await self.session.execute(
                update(table)
                .where(
                    table.c.id == form.id,
                    table.c.organization_id == self.principal.organization_id,
                    table.c.revision == current,
                )
                .values(**values)
                .returning(*table.c)
            )
        ).first()
        if saved is None:
            await self.session.rollback()
            raise StaleRevision()
        await self.session.commit()
        for column, value in saved._mapping.items():
            set_committed_value(form, str(column), value)
        return form

    async def publish(self, form_id: str) -> Form:
        """Freeze the draft as the next version (or re-open the current one if unchanged)."""
        form = await self.get(form_id)
        if form.status == STATUS_ARCHIVED:
            raise FormArchived()
        now = utcnow()
        values: dict[str, Any] = {"status": STATUS_PUBLISHED, "updated_at": now}
        if form.public_id is None:
            values["public_id"] = new_public_id()
        needs_version = form.version == 0 or form.has_unpublished_changes
        if needs_version:
            next_version = form.version + 1
            self.session.add(
                FormVersion(
                    form_id=form.id,
                    version=next_version,
                    title=form.title,
                    description=form.description,
                    fields=list(form.fields or []),
                    thank_you_message=form.thank_you_message,
                    translations=form.translations or None,
                    published_at=now,
                    published_by=self.principal.user_id,
                )
            )
            values["version"] = next_version
            values["has_unpublished_changes"] = False
        # The revision and version guard the freeze: a save that lands between our read
        # and this write makes the publish fail instead of freezing a mix.
        result = await self.session.execute(
            update(Form)
            .where(
                Form.id == form.id,
                Form.organization_id == self.principal.organization_id,
                Form.revision == form.revision,
                Form.version == form.version,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            await self.session.rollback()
            raise StaleRevision()
        # The event for webhooks, committed with the version it announces.
        await enqueue(
            self.session,
            self.principal.organization_id,
            FORM_PUBLISHED,
            {"formId": form.id, "version": int(values.get("version", form.version))},
        )
        try:
            await self.session.commit()
        except IntegrityError as exc:
            await self.session.rollback()
            raise StaleRevision() from exc
        await self.session.refresh(form)
        return form

    async def unpublish(self, form_id: str) -> Form:
        """Back to draft: the public link answers 404 until the next publish."""
        form = await self.get(form_id)
        if form.status == STATUS_ARCHIVED:
            raise FormArchived()
        form.status = STATUS_DRAFT
        form.updated_at = utcnow()
        await self.session.commit()
        return form

    async def archive(self, form_id: str) -> Form:
        """Archive (the DELETE of the API): hidden from lists, link dead, responses kept."""
        form = await self.get(form_id)
        form.status = STATUS_ARCHIVED
        form.updated_at = utcnow()
        await self.session.commit()
        return form

    async def versions(self, form_id: str) -> Sequence[FormVersion]:
        form = await self.get(form_id)
        query = (
            select(FormVersion)
            .where(FormVersion.form_id == form.id)
            .order_by(FormVersion.version.asc())
        )
        return (await self.session.execute(query)).scalars().all()

    async def version(self, form_id: str, version: int) -> FormVersion:
        form = await self.get(form_id)
        query = select(FormVersion).where(
            FormVersion.form_id == form.id, FormVersion.version == version
        )
        found = (await self.session.execute(query)).scalar_one_or_none()
        if found is None:
            raise NotFound()
        return found
