"""A real SMTP server for tests (aiosmtpd, in a thread of its own): it keeps every
message it accepted, and can refuse or stall on command, as a mail relay that is down
or slow would."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def text(self) -> str:
        """Headers and body as one text: what a leak check searches."""
        body = self.message.get_body(("plain",))
        content = body.get_content() if body is not None else ""
        return f"{self.message.as_string()}\n{content}"


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    # While > 0, each RCPT is refused with a temporary failure (and the count drops).
    refuse: int = 0
    refuse_always: bool = False
    # While set, RCPT waits here (a slow relay): the test kills the client meanwhile.
    stall: threading.Event | None = None
    stalled: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.stall is not None:
            import asyncio

            self.stalled.set()
            while not self.stall.is_set():
                await asyncio.sleep(0.05)
        with self.lock:
            if self.refuse_always:
                return "451 4.3.0 Try again later"
            if self.refuse > 0:
                self.refuse -= 1
                return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


class SmtpServer:
    """`with SmtpServer.running() as smtp:` a server on 127.0.0.1:smtp.port."""

    def __init__(self) -> None:
        self.handler = _Handler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @classmethod
    def running(cls) -> _Running:
        return _Running(cls())

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def refuse_next(self, count: int) -> None:
        with self.handler.lock:
            self.handler.refuse = count

    def refuse_always(self, on: bool) -> None:
        with self.handler.lock:
            self.handler.refuse_always = on

    def stall_recipients(self) -> threading.Event:
        """Hold every RCPT until the returned event is set."""
        release = threading.Event()
        self.handler.stalled.clear()
        self.handler.stall = release
        return release

    def stop_stalling(self) -> None:
        if self.handler.stall is not None:
            self.handler.stall.set()
        self.handler.stall = None

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[Received]:
        """Block until at least `count` messages arrived; all of them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.received
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received)} of {count} messages arrived")

    def settings(self) -> dict[str, Any]:
        """The service's settings for this server (no TLS: a local relay)."""
        return {
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "smtp_security": "none",
            "smtp_from": "alerts@clinic.example",
            "smtp_timeout_s": 60.0,
        }

    def env(self) -> dict[str, str]:
        """The same, as a served process's environment."""
        return {
            "HEALTHFORMS_SMTP_HOST": "127.0.0.1",
            "HEALTHFORMS_SMTP_PORT": str(self.port),
            "HEALTHFORMS_SMTP_SECURITY": "none",
            "HEALTHFORMS_SMTP_FROM": "alerts@clinic.example",
        }


class _Running:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    def __enter__(self) -> SmtpServer:
        self.server.controller.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop_stalling()
        self.server.controller.stop()


def iter_ids(received: list[Received]) -> Iterator[str]:
    for item in received:
        yield item.message_id
