"""The page's own checks say what the server says (issue 15, item 1), per field type and
option combination, on a phone in real Chromium: an invalid answer is refused before
anything is sent, with the message the JSON API's 422 gives for the same answer; the
message goes as soon as the answer is fixed; the fixed answer is accepted and stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.seed import create_users, publish_form
from tests.web.test_public_pages import PHONE

pytestmark = pytest.mark.browser

Fill = Callable[[Page], None]


def typed(text: str) -> Fill:
    return lambda page: page.locator("#q-f").fill(text)


def keys(text: str) -> Fill:
    """Typed key by key: a number input takes "1e" though it cannot read it."""

    def fill(page: Page) -> None:
        page.locator("#q-f").fill("")
        page.locator("#q-f").press_sequentially(text)

    return fill


def nothing(page: Page) -> None:
    pass


def choose(label: str) -> Fill:
    return lambda page: page.get_by_label(label, exact=True).check()


def select(option: str) -> Fill:
    def fill(page: Page) -> None:
        page.locator("#q-f").select_option(option)

    return fill


def sign(page: Page) -> None:
    page.get_by_label("Or type your full name to sign").fill("Pat Patient")


@dataclass(frozen=True)
class Case:
    name: str
    field: dict[str, Any]
    invalid: Fill  # what the patient does to give the refused answer
    sent: Any  # the same answer as the page's script would send it to the API
    valid: Fill


CASES = [
    Case("text-required", {"type": "text", "required": True}, nothing, None, typed("Ada")),
    Case("text-max", {"type": "text", "max": 5}, typed("abcdefg"), "abcdefg", typed("abc")),
    Case("text-min", {"type": "text", "min": 3}, typed("ab"), "ab", typed("abc")),
    Case(
        "text-pattern",
        {"type": "text", "pattern": "[A-Z]{3}-[0-9]{2}"},
        typed("abc-12"),
        "abc-12",
        typed("ABC-12"),
    ),
    Case(
        "text-pattern-anchored",
        {"type": "text", "pattern": "^[0-9]{5}$"},
        typed("1234"),
        "1234",
        typed("12345"),
    ),
    Case(
        "textarea-required-spaces",
        {"type": "textarea", "required": True},
        typed("   "),
        "   ",
        typed("Asthma"),
    ),
    Case("textarea-max", {"type": "textarea", "max": 10}, typed("x" * 11), "x" * 11, typed("x")),
    Case(
        "textarea-min-pattern",
        {"type": "textarea", "min": 2, "pattern": "[a-z ]+"},
        typed("ab1"),
        "ab1",
        typed("ab c"),
    ),
    Case("email", {"type": "email"}, typed("pat@example"), "pat@example", typed("p@x.org")),
    Case("email-required", {"type": "email", "required": True}, nothing, None, typed("p@x.org")),
    Case(
        "email-pattern",
        {"type": "email", "pattern": ".*@clinic\\.example"},
        typed("pat@example.org"),
        "pat@example.org",
        typed("pat@clinic.example"),
    ),
    Case("phone-letters", {"type": "phone"}, typed("abc"), "abc", typed("+1 555 010 2030")),
    Case("phone-short", {"type": "phone"}, typed("12-34"), "12-34", typed("555 0102")),
    Case(
        "phone-too-many-digits",
        {"type": "phone"},
        typed("1234567890123456"),
        "1234567890123456",
        typed("123456789012345"),
    ),
    Case(
        "phone-pattern",
        {"type": "phone", "pattern": "\\+1.*"},
        typed("555 010 2030"),
        "555 010 2030",
        typed("+1 555 010 2030"),
    ),
    Case("number-unreadable", {"type": "number"}, keys("1e"), "1e", typed("42")),
    Case("number-no-bounds-large", {"type": "number"}, typed("1e16"), 1e16, typed("1e6")),
    Case("number-min", {"type": "number", "min": 0}, typed("-1"), -1, typed("0")),
    Case("number-max", {"type": "number", "max": 130}, typed("131"), 131, typed("130")),
    Case(
        "number-decimal-bounds",
        {"type": "number", "min": 0.5, "max": 1234567},
        typed("0.25"),
        0.25,
        typed("1234567"),
    ),
    Case("number-required", {"type": "number", "required": True}, nothing, None, typed("-3.5")),
    Case("date-required", {"type": "date", "required": True}, nothing, None, typed("1980-02-29")),
    Case(
        "select-required",
        {"type": "select", "required": True, "options": ["A", "B"]},
        nothing,
        None,
        select("B"),
    ),
    Case(
        "radio-required",
        {"type": "radio", "required": True, "options": ["Yes", "No"]},
        nothing,
        None,
        choose("No"),
    ),
    Case(
        "checkbox-consent-required",
        {"type": "checkbox", "required": True},
        nothing,
        False,
        lambda page: page.locator("#q-f").check(),
    ),
    Case(
        "checkbox-options-required",
        {"type": "checkbox", "required": True, "options": ["Nuts", "Latex"]},
        nothing,
        [],
        choose("Latex"),
    ),
    Case("signature-required", {"type": "signature", "required": True}, nothing, None, sign),
]


def api_message(server: ServerProcess, public_id: str, sent: Any) -> str:
    """The JSON API's 422 message for field `f` answered with `sent` (None: no answer)."""
    base = f"{server.base_url}/api/public/forms/{public_id}"
    nonce = httpx.get(base, timeout=10).json()["nonce"]
    answers = {} if sent is None else {"f": sent}
    reply = httpx.post(f"{base}/responses", json={"nonce": nonce, "answers": answers}, timeout=10)
    assert reply.status_code == 422, reply.text
    message: str = reply.json()["fields"]["f"]
    return message


