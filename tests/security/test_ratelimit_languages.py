"""The rate-limit layer's own 429 speaks the language the client asks for (docs/languages.md)."""

from __future__ import annotations

from tests.security.conftest import AppFactory, client_for


async def test_a_public_429_is_in_spanish_when_asked_and_english_otherwise(
    app_factory: AppFactory,
) -> None:
    async with (
        app_factory(rate_limit_public="1/min+0") as app,
        client_for(app, "203.0.113.41") as client,
    ):
        first = await client.get("/api/public/forms/nope")
        spanish = await client.get("/api/public/forms/nope", headers={"Accept-Language": "es"})
        english = await client.get("/api/public/forms/nope")
    assert first.status_code == 404
    assert spanish.status_code == 429
    assert spanish.json() == {
        "error": "Demasiadas solicitudes. Inténtelo más tarde.",
        "code": "rate_limited",
    }
    assert english.status_code == 429
    assert english.json()["error"] == "Too many requests. Try again later."
