"""The name a response's PDF is saved under: `<form>_<yyyy-mm-dd>_<confirmation>.pdf`.

A clinic files these PDFs by the dozen, so each gets its own name, made of what staff
look for (the form, the day it was sent, the code the patient was shown), e.g.
`new-patient-intake_2026-12-06_K7M2Q9QX4B.pdf`. Never the patient's name or any answer:
file names travel where PHI must not (download folders, e-mail attachments, sync
logs, a shared drive's index).

Two spellings (RFC 6266, RFC 5987): an ASCII slug for `filename=` that every browser,
OS and mail client keeps as it is, and, only for a title outside ASCII, the same slug
with its letters kept in `filename*=UTF-8''...` ("anamnèse-erwachsene_...").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime

# Letters NFKD does not take apart into an ASCII letter and a mark.
_ASCII_SPELLING = str.maketrans(
    {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}
)
# Runs of letters and digits of any script; everything else separates words.
_WORD = re.compile(r"[^\W_]+")
_CODE = re.compile(r"[^A-Za-z0-9]+")
MAX_SLUG = 80
FALLBACK_SLUG = "response"


@dataclass(frozen=True, slots=True)
class PdfFileName:
    """A download's name: `ascii` always; `exact` differs only for non-ASCII titles."""

    ascii: str
    exact: str


def slug(text: str, *, ascii_only: bool) -> str:
    """Lower-case words joined by '-', at most MAX_SLUG characters, cut at a word; with
    `ascii_only` accents dropped and letters outside ASCII left out. "" when no word is
    left."""
    text = unicodedata.normalize("NFKC", text).lower()
    if ascii_only:
        decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII_SPELLING))
        text = "".join(ch for ch in decomposed if ch.isascii())
    words = _WORD.findall(text)
    out = ""
    for word in words:
        candidate = f"{out}-{word}" if out else word
        if len(candidate) > MAX_SLUG:
            return out or word[:MAX_SLUG]
        out = candidate
    return out


def pdf_filename(
    title: str, submitted_at: datetime | None = None, confirmation: str = ""
) -> PdfFileName:
    """`<form slug>_<yyyy-mm-dd (UTC)>_<confirmation code>.pdf` (API.md "Pages")."""
    tail = []
    if submitted_at is not None:
        tail.append(submitted_at.astimezone(UTC).strftime("%Y-%m-%d"))
    code = _CODE.sub("", confirmation)[:32]
    if code:
        tail.append(code)

    def name(stem: str) -> str:
        return "_".join([stem or FALLBACK_SLUG, *tail]) + ".pdf"

    ascii_name = name(slug(title, ascii_only=True))
    exact = name(slug(title, ascii_only=False))
    return PdfFileName(ascii=ascii_name, exact=exact)


def in_language(name: PdfFileName, language: str) -> PdfFileName:
    """The name of a copy printed in another language: `..._<code>_<language>.pdf`."""
    tag = _CODE.sub("", language)[:16]
    if not tag:
        return name
    return PdfFileName(
        ascii=f"{name.ascii.removesuffix('.pdf')}_{tag}.pdf",
        exact=f"{name.exact.removesuffix('.pdf')}_{tag}.pdf",
    )