@pytest.fixture(scope="module")
def organization_id(database_url: str, server: ServerProcess) -> str:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    return admin.organization_id


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_page_refuses_what_the_server_refuses_in_its_words(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    organization_id: str,
    case: Case,
) -> None:
    fields = [{"id": "f", "label": "The question", **case.field}]
    _, public_id = publish_form(database_url, organization_id, "Check", fields)
    expected = api_message(server, public_id, case.sent)
    shown = expected[:1].upper() + expected[1:]

    watch = Watch()
    context = new_context(browser, watch, **PHONE)
    page = context.new_page()
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(f"{server.base_url}/f/{public_id}")
    case.invalid(page)
    page.get_by_role("button", name="Send").click()
    error = page.locator("#q-f-error")
    expect(error).to_have_text(shown)
    expect(page.locator("#error-summary")).to_contain_text(f"The question: {expected}")
    assert posts == []  # refused by the page itself: nothing was sent
    if case.name == "text-pattern":
        check_page(page, "patient-form-client-check")

    # Fixing the answer takes the message away at once (no second Send needed) ...
    case.valid(page)
    expect(error).to_be_hidden()
    expect(page.locator("#error-summary")).to_be_hidden()
    for control in page.locator("#q-f-wrap input:not([type=hidden]), #q-f-wrap textarea").all():
        expect(control).not_to_have_attribute("aria-invalid", "true")
    # ... and the server takes the answer.
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#confirmation-code")).to_be_visible()
    context.close()
    assert watch.unexpected() == []


def test_an_optional_field_left_empty_is_sent(
    browser: Browser, server: ServerProcess, database_url: str, organization_id: str
) -> None:
    fields: list[dict[str, Any]] = [
        {"id": "t", "type": "text", "label": "Text", "min": 3, "pattern": "[0-9]+"},
        {"id": "e", "type": "email", "label": "Email"},
        {"id": "p", "type": "phone", "label": "Phone"},
        {"id": "n", "type": "number", "label": "Number", "min": 1},
        {"id": "d", "type": "date", "label": "Date"},
        {"id": "s", "type": "select", "label": "Select", "options": ["A"]},
        {"id": "r", "type": "radio", "label": "Radio", "options": ["A"]},
        {"id": "c", "type": "checkbox", "label": "Consent"},
        {"id": "m", "type": "checkbox", "label": "Many", "options": ["A"]},
        {"id": "g", "type": "signature", "label": "Signature"},
    ]
    _, public_id = publish_form(database_url, organization_id, "All optional", fields)
    watch = Watch()
    context = new_context(browser, watch, **PHONE)
    page = context.new_page()
    page.goto(f"{server.base_url}/f/{public_id}")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#confirmation-code")).to_be_visible()
    context.close()
    assert watch.unexpected() == []
