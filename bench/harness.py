"""What every HTTP benchmark needs: pinned server processes, wrk runs, Redis counters.

The app under test runs on core 0 (`taskset -c 0`) and the load generator plus Redis on
core 1, so the figures are those of one app core. Every load run is bounded by time
(wrk -d) and every server is stopped at the end. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# The server process type, its stop() and the repo root are the tests' (tests/support).
from tests.support.servers import REPO_ROOT as REPO_ROOT
from tests.support.servers import ServerProcess

WRK_DIR = Path(__file__).resolve().parent / "wrk"
WRK_LIB = WRK_DIR / "common.lua"  # what the scripts share (dofile)
APP_CORE = os.environ.get("BENCH_APP_CORE", "0")
LOAD_CORE = os.environ.get("BENCH_LOAD_CORE", "1")


def pinned(core: str, argv: Sequence[str]) -> list[str]:
    """argv run on one core when taskset exists and the machine has that core."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", core, *argv]
    return list(argv)


@dataclass
class Server(ServerProcess):
    """A server process of the tests' kind (stop(), log_text()), named for its log."""

    name: str

    @property
    def url(self) -> str:
        return self.base_url


def launch(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    *,
    port: int,
    ready_path: str = "/health",
    timeout_s: float = 30.0,
) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            pinned(APP_CORE, argv),
            cwd=str(REPO_ROOT),
            env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(name=name, process=process, port=port, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{server.log_text()[-2000:]}")
        try:
            if httpx.get(server.url + ready_path, timeout=1.0).status_code < 500:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} not ready in {timeout_s}s:\n{server.log_text()[-2000:]}")


def uvicorn_argv(factory: str, port: int) -> list[str]:
    """The same server settings `healthforms serve` uses (uvloop, httptools, no access log)."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", factory,
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--no-server-header",
        "--log-level", "warning",
    ]  # fmt: skip


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    # What a counting script (rotate.lua, submit.lua) adds: answers by status or kind.
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "errors": self.errors,
            **({"counts": self.counts} if self.counts else {}),
        }


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    script: str = "request.lua",
    env: Mapping[str, str] | None = None,
) -> LoadResult:
    """One bounded wrk run (one thread, on the load core); figures from the script's done()."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "wrk.json"
        argv = pinned(
            LOAD_CORE,
            [
                "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                "--timeout", "10s", "-s", str(WRK_DIR / script), url,
            ],
        )  # fmt: skip
        subprocess.run(
            argv,
            env={**os.environ, **(env or {}), "WRK_OUT": str(out), "WRK_LIB": str(WRK_LIB)},
            capture_output=True,
            timeout=seconds + 30,
            check=True,
        )
        data = json.loads(out.read_text())
    lat = data["latency_us"]
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors={k: int(v) for k, v in data["errors"].items() if v},
        p50_ms=round(lat["p50"] / 1000, 2),
        p90_ms=round(lat["p90"] / 1000, 2),
        p99_ms=round(lat["p99"] / 1000, 2),
        max_ms=round(lat["max"] / 1000, 2),
        counts={
            name: int(value)
            for section in ("statuses", "submissions")
            for name, value in data.get(section, {}).items()
        },
    )


def request_env(
    method: str = "GET",
    path: str = "/",
    *,
    body: str = "",
    headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    return {
        "WRK_METHOD": method,
        "WRK_PATH": path,
        "WRK_BODY": body,
        "WRK_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items()),
    }


def commandstats(redis_url: str) -> dict[str, int]:
    """calls per command from INFO commandstats (a private server: nothing else counts)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("commandstats")
    finally:
        client.close()
    return {
        name.removeprefix("cmdstat_"): int(stats["calls"])
        for name, stats in info.items()
        if isinstance(stats, dict)
    }


def per_request(
    before: Mapping[str, int], after: Mapping[str, int], requests: int
) -> dict[str, float]:
    """Commands per request, ignoring the INFO calls the benchmark itself makes."""
    if requests <= 0:
        return {}
    out: dict[str, float] = {}
    for name, calls in after.items():
        delta = calls - before.get(name, 0)
        if name == "info":
            delta -= 1
        if delta > 0:
            out[name] = round(delta / requests, 3)
    return out


def pipeline_counters(server_url: str) -> tuple[float, float]:
    """(commands, writes) of the app's pipelined script connection, from its /metrics."""
    text = httpx.get(server_url + "/metrics", timeout=10).text
    figures = {"commands": 0.0, "writes": 0.0}
    for line in text.splitlines():
        for name in figures:
            if line.startswith(f"healthforms_redis_pipeline_{name}_total "):
                figures[name] = float(line.split()[-1])
    return figures["commands"], figures["writes"]


def wait_until_quiet(redis_url: str, timeout_s: float = 60.0) -> None:
    """Return once Redis has seen no command but ours for half a second (bounded)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        last = int(client.info("stats")["total_commands_processed"])
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = int(client.info("stats")["total_commands_processed"])
            if now - last <= 1:  # only our own INFO
                return
            last = now
    finally:
        client.close()


# Sent by the app on its own schedule, whatever the requests: the published-forms
# cache (redis/broadcast.py) PINGs its pub/sub connection every second and SUBSCRIBEs
# when it (re)connects; the outbox worker (outbox/worker.py) blocks in XREADGROUP on a
# connection of its own and reclaims stuck entries (XAUTOCLAIM) every few seconds.
# tests/security/test_hot_path.py leaves them out the same way.
BACKGROUND_COMMANDS = frozenset({"ping", "subscribe", "xreadgroup", "xautoclaim"})


def round_trips(
    redis_url: str, fire: Callable[[], object], count: int, server_url: str | None = None
) -> dict[str, float]:
    """Redis round trips per request while `fire()` runs `count` times.

    MONITOR lists every top-level command (and marks those run inside scripts `[N lua]`).
    Commands on the app's pipelined script connection that left in one write are one
    round trip: with `server_url`, its /metrics counters turn them into writes.
    """
    import socket
    import threading
    from urllib.parse import urlsplit

    # Requests still in flight from the load run before would be counted too: a slow
    # endpoint at 50 connections (PUT on SQLite) drains its backlog for seconds after
    # wrk stops.
    wait_until_quiet(redis_url)
    parts = urlsplit(redis_url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 5)
    sock.sendall(b"MONITOR\r\n")
    buffer = bytearray()
    stop = threading.Event()

    def read() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.2)
    before = pipeline_counters(server_url) if server_url else (0.0, 0.0)
    for _ in range(count):
        fire()
    after = pipeline_counters(server_url) if server_url else (0.0, 0.0)
    time.sleep(0.3)
    stop.set()
    reader.join(timeout=2)
    sock.close()
    top: Counter[str] = Counter()
    inner: Counter[str] = Counter()
    for line in bytes(buffer).decode(errors="replace").splitlines():
        if not line.startswith("+") or line == "+OK":
            continue
        _, _, rest = line.partition(" [")
        where, _, command = rest.partition("] ")
        name = command.split(" ", 1)[0].strip('"').lower()
        if name in BACKGROUND_COMMANDS and "lua" not in where:
            continue  # the published-forms cache's own connection, not a request's
        (inner if "lua" in where else top)[name] += 1
    coalesced = (after[0] - before[0]) - (after[1] - before[1])  # commands - writes
    return {
        "round_trips": round((sum(top.values()) - coalesced) / count, 2),
        "top_level_commands": round(sum(top.values()) / count, 2),
        "inside_scripts": round(sum(inner.values()) / count, 2),
        **{f"top:{k}": round(v / count, 2) for k, v in top.most_common()},
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
