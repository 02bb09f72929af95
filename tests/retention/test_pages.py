"""The pages in Chromium: an admin deletes a response only after typing its confirmation
code (a cancelled dialog deletes nothing), an editor is not offered the delete, and the
form editor sets the retention period (admins) or shows it (editors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import api_paths, browser, mailbox, require_api, server, web_prefix
from tests.web.seed import ALL_TYPES_FIELDS, create_response_row, create_users, publish_form
from tests.web.test_staff_flow import DESKTOP, sign_in

__all__ = ["api_paths", "browser", "mailbox", "server", "web_prefix"]

pytestmark = pytest.mark.browser


@pytest.fixture
def watch() -> Iterator[Watch]:
    yield Watch()


def get(context: BrowserContext, base: str, path: str) -> tuple[int, Any]:
    response = context.request.get(f"{base}{path}")
    return response.status, (response.json() if response.ok else None)


def test_admin_deletes_a_response_only_after_typing_its_code(
    browser: Browser, server: ServerProcess, database_url: str, watch: Watch
) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    form_id, _ = publish_form(database_url, admin.organization_id, "Intake", ALL_TYPES_FIELDS)
    doomed, kept = (create_response_row(database_url, form_id) for _ in range(2))
    base = server.base_url
    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, base, admin, next_path=f"/responses/{doomed}")
    code = get(ctx, base, f"/api/responses/{doomed}")[1]["confirmation"]

    open_button = page.get_by_role("button", name="Delete response")
    expect(open_button).to_be_visible()
    dialog = page.get_by_role("dialog", name="Delete this response for good?")
    expect(dialog).to_be_hidden()

    # Cancelled: nothing is deleted.
    open_button.click()
    expect(dialog).to_be_visible()
    confirm = dialog.get_by_role("button", name="Delete for good")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Confirmation code").fill("NOT" + code)
    expect(confirm).to_be_disabled()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert get(ctx, base, f"/api/responses/{doomed}")[0] == 200

    # Escape closes it too, and reopening starts from an empty code.
    open_button.click()
    expect(dialog.get_by_label("Confirmation code")).to_have_value("")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert get(ctx, base, f"/api/responses/{doomed}")[0] == 200

    # Typed as read out over the phone (lower case, a space): the delete goes through.
    open_button.click()
    dialog.get_by_label("Confirmation code").fill(f"{code[:4].lower()} {code[4:]}")
    expect(confirm).to_be_enabled()
    check_page(page, "response-delete-dialog")
    confirm.click()
    page.wait_for_url(f"{base}/forms/{form_id}/responses")
    expect(page.locator("#responses-table tbody tr")).to_have_count(1)
    assert get(ctx, base, f"/api/responses/{doomed}")[0] == 404
    assert get(ctx, base, f"/api/responses/{kept}")[0] == 200
    events = get(ctx, base, "/api/audit?action=response.deleted&limit=50")[1]["events"]
    (event,) = [e for e in events if e["resourceId"] == doomed]
    assert event["actorId"] == admin.id
    ctx.close()
    assert watch.unexpected() == []


def test_an_editor_is_not_offered_the_delete(
    browser: Browser, server: ServerProcess, database_url: str, watch: Watch
) -> None:
    (editor,) = create_users(database_url, [("Eddie Editor", "editor")])
    form_id, _ = publish_form(database_url, editor.organization_id, "Intake", ALL_TYPES_FIELDS)
    response_id = create_response_row(database_url, form_id)
    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, server.base_url, editor, next_path=f"/responses/{response_id}")
    expect(page.get_by_role("button", name="Mark reviewed")).to_be_visible()
    expect(page.get_by_role("button", name="Delete response")).to_have_count(0)
    expect(page.locator("#delete-dialog")).to_have_count(0)
    check_page(page)
    ctx.close()
    assert watch.unexpected() == []


def test_the_form_editor_sets_the_retention_period_for_admins_only(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, "/api/forms/{id}", "/api/forms/{id}/lock")
    admin, editor = create_users(database_url, [("Ada Admin", "admin"), ("Eddie Editor", "editor")])
    form_id, _ = publish_form(database_url, admin.organization_id, "Consent", ALL_TYPES_FIELDS)
    base = server.base_url

    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, base, admin, next_path=f"/forms/{form_id}")
    retention = page.get_by_label("Keep responses for (days)")
    expect(retention).to_be_enabled()
    expect(retention).to_have_value("")
    expect(page.locator("#form-retention-help")).to_contain_text("state's medical-records law")
    retention.fill("0")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("Keep responses for")
    assert get(ctx, base, f"/api/forms/{form_id}")[1]["retentionDays"] is None
    retention.fill("2190")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    assert get(ctx, base, f"/api/forms/{form_id}")[1]["retentionDays"] == 2190
    check_page(page, "builder-retention")
    page.goto(f"{base}/forms")  # leaving releases the edit lock (a keepalive DELETE)

    editor_ctx = new_context(browser, watch, **DESKTOP)
    page = editor_ctx.new_page()
    sign_in(page, base, editor, next_path=f"/forms/{form_id}")
    for _ in range(20):  # until the admin's release has landed and the editor holds it
        page.wait_for_function(
            "() => !document.getElementById('save-btn').hidden"
            " || !document.getElementById('lock-banner').hidden"
        )
        if page.locator("#save-btn").is_visible():
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(page.locator("#save-btn")).to_be_visible()
    retention = page.get_by_label("Keep responses for (days)")
    expect(retention).to_have_value("2190")
    expect(retention).to_be_disabled()
    expect(page.locator("#form-retention-help")).to_contain_text("Only an admin can change it")
    page.get_by_label("Title").fill("Consent, edited")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    saved = get(editor_ctx, base, f"/api/forms/{form_id}")[1]
    assert (saved["title"], saved["retentionDays"]) == ("Consent, edited", 2190)
    ctx.close()
    editor_ctx.close()
    assert watch.unexpected(409) == []
