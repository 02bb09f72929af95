"""docs/operations/hipaa-164-312.md names, for each technical safeguard, the tests that
fail when it breaks: every one of those tests must exist, and every safeguard must name
at least one, so the map cannot rot while the tests move on."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
MAP = ROOT / "docs" / "operations" / "hipaa-164-312.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
SAFEGUARDS = (
    "(a)(1)",
    "(a)(2)(i)",
    "(a)(2)(ii)",
    "(a)(2)(iii)",
    "(a)(2)(iv)",
    "(b)",
    "(c)(1)",
    "(c)(2)",
    "(d)",
    "(e)(1)",
    "(e)(2)(i)",
    "(e)(2)(ii)",
)


def _sections() -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in MAP.read_text().split("\n### ")[1:]:
        heading, _, body = chunk.partition("\n")
        match = re.match(r"§164\.312(\S+)", heading)
        if match:
            found[match.group(1)] = body
    return found


def test_every_safeguard_has_a_section_naming_tests() -> None:
    sections = _sections()
    assert set(sections) == set(SAFEGUARDS)
    for safeguard in SAFEGUARDS:
        assert REFERENCE.search(sections[safeguard]), f"§164.312{safeguard} names no test"


def test_every_test_the_map_names_exists() -> None:
    references = REFERENCE.findall(MAP.read_text())
    assert len(references) >= 30
    missing = []
    for file, name in references:
        path = ROOT / file
        source = path.read_text() if path.is_file() else ""
        if not re.search(rf"^(async )?def {name}\(", source, re.M):
            missing.append(f"{file}::{name}")
    assert not missing, f"the HIPAA map names tests that do not exist: {missing}"
