"""`healthforms serve` on the embedded default, as a real process: no configuration at all."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.cli.test_config import run_cli
from tests.support import legs
from tests.support.servers import ServerProcess, child_pids, is_alive, start_server

pytestmark = pytest.mark.multiprocess

UNSET = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_ADDR",
    "REDIS_PASSWORD",
    "HEALTHFORMS_ENV",
    "HEALTHFORMS_ENCRYPTION_KEY",
)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A short path: the embedded server's unix socket must fit in sun_path."""
    folder = Path(tempfile.mkdtemp(prefix="hf-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def embedded_env(data_dir: Path) -> dict[str, str | None]:
    env: dict[str, str | None] = dict.fromkeys(UNSET)
    env["HEALTHFORMS_DATA_DIR"] = str(data_dir)
    env["HEALTHFORMS_REDIS_SERVER_BIN"] = legs.private_server_binary()
    env["HEALTHFORMS_LOG_LEVEL"] = "info"
    return env


def redis_children(server: ServerProcess) -> list[int]:
    return [
        pid
        for pid, name in child_pids(server.process.pid).items()
        if "valkey" in name or "redis" in name
    ]


def wait_dead(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.05)
    return False


def serve(data_dir: Path, log_dir: Path, **kwargs: object) -> ServerProcess:
    return start_server(embedded_env(data_dir), log_dir, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_embedded_default_serves_healthy_and_stops_its_child(
    data_dir: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    server = serve(data_dir, tmp_path / "logs")
    try:
        response = httpx.get(f"{server.base_url}/health", timeout=5)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "healthy"
        assert body["database"] == {"status": "connected", "backend": "sqlite"}
        assert body["redis"]["status"] == "connected"
        children = redis_children(server)
        assert len(children) == 1
        child = children[0]
        assert (data_dir / "healthforms.db").is_file()
        assert (data_dir / "redis" / "redis.sock").exists()
        server.process.send_signal(stop_signal)
        assert server.process.wait(timeout=20) is not None
        assert wait_dead(child), "embedded server outlived the service"
    finally:
        server.stop()
    log = server.log_text()
    assert "EMBEDDED MODE" in log  # says loudly that this is for one machine


def test_sigkill_of_the_service_takes_the_embedded_server_down(
    data_dir: Path, tmp_path: Path
) -> None:
    server = serve(data_dir, tmp_path / "logs")
    try:
        (child,) = redis_children(server)
        server.process.kill()
        server.process.wait(timeout=10)
        assert wait_dead(child), "orphan server left after SIGKILL of the parent"
    finally:
        server.stop()


async def _set_and_get(socket_path: Path, key: str, value: str | None) -> bytes | None:
    client = Redis(unix_socket_path=str(socket_path))
    try:
        if value is not None:
            await client.set(key, value, ex=3600)
        value_read = await client.get(key)
        assert value_read is None or isinstance(value_read, bytes)
        return value_read
    finally:
        await client.aclose()


def test_aof_keeps_keys_and_the_key_file_is_private_and_stable(
    data_dir: Path, tmp_path: Path
) -> None:
    socket_path = data_dir / "redis" / "redis.sock"
    server = serve(data_dir, tmp_path / "logs")
    try:
        asyncio.run(_set_and_get(socket_path, "hf:survivor", "still-here"))
        key_file = data_dir / "encryption.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        first_key = key_file.read_text()
    finally:
        server.stop()
    assert (data_dir / "redis" / "appendonlydir").is_dir() or any(
        p.name.startswith("appendonly") for p in (data_dir / "redis").iterdir()
    )
    server = serve(data_dir, tmp_path / "logs")
    try:
        assert asyncio.run(_set_and_get(socket_path, "hf:survivor", None)) == b"still-here"
        assert key_file.read_text() == first_key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert [p.name for p in data_dir.iterdir() if "encryption" in p.name] == ["encryption.key"]
    finally:
        server.stop()


def test_two_workers_share_one_embedded_server(data_dir: Path, tmp_path: Path) -> None:
    server = serve(data_dir, tmp_path / "logs", workers=2)
    try:
        children = child_pids(server.process.pid)
        valkeys = redis_children(server)
        assert len(valkeys) == 1, children
        workers = [pid for pid in children if pid not in valkeys]
        assert len(workers) >= 2, children
        for worker in workers:
            assert not [n for n in child_pids(worker).values() if "valkey" in n or "redis" in n]
        statuses = {
            httpx.get(f"{server.base_url}/health", timeout=5).json()["status"] for _ in range(20)
        }
        assert statuses == {"healthy"}
        child = valkeys[0]
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        assert wait_dead(child)
    finally:
        server.stop()


# One embedded server per data directory (issue 12, item 20) ----------------------------
# Real processes on the embedded default; the embedded binary is always available, so
# these run on both legs (on leg B with redis-server, the leg's private-server binary).

STAFF_EMAIL = "front-desk@clinic.test"
STAFF_PASSWORD = "correct horse battery"


def cli_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in embedded_env(data_dir).items() if v is not None}
    env["HEALTHFORMS_LOG_LEVEL"] = "warning"
    return env


def create_staff_user(data_dir: Path) -> None:
    created = run_cli(
        "user", "create", "--email", STAFF_EMAIL, "--password", STAFF_PASSWORD,
        "--name", "Front Desk", "--organization", "Clinic", "--role", "admin",
        env=cli_env(data_dir),
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr


def sign_in(server: ServerProcess) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/api/auth/session-login",
        json={"email": STAFF_EMAIL, "password": STAFF_PASSWORD},
        timeout=10,
    )


def health(server: ServerProcess) -> dict[str, object]:
    body: dict[str, object] = httpx.get(f"{server.base_url}/health", timeout=5).json()
    return body


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_check_beside_a_running_server_uses_its_valkey_and_leaves_it_alone(
    data_dir: Path, tmp_path: Path
) -> None:
    create_staff_user(data_dir)
    socket_path = data_dir / "redis" / "redis.sock"
    server = serve(data_dir, tmp_path / "logs")
    try:
        (valkey,) = redis_children(server)
        result = run_cli("check", env=cli_env(data_dir))
        assert result.returncode == 0, result.stdout + result.stderr
        # Sign-ins need new connections to Valkey: before the fix, 503 from here on.
        assert sign_in(server).status_code == 200
        # The server's own Valkey, still on its socket.
        assert socket_path.exists()
        assert redis_children(server) == [valkey]
        body = health(server)
        assert body["status"] == "healthy"
        redis_block = body["redis"]
        assert isinstance(redis_block, dict) and redis_block["status"] == "connected"
        # check said whose server it used (and started none of its own).
        (redis_line,) = [line for line in result.stdout.splitlines() if line.startswith("redis:")]
        assert redis_line.startswith("redis: ok:")
        assert f"run by healthforms process {server.process.pid}" in redis_line
    finally:
        server.stop()


@pytest.mark.chaos
def test_the_service_restarts_its_valkey_when_it_dies_or_loses_its_socket(
    data_dir: Path, tmp_path: Path
) -> None:
    create_staff_user(data_dir)
    socket_path = data_dir / "redis" / "redis.sock"
    server = serve(data_dir, tmp_path / "logs")
    try:
        (first,) = redis_children(server)
        os.kill(first, signal.SIGKILL)
        assert wait_for(
            lambda: (
                len(redis_children(server)) == 1
                and redis_children(server) != [first]
                and health(server)["status"] == "healthy"
            )
        ), server.log_text()[-2000:]
        signed_in = sign_in(server)
        assert signed_in.status_code == 200
        cookie = signed_in.cookies

        (second,) = redis_children(server)
        socket_path.unlink()
        assert wait_for(lambda: socket_path.exists() and health(server)["status"] == "healthy")
        assert redis_children(server) != [second]
        assert sign_in(server).status_code == 200
        # Restarted in order (SIGTERM, append-only file written): the session survived.
        me = httpx.get(f"{server.base_url}/api/auth/me", cookies=cookie, timeout=5)
        assert me.status_code == 200
    finally:
        server.stop()
    log = server.log_text()
    assert "embedded_redis_died" in log and "embedded_redis_socket_removed" in log


def test_a_second_service_on_the_same_data_dir_shares_the_server_then_takes_it_over(
    data_dir: Path, tmp_path: Path
) -> None:
    create_staff_user(data_dir)
    first = serve(data_dir, tmp_path / "logs")
    second: ServerProcess | None = None
    try:
        (valkey,) = redis_children(first)
        second = serve(data_dir, tmp_path / "logs")
        assert redis_children(second) == []  # shares the first one's
        assert redis_children(first) == [valkey]
        assert sign_in(first).status_code == 200
        assert sign_in(second).status_code == 200
        first.stop()
        assert wait_dead(valkey)
        assert wait_for(
            lambda: len(redis_children(second)) == 1 and health(second)["status"] == "healthy"
        ), second.log_text()[-2000:]
        assert sign_in(second).status_code == 200
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert second is not None
    assert "embedded_redis_taken_over" in second.log_text()
