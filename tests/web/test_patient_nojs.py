"""The patient page without JavaScript (issue 15, item 10), on a phone in real Chromium:
every field type filled in and sent as a plain HTML form, a refused answer shown next to
its field in the server's words with the other answers kept, then the confirmation."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from healthforms.db.engine import Database
from healthforms.patient_requests.service import new_token
from healthforms.uploads.models import Upload
from tests.patient_requests.test_concurrency import _insert_request as insert_request
from tests.support.servers import ServerProcess
from tests.uploads.helpers import pdf_document, photo_with_gps
from tests.web.browser import Watch, check_page, new_context
from tests.web.seed import ALL_TYPES_FIELDS, create_users, publish_form, run_async
from tests.web.test_public_pages import PHONE
from tests.web.test_upload_pages import choose

pytestmark = pytest.mark.browser


def api_message(server: ServerProcess, public_id: str, answers: dict[str, Any], key: str) -> str:
    """The message the JSON API's 422 gives for `key` with these answers."""
    base = f"{server.base_url}/api/public/forms/{public_id}"
    nonce = httpx.get(base, timeout=10).json()["nonce"]
    reply = httpx.post(f"{base}/responses", json={"nonce": nonce, "answers": answers}, timeout=10)
    assert reply.status_code == 422, reply.text
    message: str = reply.json()["fields"][key]
    return message


def check_as_served(browser: Browser, server: ServerProcess, page: Page, name: str) -> None:
    """check_page (labels, CSP, no sideways scroll, axe-core) on this page's HTML as
    served, in a context that runs the checks but where the page's own scripts fail to
    load (axe-core cannot run where JavaScript is off)."""
    html, url = page.content(), page.url.split("#", 1)[0]
    csp = httpx.get(f"{server.base_url}/login", timeout=10).headers["content-security-policy"]
    watch = Watch()
    context = new_context(browser, watch, **PHONE)
    context.route("**/static/js/**", lambda route: route.abort())
    context.route(
        url,
        lambda route: route.fulfill(
            status=200,
            body=html,
            headers={"content-type": "text/html", "content-security-policy": csp},
        ),
    )
    replay = context.new_page()
    replay.goto(url)
    check_page(replay, name)
    context.close()


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def test_without_javascript_every_field_type_sends_and_errors_come_back_in_place(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    _, public_id = publish_form(
        database_url, admin.organization_id, "New patient intake", ALL_TYPES_FIELDS
    )
    watch = Watch()
    context = new_context(browser, watch, java_script_enabled=False, **PHONE)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    page.goto(f"{server.base_url}/f/{public_id}")
    expect(page.get_by_role("heading", name="New patient intake")).to_be_visible()
    # No "this page needs JavaScript" notice; every field shows (conditions need a
    # script; the server ignores answers of fields whose condition does not hold).
    expect(page.get_by_text("needs JavaScript")).to_have_count(0)
    expect(page.locator("#q-other_reason-wrap")).to_be_visible()
    # The pad cannot draw without a script: the patient signs by typing their name.
    expect(page.locator(".sigpad-canvas")).to_be_hidden()
    check_as_served(browser, server, page, "patient-form-nojs")

    page.locator("#q-full_name").fill("Pat Patient")
    page.locator("#q-history").fill("Asthma\nKnee surgery in 2019")
    page.locator("#q-email").fill("pat@example")  # no dot in the domain: refused
    page.locator("#q-phone").fill("+1 555 010 2030")
    page.locator("#q-age").fill("42")
    page.locator("#q-dob").fill("1983-07-14")
    page.locator("#q-visit").select_option("Check-up")
    page.get_by_label("No").check()
    page.get_by_label("Latex").check()
    page.get_by_label("Nuts").check()
    page.get_by_label("I consent to treatment").check()
    page.get_by_label("Or type your full name to sign").fill("Pat Patient")
    page.get_by_role("button", name="Send").click()

    # The server's 422, as a page: the error next to its field, in the API's words.
    expected = sentence(
        api_message(server, public_id, {"email": "pat@example"}, "email")  # same answer
    )
    assert expected == "Must be an email address"
    expect(page.locator("#q-email-error")).to_have_text(expected)
    expect(page.locator("#q-email")).to_have_attribute("aria-invalid", "true")
    summary = page.locator("#error-summary")
    expect(summary).to_be_visible()
    expect(summary).to_have_attribute("role", "alert")
    expect(summary).to_contain_text("Email: must be an email address")
    # Everything else kept in its control.
    expect(page.locator("#q-full_name")).to_have_value("Pat Patient")
    expect(page.locator("#q-history")).to_have_value("Asthma\nKnee surgery in 2019")
    expect(page.locator("#q-email")).to_have_value("pat@example")
    expect(page.locator("#q-phone")).to_have_value("+1 555 010 2030")
    expect(page.locator("#q-age")).to_have_value("42")
    expect(page.locator("#q-dob")).to_have_value("1983-07-14")
    expect(page.locator("#q-visit")).to_have_value("Check-up")
    expect(page.get_by_label("No")).to_be_checked()
    expect(page.get_by_label("Latex")).to_be_checked()
    expect(page.get_by_label("Nuts")).to_be_checked()
    expect(page.get_by_label("Penicillin")).not_to_be_checked()
    expect(page.get_by_label("I consent to treatment")).to_be_checked()
    expect(page.get_by_label("Or type your full name to sign")).to_have_value("Pat Patient")
    for other in ("full_name", "age", "signature"):
        expect(page.locator(f"#q-{other}-error")).to_be_hidden()
    check_as_served(browser, server, page, "patient-form-nojs-errors")
    # The summary's link leads to the field.
    summary.get_by_role("link", name="Email: must be an email address").click()
    assert page.url.endswith("#q-email-wrap")

    page.locator("#q-email").fill("pat@example.org")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("heading", name="Thank you, your form was sent")).to_be_visible()
    code = page.locator("#confirmation-code").inner_text()
    assert len(code) == 10 and code.isalnum()
    assert public_id in page.url and "?" not in page.url  # no answer in any URL
    check_as_served(browser, server, page, "patient-form-nojs-sent")
    # Plain form posts to the page's own address: no request to the JSON API at all.
    assert [r for r in requests if "/api/" in r] == []
    assert [r.split(" ")[0] for r in requests if f"/f/{public_id}" in r] == [
        "GET",
        "POST",
        "POST",
    ]
    context.close()
    assert watch.unexpected(422) == []


