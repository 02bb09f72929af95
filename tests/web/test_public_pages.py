"""Pages that need no staff session: sign-in, the patient form, error pages (real Chromium)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from healthforms.web.pages import environment
from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import require_api
from tests.web.seed import ALL_TYPES_FIELDS, create_users, publish_form

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
NARROW = {"viewport": {"width": 320, "height": 640}}
PUBLIC_FORM_API = "/api/public/forms/{publicId}"


def test_login_page_is_clean_on_desktop_and_phone(browser: Browser, server: ServerProcess) -> None:
    watch = Watch()
    for name, options in (("login", {}), ("login-320", NARROW)):
        context = new_context(browser, watch, **options)
        page = context.new_page()
        page.goto(f"{server.base_url}/login?next=/forms")
        expect(page.get_by_label("Email")).to_be_visible()
        expect(page.get_by_label("Password")).to_be_visible()
        check_page(page, name)
        # Client-side hint before any request: the error is announced (role=alert).
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#login-error")).to_have_text("Enter your email and password.")
        expect(page.get_by_label("Email")).to_be_focused()
        # The code field appears only once the password was right (test_staff_flow.py).
        expect(page.get_by_label("Authenticator code")).to_be_hidden()
        expect(page.get_by_role("button", name="I have an authenticator code")).to_have_count(0)
        check_page(page)
        context.close()
    assert watch.unexpected() == []


def test_signed_out_staff_page_lands_on_login_with_next(
    browser: Browser, server: ServerProcess
) -> None:
    watch = Watch()
    context = new_context(browser, watch)
    page = context.new_page()
    page.goto(f"{server.base_url}/forms/new")
    assert page.url == f"{server.base_url}/login?next=/forms/new"
    check_page(page)
    context.close()
    assert watch.unexpected() == []


def test_friendly_404_pages(browser: Browser, server: ServerProcess) -> None:
    watch = Watch()
    context = new_context(browser, watch, **PHONE)
    page = context.new_page()
    response = page.goto(f"{server.base_url}/f/no-such-form")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.get_by_text("This form link is not valid.")).to_be_visible()
    check_page(page, "error-404-form")
    response = page.goto(f"{server.base_url}/nowhere")
    assert response is not None and response.status == 404
    check_page(page, "error-404")
    context.close()
    assert watch.unexpected(404) == []


@pytest.mark.parametrize(("status", "retry_after"), [(429, 7), (500, None)])
def test_error_pages_share_the_style(
    browser: Browser, server: ServerProcess, status: int, retry_after: int | None
) -> None:
    """The 429/500 templates, served through the page's own origin and CSP."""
    template = {429: "errors/429.html", 500: "errors/error.html"}[status]
    title = {429: "Too many requests", 500: "Something went wrong on our side"}[status]
    html = (
        environment()
        .get_template(template)
        .render(title=title, status=status, retry_after=retry_after, message=None)
    )
    watch = Watch()
    context = new_context(browser, watch, **NARROW)
    page = context.new_page()
    # Same CSP as the service: the page must render without inline code.
    csp = httpx_csp(server)
    page.route(
        f"{server.base_url}/demo-error",
        lambda route: route.fulfill(
            status=status,
            body=html,
            headers={"content-type": "text/html", "content-security-policy": csp},
        ),
    )
    page.goto(f"{server.base_url}/demo-error")
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    if retry_after:
        expect(page.get_by_text("7 seconds")).to_be_visible()
    check_page(page, f"error-{status}")
    context.close()
    assert watch.unexpected(status) == []


def httpx_csp(server: ServerProcess) -> str:
    import httpx

    return httpx.get(f"{server.base_url}/login").headers["content-security-policy"]


