"""The importer against mutated Questionnaires: every body is a 422 or an import whose
fields validate, never another exception (which the API would answer with a 500).

Seeded: a failure names its seed and replays. HEALTHFORMS_SOAK=1 runs 30x more.
"""

from __future__ import annotations

import copy
import os
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from healthforms.errors import ValidationFailed
from healthforms.fhir.importer import import_questionnaire, validate_questionnaire
from healthforms.fhir.questionnaire import questionnaire
from healthforms.forms.models import FormVersion
from healthforms.forms.validation import validate_fields
from tests.fhir.helpers import EVERY_FIELD, TRANSLATIONS, phq9_fixture

ROUNDS = 3000 if os.environ.get("HEALTHFORMS_SOAK") == "1" else 100
ODD_VALUES: list[Any] = [
    None, 0, -1, 1.5, True, "", " ", "x" * 300, [], {}, [1], {"a": 1}, "=", "exists",
    "group", "display", "choice", "decimal", "../..", "\u0000", "🙂", 10**30,
]  # fmt: skip


def exported() -> dict[str, Any]:
    version = FormVersion(
        form_id="frm_fuzz",
        version=1,
        title="Fuzz",
        description="d",
        fields=EVERY_FIELD,
        translations=TRANSLATIONS,
        published_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return questionnaire(version, base_url="http://testserver", status="active")


def _nodes(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found.extend(_nodes(value, (*path, key)))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found.extend(_nodes(value, (*path, index)))
    return found


def mutate(tree: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A copy with 1-3 values replaced, removed or duplicated."""
    tree = copy.deepcopy(tree)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_nodes(tree)[1:])
        parent: Any = tree
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = rng.random()
        if action < 0.5:
            parent[last] = rng.choice(ODD_VALUES)
        elif action < 0.8:
            del parent[last]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        else:
            parent[last] = copy.deepcopy(tree.get("item") or [])
    return tree


@pytest.mark.parametrize("source", ["export", "phq9"])
def test_mutated_questionnaires_are_imported_or_refused_never_crash(source: str) -> None:
    base = exported() if source == "export" else phq9_fixture()
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    outcomes = {"imported": 0, "refused": 0}
    for round_ in range(ROUNDS):
        body = mutate(base, rng)
        try:
            data = validate_questionnaire(body)
            result = import_questionnaire(data)
        except ValidationFailed:
            outcomes["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point: name anything else
            pytest.fail(f"seed {seed} round {round_}: {type(exc).__name__}: {exc}")
        # What it imports is a form the editor would have accepted.
        validate_fields([f.to_json() for f in result.fields])
        outcomes["imported"] += 1
    assert outcomes["imported"] > 0 and outcomes["refused"] > 0, outcomes
