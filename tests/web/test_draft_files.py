"""A draft keeps its photo: added and saved on one phone, the link opened on another
(a fresh browser context), the photo listed there and sent with the form; it is the
response's file afterwards (real Chromium, phone viewport)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Browser, Route, expect
from sqlalchemy import select

from healthforms.db.engine import Database
from healthforms.responses.models import ResponseRow
from healthforms.uploads.models import Upload
from tests.support.servers import ServerProcess
from tests.uploads.helpers import pdf_document, photo_with_gps
from tests.web.browser import Watch, check_page, new_context
from tests.web.seed import create_users, publish_form, run_async
from tests.web.test_public_pages import PHONE
from tests.web.test_upload_pages import choose

pytestmark = pytest.mark.browser

FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name", "required": True},
    {
        "id": "card",
        "type": "file",
        "label": "Insurance card",
        "required": True,
        "accept": ["image"],
    },
    {"id": "referral", "type": "file", "label": "Referral letter", "maxFiles": 2},
]


async def _files(database_url: str, form_id: str) -> list[tuple[str, str, str | None]]:
    """(field id, media type, response id) of the form's uploads."""
    db = Database.connect(database_url)
    try:
        async with db.sessions() as session:
            rows = await session.execute(
                select(Upload.field_id, Upload.media_type, Upload.response_id)
                .where(Upload.form_id == form_id)
                .order_by(Upload.field_id)
            )
            return [(r.field_id, r.media_type, r.response_id) for r in rows]
    finally:
        await db.dispose()


async def _response_ids(database_url: str, form_id: str) -> list[str]:
    db = Database.connect(database_url)
    try:
        async with db.sessions() as session:
            query = select(ResponseRow.id).where(ResponseRow.form_id == form_id)
            return list((await session.execute(query)).scalars())
    finally:
        await db.dispose()


def test_a_saved_drafts_photo_is_listed_on_another_phone_and_sent_with_the_form(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    base = server.base_url
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    form_id, public_id = publish_form(database_url, admin.organization_id, "Card", FIELDS)
    watch = Watch()

    first = new_context(browser, watch, **PHONE)
    page = first.new_page()
    page.goto(f"{base}/f/{public_id}")
    page.get_by_label("Full name").fill("Ada Lovelace")
    choose(page, "card", "my-card.jpg", "image/jpeg", photo_with_gps())
    expect(page.locator("#q-card-status")).to_have_text("my-card.jpg uploaded.")
    choose(page, "referral", "letter.pdf", "application/pdf", pdf_document(pages=2))
    expect(page.locator("#q-referral-status")).to_have_text("letter.pdf uploaded.")
    page.get_by_role("button", name="Save and continue later").click()
    expect(page.locator("#draft-saved")).to_be_focused()
    expect(page.locator("#draft-saved")).to_contain_text(
        "Files you added are kept with your answers until then."
    )
    link = page.get_by_label("Link to continue").input_value()
    assert re.search(r"#draft=[A-Za-z0-9_-]{43}$", link), link
    first.close()

    second = new_context(browser, watch, **PHONE)
    other = second.new_page()
    other.goto(link)
    expect(other.get_by_label("Full name")).to_have_value("Ada Lovelace")
    expect(other.locator("#draft-resumed")).to_be_visible()
    # The files are listed (the server never kept their names: their kind instead),
    # each with a button to remove it.
    card = other.locator("#q-card-list .file-item")
    expect(card).to_have_count(1)
    expect(card).to_contain_text(re.compile(r"^photo \(photo, \d+ KB\)"))
    referral = other.locator("#q-referral-list .file-item")
    expect(referral).to_have_count(1)
    expect(referral).to_contain_text("PDF (PDF,")
    check_page(other, "draft-files-resumed-phone")
    referral.get_by_role("button", name="Remove PDF").click()
    expect(other.locator("#q-referral-status")).to_have_text("Removed PDF.")
    expect(other.locator("#q-referral")).to_be_focused()
    expect(referral).to_have_count(0)
    other.get_by_role("button", name="Send").click()
    expect(other.locator("#confirmation")).to_be_visible()
    second.close()
    assert watch.unexpected() == []

    (response_id,) = run_async(_response_ids(database_url, form_id))
    files = run_async(_files(database_url, form_id))
    # The photo is the response's; the removed PDF stays pending until it is swept.
    assert ("card", "image/jpeg", response_id) in files
    assert ("referral", "application/pdf", None) in files
    assert len(files) == 2


def test_send_pressed_while_the_photo_uploads_waits_for_it(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    form_id, public_id = publish_form(database_url, admin.organization_id, "Card", FIELDS)
    watch = Watch()
    context = new_context(browser, watch, **PHONE)
    page = context.new_page()
    page.goto(f"{server.base_url}/f/{public_id}")
    page.get_by_label("Full name").fill("Ada Lovelace")

    # The upload answers slowly: Send is pressed while it is still under way.
    def slowly(route: Route) -> None:
        page.wait_for_timeout(800)
        route.continue_()

    page.route("**/files", slowly)
    choose(page, "card", "my-card.jpg", "image/jpeg", photo_with_gps())
    expect(page.locator("#q-card-list [data-uploading]")).to_have_count(1)
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#confirmation")).to_be_visible()
    context.close()
    assert watch.unexpected() == []
    (response_id,) = run_async(_response_ids(database_url, form_id))
    assert run_async(_files(database_url, form_id)) == [("card", "image/jpeg", response_id)]
