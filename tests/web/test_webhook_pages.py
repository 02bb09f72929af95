"""Webhooks in Chromium: an admin adds an endpoint (the secret shown once), sends a
test event that a real receiver gets and verifies with the standardwebhooks library,
sees the call in the delivery log, rotates the secret, and redelivers a dead letter
once the receiver is fixed. Every page passes axe-core."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import require_api
from tests.web.seed import create_users
from tests.web.test_staff_flow import DESKTOP, sign_in
from tests.webhooks.receiver import Receiver, running_receiver

pytestmark = pytest.mark.browser


# The module's server (tests/web/conftest.py): fast retries and a dead letter after two
# attempts, so the page shows one.
SERVER_ENV = {
    "HEALTHFORMS_WEBHOOK_RETRY_BASE": "0.1",
    "HEALTHFORMS_WEBHOOK_RETRY_MAX": "0.3",
    "HEALTHFORMS_WEBHOOK_MAX_ATTEMPTS": "2",
    "HEALTHFORMS_WEBHOOK_POLL": "0.2",
    "HEALTHFORMS_WEBHOOK_TIMEOUT": "3",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


def reload_until(page: Page, selector: str, text: str, tries: int = 60) -> None:
    for _ in range(tries):
        if text in (page.locator(selector).text_content(timeout=2000) or ""):
            return
        page.wait_for_timeout(250)
        page.reload()
    raise AssertionError(f"{selector} never showed {text!r}")


def test_an_admin_adds_an_endpoint_tests_it_rotates_and_redelivers(
    browser: Browser, server: ServerProcess, database_url: str, api_paths: set[str],
    receiver: Receiver,
) -> None:  # fmt: skip
    require_api(api_paths, "/api/webhooks", "/api/webhooks/{id}/test")
    base = server.base_url
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    watch = Watch()
    context = new_context(browser, watch, **DESKTOP)
    context.on("dialog", lambda dialog: dialog.accept())
    page = context.new_page()
    sign_in(page, base, admin, "/admin/webhooks")
    expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Webhooks")).to_have_attribute("aria-current", "page")
    check_page(page, "webhooks-empty")

    # A URL that is not one is refused beside its field.
    page.get_by_label("URL").fill("ftp://nowhere")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#wh-url-error")).to_be_visible()
    check_page(page, "webhooks-refused")

    page.get_by_label("URL").fill(receiver.url)
    page.get_by_label("Description (optional)").fill("Front desk EHR")
    page.get_by_label("form.published").uncheck()
    page.get_by_role("button", name="Add endpoint").click()
    secret_box = page.get_by_label("Signing secret, shown only now")
    expect(secret_box).to_be_visible()
    secret = secret_box.input_value()
    assert secret.startswith("whsec_")
    check_page(page, "webhooks-secret")
    page.get_by_role("link", name="Done").click()
    page.get_by_role("link", name="Front desk EHR").click()
    expect(page.get_by_role("heading", name="Webhook: Front desk EHR")).to_be_visible()
    expect(page.get_by_label("form.published")).not_to_be_checked()
    expect(page.get_by_label("response.submitted")).to_be_checked()

    # The test event arrives, signed, and shows in the delivery log.
    page.get_by_role("button", name="Send test event").click()
    expect(page.locator("#notice-info")).to_contain_text("Test event queued")
    (call,) = receiver.wait_for(lambda calls: len(calls) == 1)
    assert call.verify(secret)["type"] == "webhook.test"
    reload_until(page, "main", "200")
    expect(page.locator("#attempts-table")).to_contain_text("webhook.test")
    check_page(page, "webhook-log")

    # Rotation: a new secret shown once; calls carry both signatures meanwhile.
    page.get_by_role("button", name="Rotate secret").click()
    new_box = page.get_by_label("New signing secret, shown only now")
    expect(new_box).to_be_visible()
    new_secret = new_box.input_value()
    assert new_secret.startswith("whsec_") and new_secret != secret
    check_page(page, "webhook-rotated")

    # A failing receiver: two attempts, then a dead letter; fixed, then redelivered.
    receiver.set_mode("fail")
    page.reload()
    page.get_by_role("button", name="Send test event").click()
    receiver.wait_for(lambda calls: len(calls) == 3)
    reload_until(page, "#dead-heading + *", "HTTP 500")
    check_page(page, "webhook-dead-letter")
    receiver.set_mode("ok")
    page.get_by_role("button", name="Redeliver").first.click()
    expect(page.locator("#notice-info")).to_contain_text("Sent again")
    calls = receiver.wait_for(lambda found: len(found) == 4)
    assert calls[-1].webhook_id == calls[-2].webhook_id
    calls[-1].verify(secret)
    calls[-1].verify(new_secret)

    # Disable; the list shows it.
    page.reload()
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("button", name="Enable")).to_be_visible()
    page.goto(f"{base}/admin/webhooks")
    expect(page.locator("#endpoints-table")).to_contain_text("Disabled")
    check_page(page, "webhooks-list")
    assert watch.unexpected(422) == []
