"""Rendering of the server-side pages: one Jinja2 environment per language, assets, safe
`next` paths, the patient pages' language (languages.py)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from healthforms.languages import (
    DEFAULT_LANGUAGE,
    LANGUAGE_COOKIE,
    LANGUAGE_NAMES,
    LANGUAGE_QUERY,
    N_,
    SUPPORTED_LANGUAGES,
    choose_language,
    is_supported,
    script_messages,
    translate,
    translations,
)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"

# Pages never cache: staff pages show PHI, and a cached page would survive sign-out.
NO_STORE = {"Cache-Control": "no-store"}


@cache
def asset_version(relative: str) -> str:
    """A short content hash, so a new deploy never serves a stale script from a cache."""
    path = (STATIC_DIR / relative).resolve()
    if not path.is_relative_to(STATIC_DIR) or not path.is_file():
        return "0"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def asset_url(relative: str) -> str:
    return f"/static/{relative}?v={asset_version(relative)}"


@cache
def environment(language: str = DEFAULT_LANGUAGE) -> Environment:
    """The pages' environment speaking `language` ({% trans %} and _() in templates)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.globals["asset"] = asset_url
    env.globals["form_pages"] = form_pages
    return env


def form_pages(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A form's fields split at its page breaks: [{"title": break or None, "fields": [...]}].

    A page break first in the form titles the first page instead of opening an empty one.
    """
    pages: list[dict[str, Any]] = [{"title": None, "fields": []}]
    for field in fields:
        if field.get("type") == "pageBreak":
            if pages[-1]["fields"] or pages[-1]["title"] is not None:
                pages.append({"title": field, "fields": []})
            else:
                pages[-1]["title"] = field
        else:
            pages[-1]["fields"].append(field)
    return pages


def render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    language: str = DEFAULT_LANGUAGE,
    **context: Any,
) -> HTMLResponse:
    """The page in `language` (staff pages: English). A page that offers the language
    switch passes `languages=language_choices()`."""
    language = language if is_supported(language) else DEFAULT_LANGUAGE
    html = (
        environment(language)
        .get_template(template)
        .render(
            request=request,
            lang=language,
            lang_query=LANGUAGE_QUERY,
            script_messages=script_messages(language),
            **context,
        )
    )
    return HTMLResponse(html, status_code=status_code, headers={**NO_STORE, **(headers or {})})


def language_choices() -> list[tuple[str, str]]:
    return [(code, LANGUAGE_NAMES[code]) for code in SUPPORTED_LANGUAGES]


def is_patient_path(path: str) -> bool:
    return path.startswith(("/f/", "/r/"))


def patient_language(request: Request) -> str:
    """A patient page's language: its `?lang=` switch, the switch's cookie, the browser."""
    return choose_language(
        request.query_params.get(LANGUAGE_QUERY),
        request.cookies.get(LANGUAGE_COOKIE),
        request.headers.get("accept-language"),
    )


def safe_next(value: str | None, default: str = "/forms") -> str:
    """Return `value` when it is a path on this site, else `default`.

    Refuses open redirects: absolute URLs, scheme-relative `//host`, backslash tricks
    browsers read as `//`, and control characters.
    """
    if not value or len(value) > 2000 or not value.startswith("/"):
        return default
    if value.startswith(("//", "/\\")) or any(ord(c) < 0x20 or c == "\\" for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    if value.startswith("/login"):
        return default
    return value


def login_url(request: Request) -> str:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return "/login?next=" + quote(target, safe="/")


ERROR_TITLES = {
    400: N_("Something was wrong with that request"),
    401: N_("Please sign in"),
    403: N_("You do not have access to this page"),
    404: N_("Page not found"),
    405: N_("That action is not available here"),
    409: N_("That conflicts with a recent change"),
    413: N_("That upload is too large"),
    429: N_("Too many requests"),
    500: N_("Something went wrong on our side"),
    503: N_("The service is temporarily unavailable"),
}
DEFAULT_ERROR_TITLE = N_("Something went wrong")
# The 404 page says more than NotFound's generic message.
_GENERIC_NOT_FOUND = "Not found."


def retry_after_seconds(headers: dict[str, str]) -> int | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(1, int(value))
            except ValueError:
                return None
    return None


def error_page(
    request: Request, status_code: int, headers: dict[str, str], message: str | None = None
) -> HTMLResponse:
    """The HTML error page in the site's style; never shows internals."""
    retry_after = retry_after_seconds(headers) if status_code == 429 else None
    template = {404: "errors/404.html", 429: "errors/429.html"}.get(
        status_code, "errors/error.html"
    )
    # A patient's error page speaks the patient's language; staff pages stay English.
    language = patient_language(request) if is_patient_path(request.url.path) else DEFAULT_LANGUAGE
    title = translate(ERROR_TITLES.get(status_code, DEFAULT_ERROR_TITLE), language)
    if message == _GENERIC_NOT_FOUND:
        message = None
    try:
        return render(
            request,
            template,
            status_code=status_code,
            headers=headers,
            language=language,
            title=title,
            status=status_code,
            retry_after=retry_after,
            message=translate(message, language) if message else None,
        )
    except Exception:  # noqa: BLE001 - an error page must never fail into a traceback
        return HTMLResponse(
            f"<!doctype html><html lang=en><title>{status_code}</title><p>{status_code}",
            status_code=status_code,
            headers={**NO_STORE, **headers},
        )


def static_error_html(status_code: int) -> str:
    """The error page without a request (the edge middleware's last line of defence)."""
    try:
        return (
            environment()
            .get_template("errors/error.html")
            .render(
                title=ERROR_TITLES.get(status_code, DEFAULT_ERROR_TITLE),
                status=status_code,
                retry_after=None,
                message=None,
            )
        )
    except Exception:  # noqa: BLE001 - never fail while reporting a failure
        return f"<!doctype html><html lang=en><title>{status_code}</title><p>{status_code}"
