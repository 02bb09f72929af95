"""The external PDF renderer: HTML (Jinja2) printed by a Gotenberg server's Chromium.

Used when GOTENBERG_URL is set. Every way the server can fail (refused, 5xx, a hang,
something that is not a PDF, an endless body) ends in one clear 502
`upstream_failed`; no answer text reaches the log or the error body.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import structlog
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from healthforms.errors import UpstreamFailed
from healthforms.pdf.document import NOT_ANSWERED, PdfDocument

log = structlog.get_logger("healthforms.pdf")

CONVERT_PATH = "/forms/chromium/convert/html"
MAX_PDF_BYTES = 64 * 1024 * 1024
GOTENBERG_FAILED = "The PDF renderer failed. Try again later."
# A4 with the embedded renderer's margins, in inches (Gotenberg's default unit).
PAGE_FORM = {
    "paperWidth": "8.27",
    "paperHeight": "11.7",
    "marginTop": "0.71",
    "marginBottom": "0.8",
    "marginLeft": "0.71",
    "marginRight": "0.71",
    "printBackground": "true",
}

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every answer is untrusted input
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _image_type(data: bytes) -> str:
    return "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"


def render_html(doc: PdfDocument) -> tuple[str, str]:
    """The page and its footer (page numbers) as Gotenberg's index.html and footer.html."""
    context = {
        "doc": doc,
        "not_answered": NOT_ANSWERED,
        "signature_b64": _b64,
        "image_type": _image_type,
    }
    page = _templates.get_template("response.html").render(context)
    footer = _templates.get_template("footer.html").render(context)
    return page, footer


class GotenbergRenderer:
    def __init__(self, base_url: str, *, timeout_s: float) -> None:
        self.url = base_url.rstrip("/") + CONVERT_PATH
        self.timeout_s = timeout_s

    async def render(self, doc: PdfDocument) -> bytes:
        """The PDF from Gotenberg; raise UpstreamFailed (502) on any failure."""
        page, footer = render_html(doc)
        files = [
            ("files", ("index.html", page.encode("utf-8"), "text/html")),
            ("files", ("footer.html", footer.encode("utf-8"), "text/html")),
        ]
        try:
            # The outer deadline bounds the whole exchange; httpx's timeout bounds each
            # read, which a server trickling bytes could otherwise stretch forever.
            async with (
                asyncio.timeout(self.timeout_s),
                httpx.AsyncClient(timeout=self.timeout_s) as client,
                client.stream("POST", self.url, files=files, data=PAGE_FORM) as reply,
            ):
                if reply.status_code != 200:
                    log.warning("gotenberg_failed", status=reply.status_code)
                    raise UpstreamFailed(GOTENBERG_FAILED)
                body = bytearray()
                async for chunk in reply.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_PDF_BYTES:
                        log.warning("gotenberg_failed", reason="reply too large")
                        raise UpstreamFailed(GOTENBERG_FAILED)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("gotenberg_failed", reason=type(exc).__name__)
            raise UpstreamFailed(GOTENBERG_FAILED) from None
        if not body.startswith(b"%PDF-"):
            log.warning("gotenberg_failed", reason="reply is not a PDF")
            raise UpstreamFailed(GOTENBERG_FAILED)
        return bytes(body)
