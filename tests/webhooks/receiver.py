"""A real HTTP receiver for webhook tests (http.server in a thread of its own): it
records every request it reads, then answers as told: 200, 500, a redirect, a huge
body, or never (it hangs until told to stop). It can go down and come back up on the
same port, as a receiver being redeployed would."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook

HUGE = 8 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def document(self) -> dict[str, Any]:
        parsed = json.loads(self.body)
        assert isinstance(parsed, dict)
        return parsed

    def verify(self, secret: str) -> dict[str, Any]:
        """What the standardwebhooks reference library makes of it (raises if bad)."""
        verified = Webhook(secret).verify(self.body, self.headers)
        assert isinstance(verified, dict)
        return verified


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    mode: str = "ok"  # ok | fail | hang | redirect | huge
    redirect_to: str = "http://127.0.0.1:9/"
    calls: list[Call] = field(default_factory=list)
    hanging: int = 0  # requests held right now (mode hang)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    tls: ssl.SSLContext | None = None  # set: an https receiver
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"https://localhost:{self.port}/hooks/healthforms"
        return f"http://127.0.0.1:{self.port}/hooks/healthforms"

    def set_mode(self, mode: str) -> None:
        with self.lock:
            self.mode = mode
        if mode == "hang":
            self.release.clear()
        else:
            self.release.set()  # those held answer now

    def received(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    def unique(self) -> dict[str, Call]:
        """The calls by webhook-id: what a receiver that de-duplicates keeps."""
        return {call.webhook_id: call for call in self.received()}

    def wait_for(self, predicate: Any, timeout_s: float = 30.0) -> list[Call]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            calls = self.received()
            if predicate(calls):
                return calls
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {len(self.received())} calls, not what was awaited")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.calls.append(
                        Call(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    mode = receiver.mode
                if mode == "hang":
                    with receiver.lock:
                        receiver.hanging += 1
                    receiver.release.wait(60)
                    with receiver.lock:
                        receiver.hanging -= 1
                    mode = receiver.mode if receiver.mode != "hang" else "fail"
                try:
                    if mode == "ok":
                        self._answer(200, b'{"ok":true}')
                    elif mode == "fail":
                        self._answer(500, b"receiver broke")
                    elif mode == "redirect":
                        self.send_response(302)
                        self.send_header("Location", receiver.redirect_to)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif mode == "huge":
                        self.send_response(200)
                        self.send_header("Content-Length", str(HUGE))
                        self.end_headers()
                        chunk = b"x" * 65536
                        for _ in range(HUGE // len(chunk)):
                            self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender stopped reading: as it should past its cap

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def start(self) -> None:
        if self.mode == "hang":
            self.release.clear()
        else:
            self.release.set()
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


@contextmanager
def running_receiver(mode: str = "ok") -> Iterator[Receiver]:
    receiver = Receiver(mode=mode)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
