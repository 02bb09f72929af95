"""FHIR downloads in Chromium (docs/fhir.md): an editor downloads a form's responses as
NDJSON and its Questionnaire from the responses page, and one response's
QuestionnaireResponse from the response page; a viewer gets the response's only."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from playwright.sync_api import Browser, Page, expect

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import require_api
from tests.web.seed import ALL_TYPES_FIELDS, SeededUser, create_response_row, create_users
from tests.web.seed import publish_form as seed_form

pytestmark = pytest.mark.browser

DESKTOP = {"viewport": {"width": 1280, "height": 900}, "accept_downloads": True}
FHIR = (
    "/api/auth/session-login",
    "/api/forms/{id}/fhir",
    "/api/forms/{id}/responses/fhir",
    "/api/responses/{id}/fhir",
)


@pytest.fixture
def watch() -> Iterator[Watch]:
    yield Watch()


def sign_in(page: Page, base: str, user: SeededUser, next_path: str) -> None:
    page.goto(f"{base}/login?next={next_path}")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}{next_path}")


def test_an_editor_downloads_fhir_and_a_viewer_only_a_response(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, *FHIR)
    editor, viewer = create_users(database_url, [("Eddie Editor", "editor"), ("Vi", "viewer")])
    form_id, _ = seed_form(database_url, editor.organization_id, "FHIR intake", ALL_TYPES_FIELDS)
    ids = [create_response_row(database_url, form_id) for _ in range(2)]
    base = server.base_url
    page = new_context(browser, watch, **DESKTOP).new_page()
    sign_in(page, base, editor, f"/forms/{form_id}/responses")
    expect(page.locator("#responses-table tbody tr")).to_have_count(2)
    check_page(page, "responses-fhir")

    with page.expect_download() as ndjson:
        page.get_by_role("link", name="Export FHIR").click()
    assert ndjson.value.suggested_filename.endswith(".ndjson")
    lines = ndjson.value.path().read_text().splitlines()
    resources = [QuestionnaireResponse.model_validate(json.loads(line)) for line in lines]
    assert sorted(str(r.identifier.value) for r in resources if r.identifier) == sorted(ids)
    with page.expect_download() as questionnaire:
        page.get_by_role("link", name="FHIR Questionnaire").click()
    Questionnaire.model_validate(json.loads(questionnaire.value.path().read_text()))
    # The NDJSON link follows the list's filter, like the CSV one.
    page.get_by_label("Show", exact=True).select_option("reviewed")
    expect(page.get_by_role("link", name="Export FHIR")).to_have_attribute(
        "href", f"/api/forms/{form_id}/responses/fhir?status=reviewed"
    )

    page.goto(f"{base}/forms")
    check_page(page, "forms-fhir")
    with page.expect_download() as listed:
        page.get_by_role("link", name="FHIR Questionnaire of FHIR intake").click()
    assert json.loads(listed.value.path().read_text())["title"] == "FHIR intake"

    page.goto(f"{base}/responses/{ids[0]}")
    check_page(page, "response-fhir")
    with page.expect_download() as one:
        page.get_by_role("link", name="Download FHIR").click()
    body = json.loads(one.value.path().read_text())
    assert QuestionnaireResponse.model_validate(body).identifier.value == ids[0]  # type: ignore[union-attr]
    assert "Pat Patient" in json.dumps(body)

    viewer_page = new_context(browser, watch, **DESKTOP).new_page()
    sign_in(viewer_page, base, viewer, f"/forms/{form_id}/responses")
    expect(viewer_page.locator("#responses-table tbody tr")).to_have_count(2)
    expect(viewer_page.get_by_role("link", name="Export FHIR")).to_have_count(0)
    viewer_page.goto(f"{base}/responses/{ids[1]}")
    expect(viewer_page.get_by_role("link", name="Download FHIR")).to_have_count(1)
    assert watch.unexpected() == []
