"""One error base class and the handlers that render every error as the contract's JSON."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException


class HealthformsError(Exception):
    """Base of every error a client may see; `message` must never carry PHI."""

    status_code = 400
    code = "bad_request"
    message = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.extra = extra or {}
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.extra}


class BadRequest(HealthformsError):
    status_code, code, message = 400, "bad_request", "The request body is not valid JSON."


class Unauthenticated(HealthformsError):
    status_code, code, message = 401, "unauthenticated", "Sign in to continue."


class InvalidCredentials(HealthformsError):
    status_code, code, message = 401, "invalid_credentials", "Email or password is incorrect."


class Forbidden(HealthformsError):
    status_code, code, message = 403, "forbidden", "You do not have permission to do that."


class CsrfRejected(HealthformsError):
    status_code, code, message = 403, "csrf_invalid", "Security token missing or invalid."


class NotFound(HealthformsError):
    status_code, code, message = 404, "not_found", "Not found."


class MethodNotAllowed(HealthformsError):
    status_code, code, message = 405, "method_not_allowed", "Method not allowed."


class Conflict(HealthformsError):
    status_code, code, message = 409, "conflict", "The request conflicts with the current state."


class PayloadTooLarge(HealthformsError):
    status_code, code, message = 413, "payload_too_large", "The request body is too large."


class ValidationFailed(HealthformsError):
    status_code, code, message = 422, "validation_error", "Some fields are not valid."

    def __init__(self, fields: dict[str, str], message: str | None = None) -> None:
        super().__init__(message, extra={"fields": fields})


class RateLimited(HealthformsError):
    status_code, code, message = 429, "rate_limited", "Too many requests. Try again later."


class ServiceUnavailable(HealthformsError):
    status_code, code, message = 503, "unavailable", "The service is temporarily unavailable."


class UpstreamFailed(HealthformsError):
    status_code, code, message = 502, "upstream_failed", "An upstream service failed."


INTERNAL_ERROR_BODY = {"error": "Internal server error.", "code": "internal_error"}

_STATUS_CODES = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    429: RateLimited,
}


def error_response(error: HealthformsError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def _render(request: Request, error: HealthformsError) -> Response:
    """JSON for /api and non-browser clients (unchanged); the HTML error page for browsers."""
    from healthforms.web.pages import error_page, wants_html

    if wants_html(request):
        return error_page(request, error.status_code, error.headers, message=error.message)
    return error_response(error)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or "body"


async def _handle_healthforms(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HealthformsError)
    return _render(request, exc)


async def _handle_validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields: dict[str, str] = {}
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return error_response(BadRequest())
        # The message is pydantic's own; it never echoes the submitted value.
        fields.setdefault(_field_name(tuple(err.get("loc", ()))), str(err.get("msg", "invalid")))
    return error_response(ValidationFailed(fields))


async def _handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    cls = _STATUS_CODES.get(exc.status_code)
    if cls is not None:
        error = cls(headers=dict(exc.headers or {}))
    else:
        error = HealthformsError(headers=dict(exc.headers or {}))
        error.status_code = exc.status_code
        error.code = "http_error"
    return _render(request, error)


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    """What nothing else handled: 503 for a lost database (clients retry), else 500.

    No internals in the body. The edge middleware, which the exception reaches next,
    logs it once with the request id (the type only, never its args, which could
    carry submitted data).
    """
    from healthforms.http.middleware import is_database_outage
    from healthforms.web.pages import error_page, wants_html

    response: Response
    if is_database_outage(exc):
        response = _render(request, ServiceUnavailable())
    elif wants_html(request):
        response = error_page(request, 500, {})
    else:
        response = JSONResponse(INTERNAL_ERROR_BODY, status_code=500)
    response.headers["cache-control"] = "no-store"
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HealthformsError, _handle_healthforms)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(Exception, _handle_unexpected)
