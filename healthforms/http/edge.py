"""The edge of every request, as one plain ASGI middleware (no BaseHTTPMiddleware).

It assigns the request id, resolves the client IP, creates the request's RequestState
(security/context.py) that the inner layers and routes share, enforces the body limit,
adds the security headers, logs one structured line and counts the request in /metrics.
An error that escaped every handler answers 500, except a lost database connection,
which answers 503 `unavailable` like /health does (DESIGN.md): clients retry those.
"""

from __future__ import annotations

import re
import secrets
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthforms.db.outage import is_database_outage
from healthforms.errors import HealthformsError, NotFound, PayloadTooLarge, ServiceUnavailable
from healthforms.http.answers import send_body, send_error
from healthforms.http.client_ip import IPNetwork, client_ip, forwarded_scheme
from healthforms.logs import write_request_line
from healthforms.metrics import Metrics
from healthforms.security.context import (
    SCOPE_KEY,
    USER_AGENT_LIMIT,
    RequestContext,
    RequestState,
    request_state,
)

log = structlog.get_logger("healthforms.http")

# A client-supplied request id is echoed only if it cannot smuggle anything into logs.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
# A patient's file upload (docs/uploads.md) is the one body allowed past the general
# cap: one file of at most 20 MiB (the largest maxSizeMb) plus the multipart envelope.
# Anything larger is refused here, before a byte of it is read (413).
UPLOAD_PATH_RE = re.compile(r"^/api/public/(forms|requests)/[^/]+/files/?$")
MAX_UPLOAD_BODY_BYTES = 20 * 1024 * 1024 + 64 * 1024
# A patient page posted without JavaScript carries its files in its own body
# (multipart, docs/patient-page.md): room for two of the largest files and the
# answers. The page reads it in memory within its form's own bounds (uploads/receive.py).
PAGE_POST_PATH_RE = re.compile(r"^/(f|r)/[^/]+/?$")
MAX_PAGE_POST_BODY_BYTES = 2 * 20 * 1024 * 1024 + 1024 * 1024

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HSTS = "max-age=63072000; includeSubDomains"


def code_locations(exc: BaseException, depth: int = 8) -> list[str]:
    """Where an exception was raised, as `module.py:line:function` of the innermost
    frames (and of the exception it arose from): code locations only, never arguments,
    locals or the message, which may carry submitted data."""
    chain: list[BaseException] = [exc]
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None:
        chain.append(cause)
    found: list[str] = []
    for error in chain:
        for frame in traceback.extract_tb(error.__traceback__)[-depth:]:
            found.append(f"{'/'.join(Path(frame.filename).parts[-2:])}:{frame.lineno}:{frame.name}")
        found.append(f"<- {type(error).__name__}")
    return found


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
        html_error_page: Callable[[int], str],
    ) -> None:
        self.app = app
        self.html_error_page = html_error_page
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
        self._metric_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        supplied = forwarded = forwarded_proto = content_length = user_agent = accept = None
        is_multipart = False
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                supplied = value.decode("latin-1")
            elif key == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
            elif key == b"x-forwarded-proto":
                forwarded_proto = value.decode("latin-1")
            elif key == b"content-length":
                content_length = value.decode("latin-1")
            elif key == b"user-agent":
                user_agent = value.decode("latin-1")[:USER_AGENT_LIMIT]
            elif key == b"accept":
                accept = value.decode("latin-1")
            elif key == b"content-type":
                is_multipart = value[:19].lower() == b"multipart/form-data"
        # fullmatch: `$` would also accept a trailing newline (log-line injection).
        request_id = secrets.token_hex(8)
        client_request_id = supplied if supplied and _REQUEST_ID_RE.fullmatch(supplied) else None
        peer = scope.get("client")
        ip = client_ip(peer[0] if peer else None, forwarded, self.trusted, self.hops)
        if forwarded_proto is not None:
            scheme = forwarded_scheme(
                peer[0] if peer else None, forwarded_proto, self.trusted, self.hops
            )
            if scheme is not None:
                scope["scheme"] = scheme
        scope[SCOPE_KEY] = RequestState(
            RequestContext(
                ip=ip,
                user_agent=user_agent or None,
                request_id=request_id,
                client_request_id=client_request_id,
            )
        )
        path: str = scope.get("path", "")
        is_api = path.startswith("/api/")
        max_body = self.max_body
        if scope.get("method") == "POST" and UPLOAD_PATH_RE.match(path):
            max_body = max(max_body, MAX_UPLOAD_BODY_BYTES)
        elif scope.get("method") == "POST" and is_multipart and PAGE_POST_PATH_RE.match(path):
            max_body = max(max_body, MAX_PAGE_POST_BODY_BYTES)
        status_holder = [500]
        started_response = [False]

        if is_api and "\x00" in path:
            # No API route has a NUL byte, and PostgreSQL refuses one in text: a path
            # segment carrying it (%00) would reach a query as a 500. Refused here for
            # every API route (pages answer their own 404 page).
            await self._send_error(send, NotFound(), request_id)
            self._finish(scope, 404, started, request_id)
            return

        if content_length is not None:
            try:
                too_large = int(content_length) > max_body
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
                if received > max_body:
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
                    "unhandled_exception",
                    request_id=request_id,
                    error_type=type(exc).__name__,
                    where=code_locations(exc),
                )
                if not started_response[0]:
                    if not is_api and "text/html" in (accept or ""):
                        await self._send_html_500(send, request_id)
                    else:
                        await self._send_error(send, None, request_id)
                status_holder[0] = 500
        self._finish(scope, status_holder[0], started, request_id)

    async def _send_error(
        self, send: Send, error: HealthformsError | None, request_id: str
    ) -> None:
        await send_error(send, error, self._own_headers(request_id))

    async def _send_html_500(self, send: Send, request_id: str) -> None:
        """Browsers on pages get the site's 500 page (no internals), like every other error."""
        body = self.html_error_page(500).encode()
        await send_body(send, 500, body, b"text/html; charset=utf-8", self._own_headers(request_id))

    def _own_headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        """What send_wrapper adds to every answer, for the answers this layer sends itself."""
        return [
            (b"x-request-id", request_id.encode()),
            (b"cache-control", b"no-store"),
            *self.security_headers,
        ]

    def _finish(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        route: object = scope.get("route")
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
        client_request_id = request_state(scope).context.client_request_id
        write_request_line(
            request_id, method, template, status, round(elapsed * 1000, 2), client_request_id
        )
