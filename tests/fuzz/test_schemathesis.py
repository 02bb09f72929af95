"""Fuzz every operation of the app's own OpenAPI document (GET /openapi.json) with
schemathesis against a real server process, signed in as an admin with a CSRF token.

Checks: no 5xx for any generated input, and a response whose status the document
declares matches the declared schema. Bounded: FUZZ_EXAMPLES per operation (default 15).
Operations that would end the fuzzing session itself (logout, revoking sessions) are
excluded; every other unsafe request carries the token, so the handlers behind the
CSRF check are reached too.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support import legs, workflow
from tests.support.servers import ServerProcess, start_server

pytestmark = [pytest.mark.fuzz, pytest.mark.multiprocess, pytest.mark.timeout(900)]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
# Ending the session being fuzzed with would only turn the rest into 401s.
SESSION_ENDING = r"^/api/auth/(logout|logout-all|sessions/.*)$"


class Target:
    def __init__(self, server: ServerProcess, headers: dict[str, str]) -> None:
        self.server = server
        self.headers = headers


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    database_url = legs.create_database(tmp / "db")
    from healthforms.redis.embedded import EmbeddedRedis

    redis_server = EmbeddedRedis.start(
        tmp / "redis", binary=legs.private_server_binary(), appendonly=False
    )
    env = workflow.server_env(
        database_url=database_url,
        redis_url=redis_server.url,
        data_dir=tmp / "data",
        extra={"HEALTHFORMS_LOG_LEVEL": "warning"},
    )
    server = start_server(env, tmp / "logs")
    try:
        headers: dict[str, str] = {}
        try:
            email = f"fuzz-{secrets.token_hex(3)}@fuzz.example"
            workflow.create_admin(env, email)
            staff = workflow.login(server.base_url, email)
            headers = staff.headers(unsafe=True)
        except workflow.FeatureMissing:
            pass  # fuzz what exists, unauthenticated
        yield Target(server, headers)
        assert "unhandled_exception" not in server.log_text()
    finally:
        server.stop()
        redis_server.stop()
        legs.drop_database(database_url)


def _operations(target: Target) -> list[Any]:
    document = httpx.get(f"{target.server.base_url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document).exclude(path_regex=SESSION_ENDING)
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Ok):
            operations.append(result.ok())
        else:
            raise AssertionError(f"the OpenAPI document has an invalid operation: {result.err()}")
    return operations


def test_api_answers_every_generated_input_without_5xx_and_per_schema(target: Target) -> None:
    # schemathesis' pytest plugin (from_fixture) does not run on pytest 9; drive its
    # strategies with hypothesis directly, one bounded run per operation.
    failures: dict[str, str] = {}
    statuses: Counter[str] = Counter()
    operations = _operations(target)
    assert operations, "the OpenAPI document lists no operation"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(
                base_url=target.server.base_url,
                headers=target.headers,
                checks=[not_a_server_error, response_schema_conformance],
                timeout=30,
            )
            statuses[f"{case.operation.label} {response.status_code}"] += 1

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    print(
        f"{len(operations)} operations; "
        + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    )
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    if target.headers:
        # Signed in: the fuzzing reached handlers behind the session and CSRF checks.
        reached = [k for k in statuses if "/api/" in k and "/public/" not in k and " 2" in k]
        assert reached, f"no authenticated operation answered 2xx: {dict(statuses)}"


def test_openapi_document_is_served(target: Target) -> None:
    response = httpx.get(f"{target.server.base_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/health" in document["paths"]
