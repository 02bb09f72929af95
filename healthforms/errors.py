"""One error base class and the errors every feature raises (rendered by http/errors.py).

A feature adds its own subclasses beside its code; `message` never carries PHI.
Messages a patient may see are marked `N_` (languages.py): `body(language)` writes them,
and a 422's `fields`, in the language the client asked for.
"""

from __future__ import annotations

from typing import Any

from healthforms.languages import DEFAULT_LANGUAGE, N_, translate, translate_fields


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

    def body(self, language: str = DEFAULT_LANGUAGE) -> dict[str, Any]:
        extra = self.extra
        if language != DEFAULT_LANGUAGE and isinstance(extra.get("fields"), dict):
            extra = {**extra, "fields": translate_fields(extra["fields"], language)}
        return {"error": translate(self.message, language), "code": self.code, **extra}


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
    status_code, code = 404, "not_found"
    message: str = N_("Not found.")


class MethodNotAllowed(HealthformsError):
    status_code, code, message = 405, "method_not_allowed", "Method not allowed."


class Conflict(HealthformsError):
    status_code, code, message = 409, "conflict", "The request conflicts with the current state."


class PayloadTooLarge(HealthformsError):
    status_code, code, message = 413, "payload_too_large", "The request body is too large."


class ValidationFailed(HealthformsError):
    status_code, code = 422, "validation_error"
    message: str = N_("Some fields are not valid.")

    def __init__(self, fields: dict[str, str], message: str | None = None) -> None:
        super().__init__(message, extra={"fields": fields})


class RateLimited(HealthformsError):
    status_code, code = 429, "rate_limited"
    message: str = N_("Too many requests. Try again later.")


class ServiceUnavailable(HealthformsError):
    status_code, code, message = 503, "unavailable", "The service is temporarily unavailable."


class UpstreamFailed(HealthformsError):
    status_code, code, message = 502, "upstream_failed", "An upstream service failed."


INTERNAL_ERROR_BODY = {"error": "Internal server error.", "code": "internal_error"}