def test_patient_form_renders_accessibly_at_320_and_390(
    browser: Browser, server: ServerProcess, database_url: str, api_paths: set[str]
) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    _, public_id = publish_form(
        database_url, admin.organization_id, "New patient intake", ALL_TYPES_FIELDS
    )
    # Until the public API is merged, the page's nonce prefetch answers 404.
    allowed: tuple[int, ...] = () if "/api/public/forms/{}" in api_paths else (404,)
    watch = Watch()
    for name, options in (("patient-form-390", PHONE), ("patient-form-320", NARROW)):
        context = new_context(browser, watch, **options)
        page = context.new_page()
        page.goto(f"{server.base_url}/f/{public_id}")
        expect(page.get_by_role("heading", name="New patient intake")).to_be_visible()
        for label in ("Full name", "Email", "Phone", "Age", "Date of birth", "Reason for visit"):
            expect(page.get_by_label(label, exact=False).first).to_be_visible()
        # showWhen: hidden until the answer it depends on matches.
        other = page.locator("#q-other_reason-wrap")
        expect(other).to_be_hidden()
        page.get_by_label("Reason for visit").select_option("Other")
        expect(other).to_be_visible()
        page.get_by_label("Reason for visit").select_option("Check-up")
        expect(other).to_be_hidden()
        check_page(page, name)
        context.close()

    context = new_context(browser, watch, **PHONE)
    page = context.new_page()
    page.goto(f"{server.base_url}/f/{public_id}")
    # Client-side hints: required fields are flagged next to themselves and announced.
    page.get_by_role("button", name="Send").click()
    summary = page.locator("#error-summary")
    expect(summary).to_be_visible()
    expect(summary).to_have_attribute("role", "alert")
    expect(page.locator("#q-full_name-error")).to_have_text("Is required")
    expect(page.locator("#q-full_name")).to_have_attribute("aria-invalid", "true")
    described = page.locator("#q-full_name").get_attribute("aria-describedby") or ""
    assert "q-full_name-error" in described.split()
    check_page(page, "patient-form-errors")
    # Signature by touch-like pointer strokes (mouse here) and by typing a name.
    draw_signature(page, "signature")
    value = page.locator('input[type=hidden][name="signature"]').input_value()
    assert value.startswith("data:image/png;base64,")
    page.get_by_role("button", name="Clear signature").click()
    assert page.locator('input[type=hidden][name="signature"]').input_value() == ""
    page.get_by_label("Or type your full name to sign").fill("Pat Patient")
    typed = page.locator('input[type=hidden][name="signature"]').input_value()
    assert typed.startswith("data:image/png;base64,") and len(typed) < 256 * 1024
    context.close()
    assert watch.unexpected(*allowed) == []


def draw_signature(page: Any, field_id: str) -> None:
    canvas = page.locator(f'[data-signature-for="{field_id}"] canvas')
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    x, y = box["x"] + 20, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 25):
        page.mouse.move(x + step * 10, y + (12 if step % 2 else -12), steps=2)
    page.mouse.up()


def test_server_side_errors_appear_next_to_fields_and_keep_the_answers(
    browser: Browser, server: ServerProcess, database_url: str, api_paths: set[str]
) -> None:
    require_api(api_paths, PUBLIC_FORM_API, PUBLIC_FORM_API + "/responses")
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    fields = [
        {"id": "name", "type": "text", "label": "Name", "required": True},
        # A POSIX class is RE2 syntax JavaScript reads otherwise: the page leaves this
        # pattern to the server, which alone refuses the answer.
        {
            "id": "zip",
            "type": "text",
            "label": "ZIP code",
            "required": True,
            "pattern": "[[:digit:]]{5}",
        },
    ]
    _, public_id = publish_form(database_url, admin.organization_id, "Address check", fields)
    watch = Watch()
    context = new_context(browser, watch, **PHONE)
    page = context.new_page()
    page.goto(f"{server.base_url}/f/{public_id}")
    page.get_by_label("Name").fill("Pat Patient")
    page.get_by_label("ZIP code").fill("abc")
    page.get_by_role("button", name="Send").click()
    error = page.locator("#q-zip-error")
    expect(error).to_have_text("Does not have the expected format")
    expect(page.locator("#q-zip")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#error-summary")).to_contain_text("ZIP code")
    expect(page.get_by_label("Name")).to_have_value("Pat Patient")
    expect(page.get_by_label("ZIP code")).to_have_value("abc")
    check_page(page, "patient-form-server-errors")
    # The nonce survived the 422: correcting and resending stores the response.
    page.get_by_label("ZIP code").fill("12345")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#confirmation-code")).to_be_visible()
    context.close()
    assert watch.unexpected(422) == []


@pytest.mark.parametrize(
    ("bounds", "accepted", "refused", "message"),
    [
        ({}, "42", None, None),  # issue 15: no min/max used to refuse every positive answer
        ({"min": 0}, "130", "-1", "Must be at least 0"),
        ({"max": 130}, "0", "131", "Must be at most 130"),
        ({"min": 0, "max": 130}, "42", "200", "Must be at most 130"),
    ],
)
def test_a_number_field_checks_only_the_bounds_it_has(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    bounds: dict[str, int],
    accepted: str,
    refused: str | None,
    message: str | None,
) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    fields = [{"id": "age", "type": "number", "label": "Age", "required": True, **bounds}]
    _, public_id = publish_form(database_url, admin.organization_id, "Age check", fields)
    watch = Watch()
    context = new_context(browser, watch, **PHONE)
    page = context.new_page()
    page.goto(f"{server.base_url}/f/{public_id}")
    wrap = page.locator("#q-age-wrap")
    for bound in ("min", "max"):
        if bound in bounds:
            expect(wrap).to_have_attribute(f"data-{bound}", str(bounds[bound]))
        else:
            assert wrap.get_attribute(f"data-{bound}") is None
            assert page.get_by_label("Age").get_attribute(bound) is None
    if refused is not None:
        page.get_by_label("Age").fill(refused)
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#q-age-error")).to_have_text(message or "")
    page.get_by_label("Age").fill(accepted)
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#confirmation-code")).to_be_visible()
    context.close()
    assert watch.unexpected() == []
