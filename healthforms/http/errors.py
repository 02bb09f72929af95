"""FastAPI's exception handlers: every error a route raises, as the contract's JSON.

Browsers on page paths get the site's HTML error page instead; the page itself is
drawn by web/ and handed in by app.py (`HtmlErrorPage`), so this layer never imports
a feature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from healthforms.db.outage import is_database_outage
from healthforms.errors import (
    INTERNAL_ERROR_BODY,
    BadRequest,
    Forbidden,
    HealthformsError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthenticated,
    ValidationFailed,
)
from healthforms.languages import DEFAULT_LANGUAGE, negotiate

# (request, status, headers, message) -> the page; web/pages.py `error_page`.
HtmlErrorPage = Callable[[Request, int, dict[str, str], str | None], Response]

_STATUS_CODES = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    429: RateLimited,
}


def error_response(error: HealthformsError, language: str = DEFAULT_LANGUAGE) -> JSONResponse:
    return JSONResponse(error.body(language), status_code=error.status_code, headers=error.headers)


def client_language(request: Request) -> str:
    """The language a JSON answer's messages are written in: English unless the
    client's Accept-Language asks for another we speak (languages.py)."""
    return negotiate(request.headers.get("accept-language"))


def wants_html(request: Request) -> bool:
    """Browsers on page paths get HTML errors; /api and non-browser clients keep JSON."""
    path = request.url.path
    if path.startswith("/api/") or path == "/api":
        return False
    return "text/html" in request.headers.get("accept", "")


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or "body"


class ErrorHandlers:
    """The handlers, bound to the page renderer they answer browsers with."""

    def __init__(self, html_page: HtmlErrorPage) -> None:
        self.html_page = html_page

    def render(self, request: Request, error: HealthformsError) -> Response:
        """JSON for /api and non-browser clients; the HTML error page for browsers."""
        if wants_html(request):
            return self.html_page(request, error.status_code, error.headers, error.message)
        return error_response(error, client_language(request))

    async def healthforms(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HealthformsError)
        return self.render(request, exc)

    async def validation(self, _: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fields: dict[str, str] = {}
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                return error_response(BadRequest())
            # The message is pydantic's own; it never echoes the submitted value.
            fields.setdefault(
                _field_name(tuple(err.get("loc", ()))), str(err.get("msg", "invalid"))
            )
        return error_response(ValidationFailed(fields))

    async def http(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        cls = _STATUS_CODES.get(exc.status_code)
        if cls is not None:
            error = cls(headers=dict(exc.headers or {}))
        else:
            error = HealthformsError(headers=dict(exc.headers or {}))
            error.status_code = exc.status_code
            error.code = "http_error"
        return self.render(request, error)

    async def unexpected(self, request: Request, exc: Exception) -> Response:
        """What nothing else handled: 503 for a lost database (clients retry), else 500.

        No internals in the body. The edge middleware, which the exception reaches next,
        logs it once with the request id (the type only, never its args, which could
        carry submitted data).
        """
        response: Response
        if is_database_outage(exc):
            response = self.render(request, ServiceUnavailable())
        elif wants_html(request):
            response = self.html_page(request, 500, {}, None)
        else:
            response = JSONResponse(INTERNAL_ERROR_BODY, status_code=500)
        response.headers["cache-control"] = "no-store"
        return response


def install_error_handlers(app: FastAPI, html_page: HtmlErrorPage) -> None:
    handlers = ErrorHandlers(html_page)
    app.add_exception_handler(HealthformsError, handlers.healthforms)
    app.add_exception_handler(RequestValidationError, handlers.validation)
    app.add_exception_handler(StarletteHTTPException, handlers.http)
    app.add_exception_handler(Exception, handlers.unexpected)
