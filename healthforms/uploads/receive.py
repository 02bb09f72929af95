"""Reading one upload from a multipart body, in memory and within bounds.

Starlette's own form parser spools files over 1 MiB to a temporary file: a patient's
photo would sit unencrypted on disk. This reader keeps the parts in memory, takes only
the three it knows (`nonce`, `field`, `file`), stops keeping bytes past the limits (the
edge layer caps the whole body, http/edge.py), and never keeps the file's name (it
can be PHI) or trusts its declared type (the content decides, images.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from healthforms.errors import HealthformsError
from healthforms.languages import N_

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

TEXT_PART_LIMIT: Final = 512
KNOWN_PARTS: Final = frozenset({"nonce", "field", "file"})


class UploadUnreadable(HealthformsError):
    status_code, code = 400, "upload_unreadable"
    message = (
        "Send the file as multipart/form-data with the parts nonce, field and file "
        "(see docs/uploads.md)."
    )


@dataclass(frozen=True, slots=True)
class ReceivedUpload:
    nonce: str
    field_id: str
    data: bytes
    # More bytes came than `max_file_bytes`: `data` holds only the first of them.
    truncated: bool


class _MultipartReader:
    """What both readers share: each part's Content-Disposition, and whether the closing
    boundary was read (a body cut short never yields a partial file). Subclasses decide
    what to keep of each part (`_part`, `_data`)."""

    def __init__(self) -> None:
        self._field = bytearray()
        self._value = bytearray()
        self._disposition = b""
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_end": self._end,
        }

    async def read(self, content_type: str | None, body: AsyncIterator[bytes]) -> bool:
        """Feed the body through; False when it is not a whole multipart/form-data body."""
        media, options = parse_options_header(content_type or "")
        boundary = options.get(b"boundary")
        if media != b"multipart/form-data" or not boundary or len(boundary) > 200:
            return False
        try:
            parser = MultipartParser(boundary, self.callbacks())
            async for chunk in body:
                parser.write(chunk)
            parser.finalize()
        except FormParserError:
            return False
        return self.ended

    def _end(self) -> None:
        self.ended = True

    def _begin(self) -> None:
        self._disposition = b""
        self._forget()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._field).lower() == b"content-disposition":
            self._disposition = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._part(options.get(b"name", b"").decode("latin-1"), b"filename" in options)

    def _forget(self) -> None:
        """A new part begins: nothing of it is kept yet."""
        raise NotImplementedError

    def _part(self, name: str, is_file: bool) -> None:
        """The part `name` begins (a file when it has a filename): choose where it goes."""
        raise NotImplementedError

    def _data(self, data: bytes, start: int, end: int) -> None:
        raise NotImplementedError


class _Parts(_MultipartReader):
    """One upload's callbacks: each known part's bytes, bounded."""

    def __init__(self, max_file_bytes: int) -> None:
        super().__init__()
        self.max_file_bytes = max_file_bytes
        self.parts: dict[str, bytearray] = {}
        self.over: set[str] = set()
        self._current: str | None = None

    def _forget(self) -> None:
        self._current = None

    def _part(self, name: str, is_file: bool) -> None:
        # An unknown part, or a second copy of a known one, is read past and dropped.
        if name in KNOWN_PARTS and name not in self.parts:
            self.parts[name] = bytearray()
            self._current = name

    def _data(self, data: bytes, start: int, end: int) -> None:
        name = self._current
        if name is None:
            return
        kept = self.parts[name]
        limit = self.max_file_bytes if name == "file" else TEXT_PART_LIMIT
        room = limit - len(kept)
        if end - start > room:
            self.over.add(name)
            end = start + max(room, 0)
        kept += data[start:end]


async def read_upload(
    content_type: str | None, body: AsyncIterator[bytes], *, max_file_bytes: int
) -> ReceivedUpload:
    """The nonce, field id and file bytes of a multipart upload; 400 when it is not one."""
    parts = _Parts(max_file_bytes)
    if not await parts.read(content_type, body):
        raise UploadUnreadable()
    if parts.over & {"nonce", "field"} or not KNOWN_PARTS <= parts.parts.keys():
        raise UploadUnreadable()
    try:
        nonce = parts.parts["nonce"].decode("ascii")
        field_id = parts.parts["field"].decode("ascii")
    except UnicodeDecodeError:
        raise UploadUnreadable() from None
    return ReceivedUpload(
        nonce=nonce.strip(),
        field_id=field_id.strip(),
        data=bytes(parts.parts["file"]),
        truncated="file" in parts.over,
    )


# A patient page posted without JavaScript (web/patient_page.py) --------------------------


class PageFormUnreadable(HealthformsError):
    status_code, code = 400, "bad_request"
    message: str = N_("The form could not be read. Reload the page and send it again.")


@dataclass(frozen=True, slots=True)
class PostedFile:
    """One file a page's file control sent: its bytes (the first `max_file_bytes` of
    them when `truncated`), never its name."""

    field_id: str
    data: bytes
    truncated: bool


@dataclass(frozen=True, slots=True)
class PostedParts:
    """A page's multipart body: its text controls in order, and its files."""

    texts: list[tuple[str, str]]
    files: list[PostedFile]


