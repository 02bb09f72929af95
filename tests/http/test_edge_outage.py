"""The edge middleware's last line of defence: a lost database is a 503, a bug a 500."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError, OperationalError

from healthforms.db.engine import DatabaseUnavailable
from healthforms.db.outage import is_database_outage
from healthforms.http.edge import code_locations


class _Driver(Exception):
    sqlstate: str | None = None


class _AdminShutdown(_Driver):
    sqlstate = "57P01"  # terminating connection due to administrator command


def _raising(app: FastAPI, path: str, exc: Exception) -> None:
    async def route() -> None:
        raise exc

    app.add_api_route(path, route, methods=["GET"])


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("SELECT 1", {}, _Driver("connection refused")),
        DatabaseUnavailable("OSError"),
        ConnectionRefusedError(111, "Connect call failed"),
    ],
    ids=["operational", "database-unavailable", "refused"],
)
async def test_a_lost_database_answers_503_unavailable_with_a_body(
    app: FastAPI, client: httpx.AsyncClient, exc: Exception
) -> None:
    _raising(app, "/boom-db", exc)
    response = await client.get("/boom-db")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert response.headers["x-request-id"]
    assert response.headers["cache-control"] == "no-store"


async def test_any_other_unhandled_error_is_still_a_bare_500(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _raising(app, "/boom-bug", RuntimeError("patient name must never be echoed"))
    response = await client.get("/boom-bug")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error.", "code": "internal_error"}
    assert "patient" not in response.text


def test_the_500_log_line_names_code_locations_and_never_the_message() -> None:
    def feature() -> None:
        try:
            raise KeyError("Jane Patient")
        except KeyError:
            raise RuntimeError("patient name must never be echoed") from None

    try:
        feature()
    except RuntimeError as exc:
        where = code_locations(exc)
    assert any(place.endswith(":feature") for place in where), where
    assert where[-1] == "<- RuntimeError"
    assert all(place.startswith(("http/", "<-")) for place in where), where
    assert "patient" not in " ".join(where).lower()


def test_outage_is_found_through_the_cause_chain() -> None:
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as inner:
            raise ValueError("wrapped by a feature") from inner
    except ValueError as outer:
        assert is_database_outage(outer)
    invalidated = DBAPIError("SELECT 1", {}, _Driver("gone"), connection_invalidated=True)
    assert is_database_outage(invalidated)
    assert is_database_outage(DBAPIError("SELECT 1", {}, _AdminShutdown("terminating")))
    assert not is_database_outage(DBAPIError("SELECT 1", {}, _Driver("syntax error")))
    assert not is_database_outage(KeyError("x"))
