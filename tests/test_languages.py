"""languages.py: negotiation, late translation of messages, and the catalogues themselves
(complete in Spanish, and the .pot up to date with the code)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from healthforms.errors import RateLimited, ValidationFailed
from healthforms.languages import (
    LOCALE_DIR,
    N_,
    Message,
    choose_language,
    negotiate,
    script_messages,
    translate,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("es", "es"),
        ("es-MX", "es"),
        ("ES-mx,en;q=0.5", "es"),
        ("en", "en"),
        ("en-US,en;q=0.9", "en"),
        ("fr", "en"),
        ("fr-FR,fr;q=0.9", "en"),
        ("fr;q=1, es;q=0.8, en;q=0.5", "es"),
        ("en;q=0.4, es;q=0.9", "es"),
        ("es;q=0, en", "en"),
        ("es;q=0", "en"),
        ("*", "en"),
        ("", "en"),
        (None, "en"),
        ("es;q=abc, en", "en"),
        ("\x00;;;,,,", "en"),
        ("x" * 5000 + ",es", "en"),  # bounded: a huge header is read only so far
    ],
)
def test_negotiation_follows_accept_language_and_q_values(
    header: str | None, expected: str
) -> None:
    assert negotiate(header) == expected


def test_the_switch_and_its_cookie_win_over_the_browser() -> None:
    assert choose_language("en", "es", "es") == "en"
    assert choose_language(None, "es", "en") == "es"
    assert choose_language("xx", "zz", "es-MX") == "es"
    assert choose_language("", None, None) == "en"


def test_a_message_reads_as_english_and_translates_late() -> None:
    message = N_("must be at most {limit} characters", limit=10)
    assert message == "must be at most 10 characters"
    assert translate(message, "es") == "debe tener como máximo 10 caracteres"
    assert translate(message, "en") == "must be at most 10 characters"
    assert translate("is required", "es") == "es obligatorio"
    assert translate("a text nobody translated", "es") == "a text nobody translated"
    assert copy.deepcopy(message).in_language("es") == translate(message, "es")
    assert isinstance(message, Message)


def test_error_bodies_are_written_in_the_asked_language() -> None:
    error = ValidationFailed({"age": N_("must be at least {limit}", limit="18")})
    assert error.body() == {
        "error": "Some fields are not valid.",
        "code": "validation_error",
        "fields": {"age": "must be at least 18"},
    }
    assert error.body("es") == {
        "error": "Algunos campos no son válidos.",
        "code": "validation_error",
        "fields": {"age": "debe ser como mínimo 18"},
    }
    assert RateLimited().body("es")["error"] == "Demasiadas solicitudes. Inténtelo más tarde."


def _pot() -> dict[str | tuple[str, ...], set[str]]:
    with (LOCALE_DIR / "messages.pot").open("rb") as source:
        catalog = read_po(source)
    return {
        (m.id if isinstance(m.id, str) else tuple(m.id)): {path for path, _ in m.locations}
        for m in catalog
        if m.id
    }


def test_the_pot_is_up_to_date_with_the_code() -> None:
    """Every marked text of the code is in messages.pot, and nothing else (re-run the
    `pybabel extract` of docs/languages.md when this fails)."""
    with (REPO / "babel.cfg").open(encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)  # type: ignore[no-untyped-call]
    found: dict[str | tuple[str, ...], set[str]] = {}
    for filename, _, message, _, _ in extract_from_dir(
        str(REPO), method_map, options_map, directory_filter=lambda d: ".venv" not in d
    ):
        key = message if isinstance(message, str) else tuple(message)
        found.setdefault(key, set()).add(filename.replace("\\", "/"))
    assert found == _pot()


def test_every_msgid_has_a_spanish_text() -> None:
    with (LOCALE_DIR / "es" / "LC_MESSAGES" / "messages.po").open("rb") as source:
        spanish = {
            (m.id if isinstance(m.id, str) else tuple(m.id)): m
            for m in read_po(source, locale="es")
            if m.id
        }
    for msgid in _pot():
        entry = spanish.get(msgid)
        assert entry is not None, f"no Spanish entry for {msgid!r}"
        texts = [entry.string] if isinstance(entry.string, str) else list(entry.string or ())
        assert texts and all(t.strip() for t in texts), f"empty Spanish text for {msgid!r}"
        assert not entry.fuzzy, f"fuzzy Spanish text for {msgid!r}"


def test_the_page_scripts_get_their_texts_and_only_theirs() -> None:
    texts = script_messages("es")
    assert texts["Some answers are not valid."] == "Algunas respuestas no son válidas."
    # (The field checks' words now come from the server, in data-rules: nojs.)
    assert texts["Send"] == "Enviar"
    assert texts["Page {page} of {pages}"] == "Página {page} de {pages}"
    assert "is required" not in texts  # a server message, translated by the server
    assert script_messages("en") == {}
