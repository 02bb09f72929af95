"""Answers the ASGI layers send themselves, and the one way they read a request header.

Every layer that answers without FastAPI (the edge's 413/500/503, a CSRF 403, a 429, a
hot route) writes the contract's JSON error body through `send_error`, so the shape
cannot drift between them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.types import Scope, Send

from healthforms.errors import INTERNAL_ERROR_BODY, HealthformsError
from healthforms.languages import DEFAULT_LANGUAGE

Headers = list[tuple[bytes, bytes]]


def header(scope: Scope, name: bytes) -> str | None:
    """The first request header called `name` (lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def render_json(body: Any) -> bytes:
    """The bytes FastAPI's JSONResponse would send for `body`."""
    return json.dumps(
        body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: Iterable[tuple[bytes, bytes]],
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    error: HealthformsError | None,
    headers: Iterable[tuple[bytes, bytes]] = (),
    language: str = DEFAULT_LANGUAGE,
) -> None:
    """Answer with the contract's JSON error body (its message in `language`); None is
    the bare 500."""
    if error is None:
        status, body = 500, INTERNAL_ERROR_BODY
        own: Headers = []
    else:
        status, body = error.status_code, error.body(language)
        own = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send_body(send, status, render_json(body), b"application/json", [*own, *headers])
