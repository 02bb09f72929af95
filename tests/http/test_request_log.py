"""The per-request log line: written without structlog's chain, in structlog's shape."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import pytest
import structlog

from healthforms import logs


@pytest.fixture
def logging_at() -> Iterator[Callable[[str], None]]:
    before = logs._configured_level

    def configure(level: str) -> None:
        logs._configured_level = None  # force a reconfigure
        logs.configure_logging(level)

    yield configure
    logs._configured_level = None
    if before is not None:
        import logging

        logs.configure_logging(logging.getLevelName(before).lower())


def test_the_line_matches_what_structlog_writes(
    logging_at: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    logging_at("info")
    fields = {"request_id": "abc123def4567890", "method": "GET", "route": "/api/x"}
    structlog.get_logger("healthforms.http").info("request", **fields, status=200, duration_ms=1.25)
    logs.write_request_line("abc123def4567890", "GET", "/api/x", 200, 1.25)
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines()[-2:])
    assert list(first) == list(second)  # same keys, same order
    first_ts, second_ts = first.pop("timestamp"), second.pop("timestamp")
    assert first == second
    for stamp in (first_ts, second_ts):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamp)


def test_nothing_is_written_above_info(
    logging_at: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    logging_at("warning")
    logs.write_request_line("abc123def4567890", "GET", "/api/x", 200, 1.25)
    assert capsys.readouterr().out == ""
