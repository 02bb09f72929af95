"""Pages without a browser: redirects, HTML error pages, JSON kept on /api, assets."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from healthforms.errors import RateLimited
from healthforms.web.pages import safe_next

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/forms/abc", "/forms/abc"),
        ("/responses/x?y=1", "/responses/x?y=1"),
        (None, "/forms"),
        ("", "/forms"),
        ("https://evil.example/", "/forms"),
        ("//evil.example/x", "/forms"),
        ("/\\evil.example", "/forms"),
        ("/a\\b", "/forms"),
        ("javascript:alert(1)", "/forms"),
        ("/login?next=/x", "/forms"),
        ("/ok\n", "/forms"),
    ],
)
def test_safe_next_accepts_only_paths_on_this_site(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/forms",
        "/forms/new",
        "/forms/frm_x",
        "/forms/frm_x/responses",
        "/responses/rsp_x",
        "/account",
        "/admin/users",
        "/admin/audit",
    ],
)
async def test_signed_out_staff_page_redirects_303_to_login_with_next(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path + "?tab=1", headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={path}%3Ftab%3D1"


async def test_login_page_has_lang_title_viewport_and_no_inline_code(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/login?next=/forms/abc", headers=HTML)
    assert response.status_code == 200
    html = response.text
    assert '<html lang="en">' in html
    assert "<title>Sign in · healthforms</title>" in html
    assert 'name="viewport"' in html
    assert 'data-next="/forms/abc"' in html
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    assert response.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in response.headers["content-security-policy"]


async def test_login_page_drops_an_offsite_next(client: httpx.AsyncClient) -> None:
    response = await client.get("/login?next=//evil.example/", headers=HTML)
    assert 'data-next="/forms"' in response.text


async def test_unknown_page_is_a_friendly_html_404_for_browsers(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/page", headers=HTML)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Page not found" in response.text


async def test_unknown_public_form_is_a_friendly_html_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/f/doesnotexist", headers=HTML)
    assert response.status_code == 404
    assert "This form link is not valid." in response.text


async def test_api_errors_stay_json_even_for_browsers(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/no/such/thing", headers=HTML)
    assert response.status_code == 404
    assert response.json() == {"error": "Not found.", "code": "not_found"}


async def test_non_browser_clients_keep_json_errors_off_api(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_429_page_says_when_to_retry(app: FastAPI, client: httpx.AsyncClient) -> None:
    async def limited() -> None:
        raise RateLimited(headers={"Retry-After": "7"})

    async def broken() -> None:
        raise RuntimeError("boom with secret detail")

    app.add_api_route("/test-limited", limited)
    app.add_api_route("/api/test-limited", limited)
    app.add_api_route("/test-broken", broken)
    page = await client.get("/test-limited", headers=HTML)
    assert page.status_code == 429
    assert page.headers["retry-after"] == "7"
    assert "7 seconds" in page.text and "Too many requests" in page.text
    api = await client.get("/api/test-limited", headers=HTML)
    assert api.status_code == 429
    assert api.json()["code"] == "rate_limited"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as quiet:
        err = await quiet.get("/test-broken", headers=HTML)
    assert err.status_code == 500
    assert "Something went wrong on our side" in err.text
    assert "secret detail" not in err.text


async def test_static_assets_and_favicon_are_served_by_the_app(client: httpx.AsyncClient) -> None:
    css = await client.get("/static/css/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = await client.get("/static/js/api.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    icon = await client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    missing = await client.get("/static/../app.py")
    assert missing.status_code == 404
