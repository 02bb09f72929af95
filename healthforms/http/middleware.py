"""The edge of every request, as one plain ASGI middleware (no BaseHTTPMiddleware).

It assigns the request id, resolves the client IP, enforces the body limit, adds the
security headers, logs one structured line and counts the request in /metrics.
An error that escaped every handler answers 500, except a lost database connection,
which answers 503 `unavailable` like /health does (DESIGN.md): clients retry those.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthforms.db.engine import DatabaseUnavailable
from healthforms.errors import HealthformsError, PayloadTooLarge, ServiceUnavailable
from healthforms.health.metrics import Metrics
from healthforms.http.client_ip import IPNetwork, client_ip
from healthforms.logs import write_request_line

log = structlog.get_logger("healthforms.http")

# A client-supplied request id is echoed only if it cannot smuggle anything into logs.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HSTS = "max-age=63072000; includeSubDomains"


_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    OperationalError,  # includes SQLite's "database is locked" after its busy timeout
    InterfaceError,
    PoolTimeout,
    ConnectionError,
    TimeoutError,
)


# SQLSTATE classes of a lost server: 08 connection exception, 57P01-03 admin/crash
# shutdown and "cannot connect now" (PostgreSQL stopping or starting).
_OUTAGE_SQLSTATES = ("08", "57P")


def _is_connection_sqlstate(driver_error: BaseException | None) -> bool:
    for candidate in (driver_error, getattr(driver_error, "__cause__", None)):
        sqlstate = getattr(candidate, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATES):
            return True
    return False


def is_database_outage(exc: BaseException) -> bool:
    """Whether an exception (or what it was raised from) means the database is unreachable."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, _OUTAGE_ERRORS):
            return True
        if isinstance(current, DBAPIError) and (
            current.connection_invalidated or _is_connection_sqlstate(current.orig)
        ):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
                return None
    return None


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        trusted_proxies: tuple[IPNetwork, ...],
        proxy_hops: int,
        production: bool,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.trusted = trusted_proxies
        self.hops = proxy_hops
        base = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", CSP.encode()),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if production:
            base.append((b"strict-transport-security", HSTS.encode()))
        self.security_headers = base
        self._metric_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        supplied = _header(scope, b"x-request-id")
        # fullmatch: `$` would also accept a trailing newline (log-line injection).
        request_id = (
            supplied if supplied and _REQUEST_ID_RE.fullmatch(supplied) else secrets.token_hex(8)
        )
        peer = scope.get("client")
        ip = client_ip(
            peer[0] if peer else None, _header(scope, b"x-forwarded-for"), self.trusted, self.hops
        )
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = ip
        path: str = scope.get("path", "")
        is_api = path.startswith("/api/")
        status_holder = [500]
        started_response = [False]

        content_length = _header(scope, b"content-length")
        if content_length is not None:
            try:
                too_large = int(content_length) > self.max_body
            except ValueError:
                too_large = False
            if too_large:
                await self._send_error(send, PayloadTooLarge(), request_id)
                self._finish(scope, 413, started, request_id)
                return

        received = 0
        body_too_large = [False]

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # A streamed (chunked) body has no Content-Length to refuse up front.
                    # Frameworks may turn this exception into their own 400 while parsing,
                    # so remember it and answer 413 whatever the app then sends.
                    body_too_large[0] = True
                    raise PayloadTooLarge()
            return message

        async def send_wrapper(message: Message) -> None:
            if body_too_large[0]:
                if not started_response[0]:
                    started_response[0] = True
                    status_holder[0] = 413
                    await self._send_error(send, PayloadTooLarge(), request_id)
                return
            if message["type"] == "http.response.start":
                started_response[0] = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                if is_api and not any(k == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(self.security_headers)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except PayloadTooLarge as exc:
            if not started_response[0]:
                started_response[0] = True
                await self._send_error(send, exc, request_id)
            status_holder[0] = 413
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if is_database_outage(exc):
                # The database went away under the request: a retryable 503, as /health
                # says, rather than a 500 that reads as a bug.
                log.warning(
                    "database_unavailable", request_id=request_id, error_type=type(exc).__name__
                )
                if not started_response[0]:
                    await self._send_error(send, ServiceUnavailable(), request_id)
                status_holder[0] = 503
            else:
                # Nothing handled it: answer a bare 500 and log the type only (its args
                # could carry submitted data), never a traceback with locals.
                log.error(
                    "unhandled_exception", request_id=request_id, error_type=type(exc).__name__
                )
                if not started_response[0]:
                    accept = _header(scope, b"accept") or ""
                    if not is_api and "text/html" in accept:
                        await self._send_html_500(send, request_id)
                    else:
                        await self._send_error(send, None, request_id)
                status_holder[0] = 500
        self._finish(scope, status_holder[0], started, request_id)

    async def _send_error(
        self, send: Send, error: HealthformsError | None, request_id: str
    ) -> None:
        import json

        from healthforms.errors import INTERNAL_ERROR_BODY

        status = error.status_code if error else 500
        body = json.dumps(error.body() if error else INTERNAL_ERROR_BODY).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"cache-control", b"no-store"),
            *[
                (k.lower().encode(), v.encode())
                for k, v in (error.headers if error else {}).items()
            ],
            *self.security_headers,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_html_500(self, send: Send, request_id: str) -> None:
        """Browsers on pages get the site's 500 page (no internals), like every other error."""
        from healthforms.web.pages import static_error_html

        body = static_error_html(500).encode()
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"cache-control", b"no-store"),
            *self.security_headers,
        ]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _finish(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        route: Any = scope.get("route")
        template = getattr(route, "path", None) or "<unmatched>"
        method = scope.get("method", "")
        labels = (method, template, status)
        children = self._metric_children.get(labels)
        if children is None:
            # labels() takes a lock and builds the key every time: keep the children.
            # Bounded: route templates (not paths) x methods x statuses.
            text_labels = (method, template, str(status))
            children = (
                self.metrics.http_requests.labels(*text_labels),
                self.metrics.http_duration.labels(*text_labels),
            )
            self._metric_children[labels] = children
        children[0].inc()
        children[1].observe(elapsed)
        write_request_line(request_id, method, template, status, round(elapsed * 1000, 2))
