"""The builder for real forms (issue 15 items 3 and 11; real Chromium): a 40-field form
collapsed to one line per field, reordered by drag and by keyboard, conditions picked
from the other question's options with all/any, a condition that can never hold refused,
short keys, and a preview that reacts exactly like the patient page."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import mailbox  # noqa: F401 - the server fixture's SMTP
from tests.web.seed import create_users, publish_form
from tests.web.test_export_pages import sign_in

pytestmark = pytest.mark.browser

DESKTOP = {"viewport": {"width": 1280, "height": 900}}


def forty_fields() -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = [
        {"id": "smoker", "type": "radio", "label": "Do you smoke?", "options": ["Yes", "No"]},
        {"id": "allergy", "type": "checkbox", "label": "Allergies", "options": ["Nuts", "Dust"]},
        {"id": "intro", "type": "heading", "label": "More about you"},
    ]
    fields += [{"id": f"q{n}", "type": "text", "label": f"Question {n}"} for n in range(1, 38)]
    return fields


def card(page: Page, n: int) -> Any:
    return page.locator(".field-card").nth(n)


def test_a_forty_field_form_is_usable_in_the_builder(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    form_id, _ = publish_form(database_url, admin.organization_id, "Long intake", forty_fields())
    watch = Watch()
    context = new_context(browser, watch, **DESKTOP)
    page = context.new_page()
    sign_in(page, server.base_url, admin, "/forms")
    page.goto(f"{server.base_url}/forms/{form_id}")
    expect(page.locator("#save-btn")).to_be_visible()
    # Forty cards, each one line: the editing controls are folded away.
    expect(page.locator(".field-card")).to_have_count(40)
    expect(page.locator(".field-card-grid:visible")).to_have_count(0)
    expect(card(page, 0)).to_contain_text("Do you smoke?")
    expect(card(page, 2)).to_contain_text("Heading")
    first_box, last_box = card(page, 0).bounding_box(), card(page, 39).bounding_box()
    assert first_box and last_box and first_box["height"] < 80
    check_page(page, "builder-40-collapsed", full_page=False)

    # Keyboard: expand one card, move it up, fold it again.
    toggle = page.get_by_role("button", name="Expand Question 1", exact=True)
    toggle.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Collapse Question 1", exact=True)).to_have_attribute(
        "aria-expanded", "true"
    )
    expect(card(page, 3).get_by_label("Question", exact=True)).to_have_value("Question 1")
    page.get_by_role("button", name="Move Question 1 up").click()
    expect(card(page, 2).locator(".card-title")).to_have_text("Question 1")
    expect(card(page, 3).locator(".card-title")).to_have_text("More about you")
    # Drag: Question 5 (card 7) dropped on the first card goes first.
    # (A tall window: a drag cannot scroll the page, so both cards must be on screen.)
    page.set_viewport_size({"width": 1280, "height": 2400})
    card(page, 7).locator(".drag-handle").drag_to(card(page, 0))
    expect(card(page, 0).locator(".card-title")).to_have_text("Question 5")
    expect(page.locator("#preview .q").first).to_contain_text("Question 5")
    # And back below the radio it will depend on.
    card(page, 0).locator(".drag-handle").drag_to(card(page, 3))
    expect(card(page, 3).locator(".card-title")).to_have_text("Question 5")
    page.set_viewport_size({"width": 1280, "height": 900})

    # A condition picked, not typed: any of (smoker is Yes, allergies include Nuts).
    page.get_by_role("button", name="Expand Question 5", exact=True).click()
    target = card(page, 3)
    target.get_by_label("Show", exact=True).select_option("any")
    target.locator('select[id$="-sw-field-0"]').select_option("smoker")
    values = target.locator('select[id$="-sw-value-0"] option')
    expect(values).to_have_text(["Choose an option…", "Yes", "No"])
    target.locator('select[id$="-sw-value-0"]').select_option("Yes")
    target.get_by_role("button", name="Add condition").click()
    expect(target.locator('select[id$="-sw-field-1"]')).to_be_focused()
    target.locator('select[id$="-sw-field-1"]').select_option("allergy")
    expect(target.locator('select[id$="-sw-op-1"] option')).to_have_text(
        ["includes", "does not include"]
    )
    target.locator('select[id$="-sw-value-1"]').select_option("Nuts")
    # Headings are not offered as something to test.
    assert "intro" not in target.locator('select[id$="-sw-field-0"] option').evaluate_all(
        "(os) => os.map((o) => o.value)"
    )
    check_page(page, "builder-conditions", full_page=False)
    target.screenshot(path="artifacts/screenshots/builder-condition-card.png")

    # The preview reacts like the patient page.
    preview_q5 = page.locator("#p-q5-wrap")
    expect(preview_q5).to_be_hidden()
    page.locator("#preview").get_by_label("Nuts").check()
    expect(preview_q5).to_be_visible()
    page.locator("#preview").get_by_label("Nuts").uncheck()
    expect(preview_q5).to_be_hidden()
    page.locator("#preview").get_by_label("Yes").check()
    expect(preview_q5).to_be_visible()

    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    saved = context.request.get(f"{server.base_url}/api/forms/{form_id}").json()
    q5 = next(f for f in saved["fields"] if f["id"] == "q5")
    assert q5["showWhen"] == {
        "any": [{"field": "smoker", "equals": "Yes"}, {"field": "allergy", "contains": "Nuts"}]
    }
    assert [f["id"] for f in saved["fields"]][:5] == ["smoker", "allergy", "q1", "q5", "intro"]

    # A condition that can never hold is refused before it is sent, on its card.
    target.get_by_label("Show", exact=True).select_option("all")
    target.locator('select[id$="-sw-field-1"]').select_option("smoker")
    target.locator('select[id$="-sw-value-1"]').select_option("No")
    page.get_by_role("button", name="Save").click()
    expect(target.locator('[id$="-sw-mode-error"]')).to_contain_text("can never all hold")
    assert (
        context.request.get(f"{server.base_url}/api/forms/{form_id}").json()["revision"]
        == (saved["revision"])
    )

    # Short keys from long labels, fixed once saved.
    target.get_by_role("button", name="Remove condition 2").click()
    page.get_by_label("Add a field").select_option("text")
    page.get_by_role("button", name="Add field").click()
    new = page.locator(".field-card").last
    new.get_by_label("Question", exact=True).fill(
        "What medications are you currently taking every day?"
    )
    expect(new.get_by_label("Field key")).to_have_value("what_medications_are_you")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    new.get_by_label("Question", exact=True).fill("Medications")
    expect(new.get_by_label("Field key")).to_have_value("what_medications_are_you")

    # Blocks: a page break and a paragraph are added like questions.
    page.get_by_label("Add a field").select_option("pageBreak")
    page.get_by_role("button", name="Add field").click()
    page.locator(".field-card").last.get_by_label("Page title").fill("Consent")
    page.get_by_label("Add a field").select_option("paragraph")
    page.get_by_role("button", name="Add field").click()
    page.locator(".field-card").last.get_by_label("Text", exact=True).fill(
        "I agree to be treated.\nI may withdraw at any time."
    )
    expect(page.locator("#preview .page-title").last).to_have_text("Consent")
    expect(page.locator("#preview .block-text").last).to_contain_text("withdraw")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    saved = context.request.get(f"{server.base_url}/api/forms/{form_id}").json()
    assert [f["type"] for f in saved["fields"]][-2:] == ["pageBreak", "paragraph"]
    assert saved["fields"][-2] == {"id": "consent", "type": "pageBreak", "label": "Consent"}
    page.get_by_role("button", name="Collapse all").click()
    expect(page.locator(".field-card-grid:visible")).to_have_count(0)
    check_page(page)
    context.close()
    assert watch.unexpected() == []
