"""Pages, layout blocks and all/any conditions on a patient's phone, and Back after
confirmation on a shared tablet (issue 15 items 2 and 3; real Chromium)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import mailbox  # noqa: F401 - the server fixture's SMTP
from tests.web.seed import create_users, publish_form
from tests.web.test_export_pages import sign_in

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}

CONSENT_TEXT = (
    "I agree to be treated by the clinic.\n\n"
    "I understand I may withdraw this consent at any time by telling the front desk."
)

PAGED_FIELDS: list[dict[str, Any]] = [
    {"id": "about", "type": "pageBreak", "label": "About you"},
    {"id": "intro", "type": "heading", "label": "Smoking and allergies"},
    {
        "id": "smoker",
        "type": "radio",
        "label": "Do you smoke?",
        "options": ["Yes", "No"],
        "required": True,
    },
    {
        "id": "smoking",
        "type": "pageBreak",
        "label": "Smoking",
        "showWhen": {"field": "smoker", "equals": "Yes"},
    },
    {
        "id": "packs",
        "type": "number",
        "label": "Packs a day",
        "required": True,
        "min": 0,
        "max": 10,
    },
    {"id": "health", "type": "pageBreak", "label": "Health"},
    {"id": "allergy", "type": "checkbox", "label": "Allergies", "options": ["Nuts", "Dust"]},
    {
        "id": "detail",
        "type": "textarea",
        "label": "Tell us more",
        "required": True,
        "showWhen": {
            "any": [{"field": "allergy", "contains": "Nuts"}, {"field": "smoker", "equals": "Yes"}]
        },
    },
    {
        "id": "both",
        "type": "text",
        "label": "Both at once",
        "showWhen": {
            "all": [{"field": "allergy", "equals": "Nuts"}, {"field": "allergy", "equals": "Dust"}]
        },
    },
    {"id": "consentText", "type": "paragraph", "label": CONSENT_TEXT},
    {"id": "agree", "type": "checkbox", "label": "I agree", "required": True},
]


def progress(page: Page) -> str:
    return page.locator("#progress-text").inner_text()


def test_a_paged_form_with_any_and_all_conditions_on_a_phone(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    form_id, public_id = publish_form(database_url, admin.organization_id, "Intake", PAGED_FIELDS)
    watch = Watch()
    context = new_context(browser, watch, **PHONE)
    page = context.new_page()
    page.goto(f"{server.base_url}/f/{public_id}")
    # Page 1 of 2 while "Smoking" is skipped (no answer yet); the Send button waits.
    expect(page.locator("#progress-text")).to_have_text("Page 1 of 2")
    expect(page.get_by_role("heading", name="About you")).to_be_visible()
    expect(page.get_by_role("heading", name="Smoking and allergies")).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_hidden()
    expect(page.get_by_role("button", name="Back")).to_be_hidden()
    check_page(page, "pages-1")
    # Per-page checks: Next refuses an unanswered required question on this page only.
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#q-smoker-error")).to_have_text("Is required")
    expect(page.locator("#error-summary")).to_be_visible()
    expect(page.locator("#progress-text")).to_have_text("Page 1 of 2")
    page.get_by_label("Yes").check()
    expect(page.locator("#progress-text")).to_have_text("Page 1 of 3")
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#progress-text")).to_have_text("Page 2 of 3")
    expect(page.get_by_role("heading", name="Smoking")).to_be_focused()
    expect(page.locator("#error-summary")).to_be_hidden()
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#q-packs-error")).to_have_text("Is required")
    page.get_by_label("Packs a day").fill("2")
    page.get_by_label("Packs a day").press("Enter")  # Enter on an early page means Next
    expect(page.locator("#progress-text")).to_have_text("Page 3 of 3")
    # any: shown because the patient smokes; all: hidden until both boxes are ticked.
    expect(page.get_by_label("Tell us more")).to_be_visible()
    expect(page.get_by_label("Both at once")).to_be_hidden()
    page.get_by_label("Nuts").check()
    page.get_by_label("Dust").check()
    expect(page.get_by_label("Both at once")).to_be_visible()
    page.get_by_label("Dust").uncheck()
    expect(page.get_by_label("Both at once")).to_be_hidden()
    expect(page.get_by_text("I understand I may withdraw this consent")).to_be_visible()
    check_page(page, "pages-3")
    # Back keeps the answers, on the page and through the phone's Back button.
    page.get_by_role("button", name="Back").click()
    expect(page.locator("#progress-text")).to_have_text("Page 2 of 3")
    expect(page.get_by_label("Packs a day")).to_have_value("2")
    page.go_back()
    expect(page.locator("#progress-text")).to_have_text("Page 1 of 3")
    expect(page.get_by_label("Yes")).to_be_checked()
    # Answering No skips the Smoking page; its answer is then neither asked for nor sent.
    page.get_by_label("No").check()
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#progress-text")).to_have_text("Page 2 of 2")
    expect(page.get_by_role("heading", name="Health")).to_be_focused()
    page.get_by_label("Tell us more").fill("Peanuts, badly")
    # Send checks every shown page: the consent box is required.
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#q-agree-error")).to_have_text("Is required")
    page.get_by_label("I agree").check()
    page.get_by_role("button", name="Send").click()
    code = page.locator("#confirmation-code")
    expect(code).to_be_visible()
    confirmation = code.inner_text().strip()
    check_page(page, "pages-confirmation")

    # The next patient presses Back: "already sent" over an empty first page.
    page.go_back()
    expect(page.locator("#already-sent")).to_be_visible()
    expect(page.locator("#already-code")).to_have_text(confirmation)
    expect(page.locator("#progress-text")).to_have_text("Page 1 of 2")
    expect(page.get_by_label("No")).not_to_be_checked()
    expect(page.get_by_label("Tell us more")).to_have_value("")
    expect(page.get_by_label("I agree")).not_to_be_checked()
    # Reloading (the browser may refill forms it restores) shows no answer either.
    page.reload()
    expect(page.get_by_label("No")).not_to_be_checked()
    expect(page.get_by_label("Packs a day")).to_have_value("")
    context.close()
    assert watch.unexpected() == []

    # What was stored: the skipped page's answer is not, the shown ones are.
    staff = new_context(browser, watch)
    staff_page = staff.new_page()
    sign_in(staff_page, server.base_url, admin, "/forms")
    listed = staff.request.get(f"{server.base_url}/api/forms/{form_id}/responses").json()
    (row,) = listed["responses"]
    answers = staff.request.get(f"{server.base_url}/api/responses/{row['id']}").json()["answers"]
    assert answers == {
        "smoker": "No",
        "allergy": ["Nuts"],
        "detail": "Peanuts, badly",
        "agree": True,
    }
    staff_page.goto(f"{server.base_url}/responses/{row['id']}")
    expect(staff_page.locator(".answers-section", has_text="Health")).to_be_visible()
    check_page(staff_page, "pages-response")
    staff.close()
    assert watch.unexpected() == []


def test_the_patient_page_is_never_cached(server: ServerProcess, database_url: str) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    _, public_id = publish_form(database_url, admin.organization_id, "Intake", PAGED_FIELDS)
    page = httpx.get(f"{server.base_url}/f/{public_id}")
    assert page.status_code == 200
    assert "no-store" in page.headers["cache-control"]
    # Without JavaScript every page shows, in order, under its title.
    titles = re.findall(r'<h2 class="page-title"[^>]*>([^<]+)</h2>', page.text)
    assert titles == ["About you", "Smoking", "Health"]
