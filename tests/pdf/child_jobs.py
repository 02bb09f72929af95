"""Jobs for the child-process tests: module-level (a child imports them by name) and
light (no import of the app), so a child starts in milliseconds."""

from __future__ import annotations

import os
import time
from pathlib import Path


def echo_twice(data: bytes) -> bytes:
    return data * 2


def spin_forever(pid_file: str) -> bytes:
    """Write the child's pid, then burn CPU until killed."""
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        pass


def burn_then_answer(seconds: float) -> bytes:
    """About `seconds` of CPU, then a short answer."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return b"done"


def fail_with_patient_data(_: bytes) -> bytes:
    raise ValueError("Zoë Ångström, DOB 1984-02-29")


def not_bytes(_: bytes) -> bytes:
    return "text"  # type: ignore[return-value]
