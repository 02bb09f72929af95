"""Child processes for CPU-heavy work on untrusted input, each killed at a hard time limit.

Why a process and not a thread: a thread cannot be stopped, and pure-Python work holds
the GIL, so a slow job in a thread still slows every request of the event loop. A child
process is killed (SIGKILL) the moment its time is up, and the event loop only ever
awaits a pipe.

- One child per job, forked by multiprocessing's fork server, which imports the job's
  module once (its "preload"): a fork then costs milliseconds, not an interpreter start,
  and the fork server is a clean single-threaded process, so no lock one of our threads
  held is inherited. Nothing starts before the first job (lazy), and `close()` (the app
  lifespan) kills the children still running.
- At most `slots` children at once per service process: a job that finds no free slot
  within its wait raises ChildrenBusy instead of queueing without bound.
- The time limit is wall clock, enforced by the parent from the moment the child says
  it runs the job (its start-up, bounded apart, is not the job's); the child's own
  RLIMIT_CPU stops it as well should the parent fail to (a stalled parent, a crash).
- A job takes one picklable argument and returns bytes. The reply is framed raw bytes,
  never a pickle: whatever a hostile input might make of the child, the parent only
  reads a status, a CPU time and a byte string from it. A failing job reports its
  exception's type name only (its message could quote the input).
- The child reports the CPU seconds it used, so callers can charge for them.

Works the same under pytest-xdist and uvicorn workers: each process has its own fork
server and its own children.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import resource
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

T = TypeVar("T")

# The child's first byte: it runs the job now (the time limit starts).
_READY = b"R"
# Reply frame: status (1 byte), CPU seconds (double), payload length (8 bytes), payload.
_HEADER = struct.Struct("!Bdq")
_OK, _FAILED = 0, 1
# From start() to "ready": a fork, the job's imports if the fork server did not preload
# them, unpickling the argument. Not the job's time, but bounded all the same.
START_TIMEOUT_S = 30.0
# A reply larger than this is refused (a job gone wrong must not fill the parent's memory).
MAX_REPLY_BYTES = 256 * 1024 * 1024
_REAP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ChildResult:
    value: bytes
    cpu_s: float  # CPU time the child used for the job
    wall_s: float  # from start to reply, as the parent saw it


class ChildTimedOut(Exception):
    """The job ran past its time limit and its process was killed."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"killed after {timeout_s:g} s")
        self.timeout_s = timeout_s


class ChildFailed(Exception):
    """The job raised (`error_type` names the exception) or its process died."""

    def __init__(self, error_type: str) -> None:
        super().__init__(error_type)
        self.error_type = error_type


class ChildrenBusy(Exception):
    """Every slot stayed taken for the whole wait (or the pool is closed)."""


def _child_main(sender: Connection, job: Callable[[Any], bytes], arg: Any, cpu_s: int) -> None:
    """Run in the child: "ready", then the job under an RLIMIT_CPU, its reply framed onto
    the pipe."""
    # SIGXCPU at the soft limit, SIGKILL at the hard one: a runaway job stops even if
    # the parent is not there to kill it. Counted from here: the imports before (a job
    # whose module the fork server did not preload) are not the job's.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + cpu_s
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    with open(os.dup(sender.fileno()), "wb") as pipe:  # buffered: writes it all
        sender.close()
        pipe.write(_READY)  # the parent's clock starts now
        pipe.flush()
        started = time.process_time()
        try:
            value = job(arg)
            if not isinstance(value, bytes | bytearray):
                raise TypeError("a child job must return bytes")
            status, payload = _OK, bytes(value)
        except Exception as exc:  # noqa: BLE001 - reported to the parent by type only
            status, payload = _FAILED, type(exc).__name__.encode("ascii", "replace")[:200]
        used = time.process_time() - started
        pipe.write(_HEADER.pack(status, used, len(payload)))
        pipe.write(payload)


