"""Save and continue later, in Chromium on a phone: half the form filled and saved, the
link opened on another device (a fresh browser context) with the answers back, the code
typed on a third, the form finished and sent; the draft is gone afterwards."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.support.servers import ServerProcess
from tests.support.smtp import SmtpServer
from tests.web.browser import Watch, check_page, new_context
from tests.web.seed import create_users, publish_form
from tests.web.test_public_pages import PHONE

pytestmark = pytest.mark.browser

FIELDS: list[dict[str, Any]] = [
    {"id": "full_name", "type": "text", "label": "Full name", "required": True},
    {"id": "dob", "type": "date", "label": "Date of birth", "required": True},
    {"id": "smoker", "type": "radio", "label": "Do you smoke?", "options": ["Yes", "No"]},
    {
        "id": "packs",
        "type": "number",
        "label": "Packs a day",
        "showWhen": {"field": "smoker", "equals": "Yes"},
    },
    {"id": "reason", "type": "textarea", "label": "Reason for visit", "required": True},
    {"id": "consent", "type": "checkbox", "label": "I consent to treatment", "required": True},
]
NAME = "Philippa Marchbanks-Oyelaran"


def test_save_on_one_phone_continue_on_another_send_and_the_draft_is_gone(
    browser: Browser, server: ServerProcess, database_url: str, mailbox: SmtpServer
) -> None:
    base = server.base_url
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    _, public_id = publish_form(database_url, admin.organization_id, "Before your visit", FIELDS)
    watch = Watch()

    first = new_context(browser, watch, **PHONE)
    page = first.new_page()
    page.goto(f"{base}/f/{public_id}")
    check_page(page, "draft-form-phone")
    page.get_by_label("Full name").fill(NAME)
    page.get_by_label("Yes").check()
    page.get_by_label("Packs a day").fill("2")
    # Keyboard only: the button is reached and pressed like any other.
    save = page.get_by_role("button", name="Save and continue later")
    save.focus()
    page.keyboard.press("Enter")
    saved = page.locator("#draft-saved")
    expect(saved).to_be_visible()
    expect(saved).to_be_focused()
    expect(page.get_by_role("region", name="Your answers are saved")).to_be_visible()
    link = page.get_by_label("Link to continue").input_value()
    match = re.fullmatch(rf"{re.escape(base)}/f/{public_id}#draft=([A-Za-z0-9_-]{{43}})", link)
    assert match, link
    token = match.group(1)
    code = page.locator("#draft-code").inner_text().strip()
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}", code), code
    expect(page.locator("#draft-expiry")).not_to_be_empty()
    page.get_by_role("button", name="Copy link").click()
    expect(page.locator("#draft-copy-status")).not_to_be_empty()
    # The service sends mail: the link can be emailed (errors announced beside the input).
    page.get_by_role("button", name="Email the link").click()
    expect(page.locator("#draft-email-error")).to_have_text("Enter your email address.")
    page.get_by_label("Email me the link (optional)").fill("philippa@example.org")
    page.get_by_role("button", name="Email the link").click()
    expect(page.locator("#draft-copy-status")).to_have_text("The link is on its way to your inbox.")
    check_page(page, "draft-saved-phone")
    # Saving again from the same page: the same draft, the same link and code.
    page.get_by_role("button", name="Back to the form").click()
    expect(save).to_be_focused()
    page.get_by_label("Packs a day").fill("3")
    save.click()
    expect(saved).to_be_focused()
    assert page.get_by_label("Link to continue").input_value() == link
    expect(page.locator("#draft-code")).to_have_text(code)

    # A third device types the code (as people type it) and gets the answers too.
    third = new_context(browser, watch, **PHONE)
    typed = third.new_page()
    typed.goto(f"{base}/f/{public_id}")
    typed.get_by_text("Continue a saved form").click()
    box = typed.get_by_label("Code from your saved form")
    box.fill("0000000000" if code.replace("-", "") != "0000000000" else "1111111111")
    typed.get_by_role("button", name="Continue", exact=True).click()
    error = typed.locator("#draft-code-error")
    expect(error).to_have_text("No saved form matches this code. Check the code and try again.")
    expect(box).to_have_attribute("aria-invalid", "true")
    check_page(typed, "draft-code-wrong")
    box.fill(code.lower().replace("-", " "))
    typed.get_by_role("button", name="Continue", exact=True).click()
    expect(typed.get_by_label("Full name")).to_have_value(NAME)
    expect(typed.get_by_label("Packs a day")).to_have_value("3")
    expect(typed.locator("#draft-resumed")).to_be_visible()
    third.close()

    # Another device: a fresh browser context opens the link.
    second = new_context(browser, watch, **PHONE)
    other = second.new_page()
    other.goto(link)
    expect(other.get_by_label("Full name")).to_have_value(NAME)
    expect(other.get_by_label("Yes")).to_be_checked()
    expect(other.get_by_label("Packs a day")).to_have_value("3")
    expect(other.locator("#draft-resumed")).to_contain_text("Your saved answers are filled in")
    assert "#draft=" not in other.url  # the token left the address bar
    check_page(other, "draft-resumed-phone")
    other.get_by_label("Date of birth").fill("1979-11-23")
    other.get_by_label("Reason for visit").fill("Persistent cough")
    other.get_by_label("I consent to treatment").check()
    other.get_by_role("button", name="Send").click()
    expect(other.locator("#confirmation")).to_be_visible()
    second.close()

    mail = next(m for m in mailbox.wait_for(1) if m.recipients == ["philippa@example.org"])
    assert f"/f/{public_id}#draft={token}" in mail.text
    assert NAME not in mail.text and "Before your visit" not in mail.text

    gone = httpx.get(f"{base}/api/public/drafts/{token}", timeout=10)
    assert gone.status_code == 404, gone.text
    # The first phone's saved link now says so, instead of an empty form pretending.
    page.goto(link)
    expect(page.locator("#draft-resume-failed")).to_contain_text("No saved form was found")
    check_page(page)
    first.close()
    assert watch.unexpected(404) == []
