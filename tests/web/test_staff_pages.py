"""Staff and patient pages in-process (no browser): who may see which page, and what the
pages read through the feature services (forms with response counts, users, the
published form)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.forms.models import Form
from healthforms.identity.models import User
from healthforms.responses.service import forms_with_response_counts
from healthforms.security.principal import Role
from tests.support.identity import create_staff
from tests.support.response_factory import (
    PublishedForm,
    create_form,
    create_organization,
    create_response,
)
from tests.support.response_fixtures import (
    StaffFactory,
    clinic,
    db,
    keys,
    settings_overrides,
    staff,
)
from tests.support.staff import signed_in_client

__all__ = ["clinic", "db", "keys", "settings_overrides", "staff"]

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
STAFF_PAGES = ["/forms", "/account"]
EDITOR_PAGES = ["/forms/new"]
ADMIN_PAGES = ["/admin/users", "/admin/audit"]


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.VIEWER, STAFF_PAGES),
        (Role.EDITOR, STAFF_PAGES + EDITOR_PAGES),
        (Role.ADMIN, STAFF_PAGES + EDITOR_PAGES + ADMIN_PAGES),
    ],
)
async def test_each_role_sees_its_pages_and_gets_403_for_the_others(
    staff: StaffFactory, clinic: PublishedForm, role: Role, allowed: list[str]
) -> None:
    async with staff(clinic.organization_id, role) as http:
        for path in STAFF_PAGES + EDITOR_PAGES + ADMIN_PAGES:
            response = await http.get(path, headers=HTML)
            expected = 200 if path in allowed else 403
            assert response.status_code == expected, (path, response.status_code)
            assert response.headers["content-type"].startswith("text/html")
            if expected == 403:
                assert "You do not have access to this page" in response.text


@pytest.mark.parametrize("change", ["disabled", "moved"])
async def test_a_disabled_or_moved_user_is_sent_to_sign_in(
    app: FastAPI, db: Database, clinic: PublishedForm, change: str
) -> None:
    async with signed_in_client(app, clinic.organization_id, Role.ADMIN) as (http, member):
        assert (await http.get("/admin/users", headers=HTML)).status_code == 200
        values: dict[str, object] = (
            {"disabled": True}
            if change == "disabled"
            else {"organization_id": await create_organization(db)}
        )
        async with db.sessions() as session, session.begin():
            await session.execute(update(User).where(User.id == member.id).values(**values))
        for path in ["/forms", "/forms/new", "/account", "/admin/users", "/admin/audit"]:
            response = await http.get(path, headers=HTML)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/login?next=" + path


async def _set_form(db: Database, form_id: str, **values: object) -> None:
    async with db.sessions() as session, session.begin():
        await session.execute(update(Form).where(Form.id == form_id).values(**values))


async def test_forms_list_counts_this_clinics_responses_and_hides_archived_forms(
    db: Database, keys: KeyRing, staff: StaffFactory
) -> None:
    org = await create_organization(db)
    other_org = await create_organization(db)
    now = datetime.now(UTC).replace(microsecond=0)
    older = (await create_form(db, org, title="Older intake"))[0]
    newer = (await create_form(db, org, title="Newer consent"))[0]
    archived = (await create_form(db, org, title="Archived history"))[0]
    foreign = (await create_form(db, other_org, title="Other clinic form"))[0]
    await _set_form(db, older.form_id, updated_at=now - timedelta(hours=2))
    await _set_form(db, newer.form_id, updated_at=now - timedelta(hours=1))
    await _set_form(db, archived.form_id, status="archived", updated_at=now)
    for form, count in [(older, 2), (archived, 1), (foreign, 3)]:
        for _ in range(count):
            await create_response(db, keys, form, {"name": "x"})

    async with db.sessions() as session:
        rows = await forms_with_response_counts(session, org)
    assert [(form.id, count) for form, count in rows] == [
        (newer.form_id, 0),
        (older.form_id, 2),
    ]

    async with staff(org, Role.VIEWER) as http:
        page = await http.get("/forms", headers=HTML)
    assert page.status_code == 200
    html = page.text
    assert html.index("Newer consent") < html.index("Older intake")
    assert "Archived history" not in html and "Other clinic form" not in html
    older_row = html[html.index(f'data-form-id="{older.form_id}"') :]
    assert '<td data-label="Responses" class="num">2</td>' in older_row.split("</tr>")[0]
    newer_row = html[html.index(f'data-form-id="{newer.form_id}"') :]
    assert '<td data-label="Responses" class="num">0</td>' in newer_row.split("</tr>")[0]


async def test_users_page_lists_the_clinics_users_disabled_ones_too(
    app: FastAPI, db: Database, clinic: PublishedForm
) -> None:
    outsider = await create_staff(app, name="Outsider Person")  # of another clinic
    async with signed_in_client(app, clinic.organization_id, Role.ADMIN, name="Ada Admin") as (
        http,
        admin,
    ):
        gone = await create_staff(
            app, organization=admin.organization_name, role=Role.VIEWER, name="Gone Viewer"
        )
        async with db.sessions() as session, session.begin():
            await session.execute(update(User).where(User.id == gone.id).values(disabled=True))
        page = await http.get("/admin/users", headers=HTML)
    assert page.status_code == 200
    html = page.text
    assert f'data-user-id="{admin.id}"' in html
    assert f'data-user-id="{gone.id}" data-name="Gone Viewer" data-role="viewer"' in html
    assert html.index(f'data-user-id="{admin.id}"') < html.index(f'data-user-id="{gone.id}"')
    assert 'data-disabled="1"' in html.split(f'data-user-id="{gone.id}"')[1].split(">")[0]
    assert outsider.id not in html


async def test_public_page_shows_the_published_version_and_a_friendly_404_otherwise(
    app: FastAPI, client: httpx.AsyncClient, db: Database, clinic: PublishedForm
) -> None:
    async with db.sessions() as session:
        form = await session.get(Form, clinic.form_id)
        assert form is not None and form.public_id is not None
        public_id = form.public_id
    page = await client.get(f"/f/{public_id}", headers=HTML)
    assert page.status_code == 200
    assert "<h1>New patient intake</h1>" in page.text
    assert 'data-version="1"' in page.text

    await _set_form(db, clinic.form_id, status="draft")
    # What POST /api/forms/{id}/unpublish does after its write: the page views of every
    # instance stop using the version they cached.
    await app.state.hf.published_forms.invalidate(public_id)
    for path in [f"/f/{public_id}", "/f/" + "x" * 65, "/f/unknown"]:
        missing = await client.get(path, headers=HTML)
        assert missing.status_code == 404, path
        assert "This form link is not valid." in missing.text
        api = await client.get(path)
        assert api.json() == {"error": "This form link is not valid.", "code": "not_found"}