class _PageParts(_MultipartReader):
    """The parser's callbacks for a whole page: every text control (bounded in count
    and size), and the files of the named file controls (bounded in count and size)."""

    def __init__(
        self,
        file_fields: dict[str, int],
        *,
        max_texts: int,
        max_text_bytes: int,
        max_file_bytes: int,
    ) -> None:
        super().__init__()
        self.file_fields = file_fields  # field id -> how many files it may send
        self.max_texts = max_texts
        self.max_text_bytes = max_text_bytes
        self.max_file_bytes = max_file_bytes
        self.texts: list[tuple[str, bytearray]] = []
        self.files: list[tuple[str, bytearray, list[bool]]] = []
        self.refused = False  # a bound no page of this form can reach was passed
        self._target: bytearray | None = None
        self._limit = 0
        self._over: list[bool] | None = None

    def _forget(self) -> None:
        self._target = None
        self._over = None

    def _part(self, name: str, is_file: bool) -> None:
        if is_file:
            # A file: kept only for a file control of the form, up to its count (one
            # more is kept empty, so the validator can say "takes at most").
            sent = sum(1 for field_id, _, _ in self.files if field_id == name)
            if name not in self.file_fields or sent > self.file_fields[name]:
                return  # read past and dropped
            kept = bytearray()
            over = [False]
            self.files.append((name, kept, over))
            self._target, self._limit, self._over = kept, self.max_file_bytes, over
            if sent == self.file_fields[name]:
                self._limit = 0
            return
        if len(self.texts) >= self.max_texts:
            self.refused = True
            return
        value = bytearray()
        self.texts.append((name, value))
        self._target, self._limit = value, self.max_text_bytes

    def _data(self, data: bytes, start: int, end: int) -> None:
        target = self._target
        if target is None:
            return
        room = self._limit - len(target)
        if end - start > room:
            if self._over is None:
                self.refused = True  # a text control past any this form has
            else:
                self._over[0] = True
            end = start + max(room, 0)
        target += data[start:end]


async def read_page_form(
    content_type: str | None,
    body: AsyncIterator[bytes],
    *,
    file_fields: dict[str, int],
    max_texts: int,
    max_text_bytes: int,
    max_file_bytes: int,
) -> PostedParts:
    """A patient page's multipart body, in memory and within bounds; 400 when it is not
    one (or passes a bound no page of this form reaches). A file control left empty (no
    name, no bytes) is no file."""
    parts = _PageParts(
        file_fields,
        max_texts=max_texts,
        max_text_bytes=max_text_bytes,
        max_file_bytes=max_file_bytes,
    )
    if not await parts.read(content_type, body) or parts.refused:
        raise PageFormUnreadable()
    texts = [(name, bytes(value).decode("utf-8", "replace")) for name, value in parts.texts]
    files = [
        PostedFile(field_id, bytes(data), over[0])
        for field_id, data, over in parts.files
        if data or over[0]
    ]
    return PostedParts(texts, files)
