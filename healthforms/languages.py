"""The languages patient pages and their messages speak: English and Spanish.

Texts are gettext catalogues kept as sources in the repository
(locale/messages.pot, locale/<lang>/LC_MESSAGES/messages.po; docs/languages.md has
the `pybabel` recipe). Each `.po` is compiled in memory the first time a process needs
it (Babel's `read_po` + `write_mo`), so no compiled `.mo` can go stale in the tree.

The language of a patient page is chosen, first match wins, from: a `?lang=` query (the
page's switch), the `lang` cookie the switch leaves, then the browser's
Accept-Language (Babel's `negotiate_locale`, q-values honoured). The JSON API reads
Accept-Language only and answers English unless asked otherwise.

Server messages a patient may see are written in English, as msgids marked with `N_`:
`N_("must be at most {limit} characters", limit=10)` is a `Message`, a `str` that
reads as the English text (so every English caller and test sees what it always saw)
and remembers its msgid and parameters, so the answer can be written in any language
at the last moment (`translate`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from babel.core import negotiate_locale
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

DEFAULT_LANGUAGE = "en"
SUPPORTED_LANGUAGES = ("en", "es")
# Each language named in itself: the switch must be readable by those who need it.
LANGUAGE_NAMES = {"en": "English", "es": "Español"}
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
CATALOGUE_DOMAIN = "messages"
LANGUAGE_COOKIE = "lang"
LANGUAGE_QUERY = "lang"
# A year: a patient who chose Spanish once keeps it on the next form.
LANGUAGE_COOKIE_MAX_AGE = 365 * 24 * 3600

# A header is client input: bounded work whatever its length.
_MAX_ACCEPT_LANGUAGE = 1024
_MAX_RANGES = 20
_RANGE_RE = re.compile(r"^(\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*)$")
_Q_RE = re.compile(r"^q=(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$", re.IGNORECASE)


class Message(str):
    """English text that remembers its msgid and parameters, to be translated late."""

    __slots__ = ("msgid", "params")
    msgid: str
    params: Mapping[str, object]

    def __new__(cls, msgid: str, params: Mapping[str, object]) -> Message:
        message = super().__new__(cls, msgid.format(**params) if params else msgid)
        message.msgid = msgid
        message.params = dict(params)
        return message

    def __reduce__(self) -> tuple[object, ...]:
        return (Message, (self.msgid, self.params))

    def in_language(self, language: str) -> str:
        text = translations(language).gettext(self.msgid)
        return text.format(**self.params) if self.params else text


def N_(msgid: str, **params: object) -> Message:  # noqa: N802 - the gettext marker name
    """A message for the catalogue (`pybabel extract` finds `N_`), English until translated."""
    return Message(msgid, params)


def is_supported(language: object) -> bool:
    return isinstance(language, str) and language in SUPPORTED_LANGUAGES


def _catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{CATALOGUE_DOMAIN}.po"


@cache
def catalogue(language: str) -> Catalog | None:
    """The language's `.po` as read (None for the default language: msgids are English)."""
    if language == DEFAULT_LANGUAGE or not is_supported(language):
        return None
    with _catalogue_path(language).open("rb") as source:
        return read_po(source, locale=language, domain=CATALOGUE_DOMAIN)


@cache
def translations(language: str) -> NullTranslations:
    """gettext translations of `language`, compiled from its `.po` in memory once."""
    source = catalogue(language)
    if source is None:
        return NullTranslations()
    compiled = io.BytesIO()
    write_mo(compiled, source)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return Translations(fp=compiled, domain=CATALOGUE_DOMAIN)


def translate(text: str, language: str) -> str:
    """`text` in `language`: a `Message` with its parameters, a plain msgid as is; text
    the catalogue does not know stays English."""
    if language == DEFAULT_LANGUAGE or not is_supported(language):
        return str(text)
    if isinstance(text, Message):
        return text.in_language(language)
    return translations(language).gettext(str(text))


def translate_fields(fields: Mapping[str, str], language: str) -> dict[str, str]:
    return {key: translate(value, language) for key, value in fields.items()}


def _ranges(header: str) -> list[str]:
    """The language ranges of an Accept-Language header, most wanted first; q=0 dropped,
    malformed parts ignored (never an error: it is a hint)."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header[:_MAX_ACCEPT_LANGUAGE].split(",")[:_MAX_RANGES]):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        if not _RANGE_RE.match(tag):
            continue
        quality = 1.0
        if params:
            match = _Q_RE.match(params.strip().replace(" ", ""))
            if match is None:
                continue
            quality = float(match.group(1))
        if quality > 0:
            weighted.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(weighted)]


def negotiate(accept_language: str | None) -> str:
    """The supported language the header asks for most (es-MX reads as es), else English."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    chosen = negotiate_locale(_ranges(accept_language), SUPPORTED_LANGUAGES, sep="-")
    return chosen if chosen in SUPPORTED_LANGUAGES else DEFAULT_LANGUAGE


def choose_language(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """A patient page's language: the switch's query, its cookie, then the browser's."""
    for explicit in (query, cookie):
        if is_supported(explicit):
            return str(explicit)
    return negotiate(accept_language)


@cache
def script_messages(language: str) -> dict[str, str]:
    """The catalogue's texts the page scripts use (their msgids were extracted from
    `.js` files), translated: what a patient page hands its scripts."""
    source = catalogue(language)
    if source is None:
        return {}
    return {
        str(entry.id): str(entry.string)
        for entry in source
        if entry.id
        and isinstance(entry.id, str)
        and entry.string
        and not entry.fuzzy
        and any(str(path).endswith(".js") for path, _ in entry.locations)
    }