def test_without_javascript_a_request_link_sends_once_then_is_closed(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    fields: list[dict[str, Any]] = [
        {"id": "reason", "type": "textarea", "label": "Reason for visit", "required": True},
        {"id": "consent", "type": "checkbox", "label": "I consent to treatment", "required": True},
    ]
    form_id, _ = publish_form(database_url, admin.organization_id, "Before your visit", fields)
    token = new_token()
    run_async(insert_request(database_url, form_id, token))
    watch = Watch()
    context = new_context(browser, watch, java_script_enabled=False, **PHONE)
    page = context.new_page()
    page.goto(f"{server.base_url}/r/{token}")
    expect(page.get_by_role("heading", name="Before your visit")).to_be_visible()
    page.get_by_label("Reason for visit").fill("Check-up")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#q-consent-error")).to_have_text("Is required")
    expect(page.get_by_label("Reason for visit")).to_have_value("Check-up")
    check_as_served(browser, server, page, "request-form-nojs-errors")
    page.get_by_label("I consent to treatment").check()
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("heading", name="Thank you, your form was sent")).to_be_visible()
    # The link worked once: opening it again says it cannot be used.
    response = page.goto(f"{server.base_url}/r/{token}")
    assert response is not None and response.status == 410
    expect(page.get_by_role("heading", name="This link cannot be used")).to_be_visible()
    context.close()
    assert watch.unexpected(410, 422) == []


PHOTO_FIELDS: list[dict[str, Any]] = [
    {"id": "full_name", "type": "text", "label": "Full name", "required": True},
    {
        "id": "card",
        "type": "file",
        "label": "Insurance card",
        "required": True,
        "accept": ["image"],
    },
    {"id": "referral", "type": "file", "label": "Referral letter", "maxFiles": 2},
]


async def _uploads(database_url: str, form_id: str) -> list[tuple[str, str, str | None]]:
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


def test_without_javascript_a_required_photo_is_sent_and_attached(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    form_id, public_id = publish_form(database_url, admin.organization_id, "Card", PHOTO_FIELDS)
    watch = Watch()
    context = new_context(browser, watch, java_script_enabled=False, **PHONE)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    page.goto(f"{server.base_url}/f/{public_id}")
    expect(page.locator("#patient-form")).to_have_attribute("enctype", "multipart/form-data")
    check_as_served(browser, server, page, "patient-form-nojs-files")

    # A PDF dressed as a photo, a letter, and no name: refused in place, the letter kept.
    choose(page, "card", "card.jpg", "image/jpeg", pdf_document())
    choose(page, "referral", "letter.pdf", "application/pdf", pdf_document(pages=2))
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#q-card-error")).to_have_text("Must be a photo (JPEG, PNG or WebP)")
    expect(page.locator("#q-card")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#q-full_name-error")).to_have_text("Is required")
    expect(page.locator("#error-summary")).to_contain_text(
        "Insurance card: must be a photo (JPEG, PNG or WebP)"
    )
    keep = page.get_by_label(re.compile(r"^Keep the PDF document you added \(\d+ KB\)$"))
    expect(keep).to_be_checked()
    check_as_served(browser, server, page, "patient-form-nojs-file-refused")

    page.locator("#q-full_name").fill("Pat Patient")
    choose(page, "card", "card.jpg", "image/jpeg", photo_with_gps())
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("heading", name="Thank you, your form was sent")).to_be_visible()
    context.close()
    assert [r for r in requests if "/api/" in r] == []
    assert watch.unexpected(422) == []

    files = run_async(_uploads(database_url, form_id))
    assert [(f, m) for f, m, _ in files] == [
        ("card", "image/jpeg"),
        ("referral", "application/pdf"),
    ]
    response_ids = {r for _, _, r in files}
    assert len(response_ids) == 1 and None not in response_ids
