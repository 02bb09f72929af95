"""Real server processes for multi-process and failure tests: `healthforms serve` via uvicorn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from healthforms.redis.embedded import EmbeddedRedis, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_server(
    env: Mapping[str, str | None],
    log_dir: Path,
    *,
    port: int | None = None,
    workers: int = 1,
    ready_timeout_s: float = 30.0,
) -> ServerProcess:
    """Start `python -m healthforms serve` from this checkout and wait for /health.

    `env` is laid over this process's environment; a value of None removes the variable
    (e.g. REDIS_URL, to run on the embedded default).
    """
    if port is not None:
        return _start_server_once(env, log_dir, port, workers, ready_timeout_s)
    for attempt in range(3):
        try:
            return _start_server_once(env, log_dir, free_port(), workers, ready_timeout_s)
        except PortTaken:
            # free_port() closes its probe socket, and under load another test's
            # outgoing connection can take that ephemeral port before uvicorn binds it.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    """The chosen port was taken between picking it and binding it."""


def _start_server_once(
    env: Mapping[str, str | None],
    log_dir: Path,
    port: int,
    workers: int,
    ready_timeout_s: float,
) -> ServerProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{port}.log"
    merged: dict[str, str | None] = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
    full_env = {name: value for name, value in merged.items() if value is not None}
    handle = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "healthforms",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=str(REPO_ROOT),
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    server = ServerProcess(process=process, port=port, log_path=log_path)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = server.log_text()
            if "address already in use" in text:
                raise PortTaken(f"port {port} taken:\n{text[-1000:]}")
            raise RuntimeError(f"server exited early:\n{text[-3000:]}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1.0).status_code in (200, 503):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not ready in {ready_timeout_s}s:\n{server.log_text()[-3000:]}")


@contextmanager
def running_servers(
    count: int, env: Mapping[str, str | None], log_dir: Path, **kwargs: object
) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    try:
        for _ in range(count):
            servers.append(start_server(env, log_dir, **kwargs))  # type: ignore[arg-type]
        yield servers
    finally:
        for server in servers:
            server.stop()


def child_pids(pid: int) -> dict[int, str]:
    """Live (non-zombie) children of `pid` and their command names, from /proc."""
    children: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            children[int(entry.name)] = comm
    return children


def is_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


@contextmanager
def hung(server: EmbeddedRedis) -> Iterator[None]:
    """The Redis server stops answering (SIGSTOP) but keeps its sockets, until the end."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
