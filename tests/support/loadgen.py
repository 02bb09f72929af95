"""A bounded load generator for failure drills and the soak, run as its own process.

    python -m tests.support.loadgen CONFIG.json RESULT.json

It sends a steady mix of requests (public form fetch + submit, authenticated GETs,
/health) to every server in turn, like a load balancer that skips a server that
refuses connections, and writes what it saw: status counts, every response that
came without a body, every 5xx and transport error with its wall-clock time, every
/health answer, and every accepted submission (201, and 200 replays) with its
nonce and confirmation, so a drill can count them against the database.

Bounded twice: it stops after `duration_s` or `max_requests`, whichever comes first.
Traffic goes only to the configured servers, which must be on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import random
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

# Replays of one submission after a lost reply, like a phone resending (same nonce).
SUBMIT_ATTEMPTS = 4


@dataclass
class Config:
    servers: list[str]
    duration_s: float
    max_requests: int
    concurrency: int
    rate_per_s: float
    public_ids: list[str]
    answers: dict[str, Any]
    # Signed-in staff: {"cookie": "session=...", "csrf": "..."}.
    sessions: list[dict[str, str]]
    # Staff who sign in during the run (soak): {"email", "password"}.
    logins: list[dict[str, str]] = field(default_factory=list)
    mix: dict[str, float] = field(
        default_factory=lambda: {"public": 0.4, "me": 0.2, "forms": 0.2, "health": 0.2}
    )
    seed: int = 7
    request_timeout_s: float = 15.0
    # HTTPS servers (a TLS-terminating balancer): the CA file to trust them by.
    ca_file: str | None = None
    # Stop early once this file exists (a drill whose faults took less than the bound).
    stop_file: str | None = None
    # Responses whose PDF staff generate (the `pdf` kind of the mix; topology drills).
    pdf_response_ids: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Config:
        raw = json.loads(path.read_text())
        config = cls(**raw)
        for url in config.servers:
            if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
                raise SystemExit(f"refusing to load a non-loopback server: {url}")
        return config


@dataclass
class Recorder:
    started: float = field(default_factory=time.time)
    ended: float = 0.0
    requests: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    bodiless: list[dict[str, Any]] = field(default_factory=list)
    server_errors: list[dict[str, Any]] = field(default_factory=list)
    transport_errors: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    unknown_submissions: list[dict[str, Any]] = field(default_factory=list)
    rejected_submissions: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)
    sessions_made: list[dict[str, str]] = field(default_factory=list)

    def saw(self, kind: str, server: str, response: httpx.Response) -> None:
        self.requests += 1
        self.counts[f"{kind} {response.status_code}"] += 1
        now = time.time()
        if response.status_code != 204 and not response.content:
            self.bodiless.append({"t": now, "kind": kind, "status": response.status_code,
                                  "server": server})  # fmt: skip
        if response.status_code >= 500:
            self.server_errors.append({"t": now, "kind": kind, "status": response.status_code,
                                       "server": server, "body": response.text[:200]})  # fmt: skip

    def failed(self, kind: str, server: str, error: BaseException) -> None:
        self.requests += 1
        self.counts[f"{kind} transport_error"] += 1
        self.transport_errors.append(
            {"t": time.time(), "kind": kind, "server": server, "error": type(error).__name__}
        )

    def dump(self, path: Path) -> None:
        data = {
            "started": self.started,
            "ended": self.ended,
            "requests": self.requests,
            "counts": dict(self.counts),
            "bodiless": self.bodiless,
            "server_errors": self.server_errors,
            "transport_errors": self.transport_errors,
            "accepted": self.accepted,
            "unknown_submissions": self.unknown_submissions,
            "rejected_submissions": self.rejected_submissions,
            "health": self.health,
            "sessions_made": self.sessions_made,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


class LoadGenerator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.rec = Recorder()
        self.rng = random.Random(config.seed)
        self.turn = 0
        self.deadline = time.monotonic() + config.duration_s
        self.stop_file = Path(config.stop_file) if config.stop_file else None
        self.sessions = list(config.sessions)
        self.pending_logins = list(config.logins)
        kinds = [k for k, w in config.mix.items() if w > 0]
        self.kinds = kinds
        self.weights = [config.mix[k] for k in kinds]

    def _servers_in_turn(self) -> list[str]:
        servers = self.config.servers
        self.turn += 1
        first = self.turn % len(servers)
        return servers[first:] + servers[:first]

    def _done(self) -> bool:
        if self.stop_file is not None and self.stop_file.exists():
            return True
        return time.monotonic() >= self.deadline or self.rec.requests >= self.config.max_requests

    async def _request(
        self, http: httpx.AsyncClient, kind: str, method: str, path: str, **kwargs: Any
    ) -> tuple[str, httpx.Response] | None:
        """Send to the next server; on a refused/broken connection try the others once."""
        for server in self._servers_in_turn():
            try:
                response = await http.request(method, server + path, **kwargs)
            except httpx.TransportError as exc:
                self.rec.failed(kind, server, exc)
                continue
            self.rec.saw(kind, server, response)
            return server, response
        return None

    async def public(self, http: httpx.AsyncClient) -> None:
        public_id = self.rng.choice(self.config.public_ids)
        got = await self._request(http, "public_fetch", "GET", f"/api/public/forms/{public_id}")
        if got is None or got[1].status_code != 200:
            return
        nonce = got[1].json()["nonce"]
        body = {"nonce": nonce, "answers": self.config.answers}
        for attempt in range(SUBMIT_ATTEMPTS):
            if attempt:
                await asyncio.sleep(0.3 * attempt)
            sent = await self._request(
                http, "public_submit", "POST", f"/api/public/forms/{public_id}/responses", json=body
            )
            if sent is None:
                continue
            status = sent[1].status_code
            record = {"t": time.time(), "nonce": nonce, "status": status, "attempt": attempt,
                      "public_id": public_id}  # fmt: skip
            if status in (200, 201):
                record["confirmation"] = sent[1].json().get("confirmation")
                self.rec.accepted.append(record)
                return
            if status == 409 and _code(sent[1]) == "submission_in_progress":
                continue
            if status >= 500:
                continue
            record["code"] = _code(sent[1])
            self.rec.rejected_submissions.append(record)
            return
        self.rec.unknown_submissions.append({"t": time.time(), "nonce": nonce,
                                             "public_id": public_id})  # fmt: skip

    async def staff_get(self, http: httpx.AsyncClient, kind: str, path: str) -> None:
        if self.pending_logins and (not self.sessions or self.rng.random() < 0.5):
            await self.login(http)
            return
        if not self.sessions:
            return
        session = self.rng.choice(self.sessions)
        await self._request(http, kind, "GET", path, headers={"Cookie": session["cookie"]})

    async def pdf(self, http: httpx.AsyncClient) -> None:
        """A staff member generates a response's PDF (a Redis lock and the pdf bucket)."""
        if not self.sessions or not self.config.pdf_response_ids:
            return
        session = self.rng.choice(self.sessions)
        response_id = self.rng.choice(self.config.pdf_response_ids)
        headers = {"Cookie": session["cookie"], "X-CSRF-Token": session["csrf"]}
        path = f"/api/responses/{response_id}/generate-pdf"
        await self._request(http, "pdf", "POST", path, headers=headers)

    async def login(self, http: httpx.AsyncClient) -> None:
        account = self.pending_logins.pop()
        got = await self._request(http, "login", "POST", "/api/auth/session-login", json=account)
        if got is None or got[1].status_code != 200:
            return
        response = got[1]
        for name in ("session", "__Host-session"):
            value = response.cookies.get(name)
            if value:
                session = {"cookie": f"{name}={value}", "csrf": response.json()["csrfToken"]}
                self.sessions.append(session)
                self.rec.sessions_made.append(session)
                return

    async def health(self, http: httpx.AsyncClient) -> None:
        for server in self.config.servers:
            try:
                response = await http.get(server + "/health")
            except httpx.TransportError as exc:
                self.rec.failed("health", server, exc)
                continue
            self.rec.saw("health", server, response)
            try:
                status = response.json().get("status")
            except ValueError:
                status = None
            self.rec.health.append({"t": time.time(), "server": server,
                                    "code": response.status_code, "status": status})  # fmt: skip

    async def worker(self, http: httpx.AsyncClient) -> None:
        interval = self.config.concurrency / self.config.rate_per_s
        while not self._done():
            began = time.monotonic()
            kind = self.rng.choices(self.kinds, self.weights)[0]
            if kind == "public":
                await self.public(http)
            elif kind == "me":
                await self.staff_get(http, "me", "/api/auth/me")
            elif kind == "forms":
                await self.staff_get(http, "forms", "/api/forms")
            elif kind == "health":
                await self.health(http)
            elif kind == "pdf":
                await self.pdf(http)
            spare = interval - (time.monotonic() - began)
            if spare > 0:
                await asyncio.sleep(min(spare, max(0.0, self.deadline - time.monotonic())))

    async def run(self) -> Recorder:
        timeout = httpx.Timeout(self.config.request_timeout_s, connect=2.0)
        limits = httpx.Limits(max_connections=self.config.concurrency * 2)
        # Keep no cookies: a patient's request must not carry a session a login set
        # (it would then need a CSRF token); staff sessions are sent explicitly.
        verify: ssl.SSLContext | bool = True
        if self.config.ca_file:
            verify = ssl.create_default_context(cafile=self.config.ca_file)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, verify=verify) as client:
            client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            await asyncio.gather(*(self.worker(client) for _ in range(self.config.concurrency)))
        self.rec.ended = time.time()
        return self.rec


def _code(response: httpx.Response) -> str | None:
    try:
        code = response.json().get("code")
    except ValueError:
        return None
    return str(code) if code is not None else None


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m tests.support.loadgen CONFIG.json RESULT.json", file=sys.stderr)
        return 2
    config = Config.load(Path(argv[1]))
    result = asyncio.run(LoadGenerator(config).run())
    result.dump(Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
