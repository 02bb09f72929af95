"""Time as the service reads and writes it: aware UTC datetimes, epoch milliseconds, RFC 3339."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from healthforms.errors import ValidationFailed


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def rfc3339(at: datetime) -> str:
    """The contract's time format: UTC, whole seconds, `Z`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str, field: str) -> datetime:
    """An RFC 3339 time with an offset (or Z), as UTC; a 422 naming `field` otherwise."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationFailed(
            {field: "must be an RFC 3339 time, e.g. 2026-11-25T19:54:37Z"}
        ) from None
    if parsed.tzinfo is None:
        raise ValidationFailed({field: "must carry a time zone offset or Z"})
    return parsed.astimezone(UTC)
