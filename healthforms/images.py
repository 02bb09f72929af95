"""Files people send us: what they really are, and images made safe to keep and print.

Used wherever a file comes from outside (a patient's photo or referral, a clinic's
logo). The type is decided by the content, never by the name or the declared type;
images are decoded within a pixel budget (a few KiB of PNG or JPEG can declare a
canvas of gigapixels: a decompression bomb for whoever draws it) and re-encoded, which
drops every piece of metadata (EXIF with GPS position, camera serials, XMP, comments)
after applying the EXIF orientation so the photo still stands the right way up.
PDFs are parsed with pypdf within a page budget; they are kept as sent (they are
documents, and re-writing them could change what a referral says).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError
from pypdf import PdfReader
from pypdf.errors import PyPdfError

from healthforms.languages import N_

JPEG: Final = "image/jpeg"
PNG: Final = "image/png"
WEBP: Final = "image/webp"
PDF: Final = "application/pdf"
IMAGE_TYPES: Final = frozenset({JPEG, PNG, WEBP})

# A 48-megapixel phone photo fits; anything larger is refused before it is decoded.
DEFAULT_MAX_PIXELS = 50_000_000
# Kept images are scaled down to this longest side: legible for an insurance card,
# bounded for the PDF that embeds it.
DEFAULT_MAX_SIDE = 2400
DEFAULT_MAX_PDF_PAGES = 50

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, JPEG),
    (b"\x89PNG\r\n\x1a\n", 0, PNG),
    (b"%PDF-", 0, PDF),
)


class UnsafeFile(ValueError):
    """Not a file of an accepted kind, damaged, or too large once decoded.

    The message is for the person who sent it and never echoes the content.
    """


def sniff(data: bytes) -> str | None:
    """The media type the content says it is (JPEG, PNG, WebP, PDF), or None."""
    for magic, offset, media_type in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


@dataclass(frozen=True, slots=True)
class CleanFile:
    data: bytes
    media_type: str
    width: int | None = None
    height: int | None = None
    pages: int | None = None

    @property
    def extension(self) -> str:
        return {JPEG: "jpg", PNG: "png", WEBP: "jpg", PDF: "pdf"}[self.media_type]


def clean_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    keep_png: bool = True,
) -> CleanFile:
    """Decode an image within `max_pixels` and re-encode it without any metadata.

    Photos (JPEG, WebP) come back as JPEG; PNG stays PNG (logos keep their
    transparency) unless `keep_png` is false. Raises UnsafeFile.
    """
    kind = sniff(data)
    if kind not in IMAGE_TYPES:
        raise UnsafeFile(N_("must be a JPEG, PNG or WebP image"))
    formats = {JPEG: ("JPEG",), PNG: ("PNG",), WEBP: ("WEBP",)}[kind]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as image:
                width, height = image.size
                if width < 1 or height < 1 or width * height > max_pixels:
                    raise UnsafeFile(N_("is too large an image to open safely"))
                image.load()
                upright = ImageOps.exif_transpose(image)
    except UnsafeFile:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnsafeFile(N_("is too large an image to open safely")) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UnsafeFile(N_("is damaged or not an image")) from exc
    if max(upright.size) > max_side:
        upright.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Pillow writes back what `info` holds (EXIF, ICC profile, text chunks): keep only
    # a palette's transparency, which is part of the picture.
    pixels = upright.copy()
    transparency = pixels.info.get("transparency")
    pixels.info = {} if transparency is None else {"transparency": transparency}
    out = io.BytesIO()
    if kind == PNG and keep_png:
        pixels.save(out, format="PNG", optimize=True)
        media_type = PNG
    else:
        if pixels.mode in ("RGBA", "LA", "P"):
            pixels = pixels.convert("RGBA")
            flat = Image.new("RGB", pixels.size, (255, 255, 255))
            flat.paste(pixels, mask=pixels.getchannel("A"))
            pixels = flat
        elif pixels.mode != "RGB":
            pixels = pixels.convert("RGB")
        pixels.save(out, format="JPEG", quality=88, optimize=True)
        media_type = JPEG
    return CleanFile(out.getvalue(), media_type, upright.size[0], upright.size[1])


def check_pdf(data: bytes, *, max_pages: int = DEFAULT_MAX_PDF_PAGES) -> CleanFile:
    """A PDF that parses, is not encrypted and has at most `max_pages` pages; kept as sent.

    Raises UnsafeFile.
    """
    if sniff(data) != PDF:
        raise UnsafeFile(N_("must be a PDF document"))
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise UnsafeFile(N_("is a password-protected PDF; send it without a password"))
        pages = len(reader.pages)
    except UnsafeFile:
        raise
    except (PyPdfError, OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise UnsafeFile(N_("is damaged or not a PDF document")) from exc
    if pages < 1:
        raise UnsafeFile(N_("is an empty PDF document"))
    if pages > max_pages:
        raise UnsafeFile(N_("has more than {max_pages} pages", max_pages=max_pages))
    return CleanFile(data, PDF, pages=pages)