class ChildProcesses:
    """Run `job(arg)` in a child process with a hard time limit, `slots` at a time."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._free = asyncio.Semaphore(slots)
        self._running: set[BaseProcess] = set()
        self._closed = False

    @property
    def running(self) -> int:
        """Children alive now (started and not yet reaped)."""
        return len(self._running)

    async def run(
        self, job: Callable[[T], bytes], arg: T, *, timeout_s: float, wait_s: float
    ) -> ChildResult:
        """`job(arg)` in a child: its bytes and CPU time, or ChildTimedOut (the child
        killed), ChildFailed, ChildrenBusy (no free slot within `wait_s`)."""
        if self._closed:
            raise ChildrenBusy()
        try:
            async with asyncio.timeout(wait_s):
                await self._free.acquire()
        except TimeoutError:
            raise ChildrenBusy() from None
        try:
            return await self._run(job, arg, timeout_s)
        finally:
            self._free.release()

    async def close(self) -> None:
        """Kill every child still running (app shutdown); later jobs raise ChildrenBusy."""
        self._closed = True
        for process in list(self._running):
            _kill(process)

    async def _run(self, job: Callable[[T], bytes], arg: T, timeout_s: float) -> ChildResult:
        context = multiprocessing.get_context("forkserver")
        # Read once, when the fork server starts (the first job of this process): it
        # imports the job's module, and the main script, which a child would otherwise
        # import again for every job (multiprocessing's "safe importing of main module":
        # our entry points guard it with `if __name__ == "__main__"`).
        context.set_forkserver_preload(["__main__", job.__module__])
        receiver, sender = context.Pipe(duplex=False)
        cpu_limit = max(1, math.ceil(timeout_s)) + 1
        process = context.Process(
            target=_child_main, args=(sender, job, arg, cpu_limit), daemon=True
        )
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            # start() talks to the fork server (and starts it the first time): a thread.
            await asyncio.to_thread(process.start)
        except BaseException:
            receiver.close()
            sender.close()
            raise
        self._running.add(process)
        sender.close()  # ours: the child holds its own copy, so EOF means it is gone
        reader = asyncio.StreamReader(limit=2**16)
        transport: asyncio.ReadTransport | None = None
        replied = False
        try:
            pipe = os.fdopen(os.dup(receiver.fileno()), "rb", buffering=0)
            receiver.close()
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    await _read_ready(reader)
            except TimeoutError:
                raise ChildFailed("did not start") from None
            try:
                async with asyncio.timeout(timeout_s):
                    status, cpu_s, payload = await _read_reply(reader)
            except TimeoutError:
                raise ChildTimedOut(timeout_s) from None
            replied = True
        finally:
            # Timed out, failed or cancelled: the child never outlives the job.
            if not replied:
                _kill(process)
            if transport is not None:
                transport.close()
            await _reap(process)
            self._running.discard(process)
        if status != _OK:
            raise ChildFailed(payload.decode("ascii", "replace"))
        return ChildResult(value=payload, cpu_s=cpu_s, wall_s=time.monotonic() - started)


async def _read_ready(reader: asyncio.StreamReader) -> None:
    try:
        if await reader.readexactly(len(_READY)) != _READY:
            raise ChildFailed("bad reply")
    except asyncio.IncompleteReadError:
        raise ChildFailed("exited") from None


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, float, bytes]:
    try:
        status, cpu_s, size = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        if status not in (_OK, _FAILED) or not 0 <= size <= MAX_REPLY_BYTES:
            raise ChildFailed("bad reply")
        return status, cpu_s, await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        # The pipe closed early: the child died (killed, out of memory, RLIMIT_CPU).
        raise ChildFailed("exited") from None


def _kill(process: BaseProcess) -> None:
    """SIGKILL the child unless it has already exited."""
    # `exitcode` asks the fork server's sentinel: while it has no status, the child is
    # not reaped, so its pid cannot have gone to another process yet.
    with contextlib.suppress(ValueError, OSError):
        if process.exitcode is None:
            process.kill()


async def _reap(process: BaseProcess) -> None:
    """Wait for the child's exit status (off the loop) and free its resources."""
    for _ in range(2):
        with contextlib.suppress(ValueError, OSError):
            await asyncio.to_thread(process.join, _REAP_TIMEOUT_S)
        if process.exitcode is not None:
            with contextlib.suppress(ValueError):
                process.close()
            return
        _kill(process)  # replied but never exited: it goes now
