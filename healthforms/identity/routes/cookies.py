"""The session cookie, and the one answer every new session gets."""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response

from healthforms.clock import rfc3339
from healthforms.config import Settings
from healthforms.identity.login import IssuedSession
from healthforms.identity.models import User
from healthforms.identity.schemas import user_json


def session_answer(settings: Settings, user: User, issued: IssuedSession) -> JSONResponse:
    """{user, csrfToken, expiresAt} with the new session's cookie (sign-in, password change)."""
    info = issued.info
    response = JSONResponse(
        {
            "user": user_json(user),
            "csrfToken": issued.csrf_token,
            "expiresAt": rfc3339(info.expires_at(info.created_ms)),
        }
    )
    response.set_cookie(
        settings.session_cookie_name,
        issued.cookie_value,
        max_age=settings.session_max_age,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )
    return response


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        settings.session_cookie_name,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )
