"""Helpers for page tests: collect console errors and CSP violations, check the basics
(lang, title, labels, alt text, no inline code, no sideways scroll), save screenshots."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Error, Page

from tests.web.conftest import SCREENSHOTS

CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  (window.__cspViolations = window.__cspViolations || []).push(
    e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sourceFile || '') + ':' + e.lineNumber);
});
"""

BASICS = (Path(__file__).parent / "page_checks.js").read_text()
# axe-core from the npm registry (tests/web/vendor/README.md), evaluated into the page
# through the DevTools protocol: no script tag, so the page's CSP stays as it is.
AXE_SOURCE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()
AXE_RUN = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => {
      const where = v.nodes.slice(0, 5).map((n) => n.target.join(" ")).join(", ");
      return `${v.impact} ${v.id}: ${v.help} @ ${where}`;
    });
}"""

_STATUS_RE = re.compile(r"status of (\d{3})")


@dataclass
class Watch:
    """Console errors and page errors of every page in one context."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def unexpected(self, *allowed_statuses: int) -> list[str]:
        """Errors, except failed loads with a status the test provoked on purpose."""
        left = []
        for text in self.errors:
            match = _STATUS_RE.search(text)
            if match and int(match.group(1)) in allowed_statuses:
                continue
            left.append(text)
        return left


def new_context(browser: Browser, watch: Watch, **options: Any) -> BrowserContext:
    context = browser.new_context(**options)
    context.add_init_script(CSP_LISTENER)
    context.on("page", watch.attach)
    return context


def check_page(page: Page, name: str | None = None, *, full_page: bool = True) -> None:
    """Assert the basics and no CSP violation; save a screenshot when named."""
    page.wait_for_load_state("load")
    problems = page.evaluate(BASICS)
    assert problems == [], f"{page.url}: {problems}"
    try:
        violations = page.evaluate("window.__cspViolations || []")
    except Error:
        violations = []
    assert violations == [], f"{page.url}: CSP violations {violations}"
    findings = axe_findings(page)
    assert findings == [], f"{page.url}: axe-core {findings}"
    if name:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def axe_findings(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_SOURCE)
    findings: list[str] = page.evaluate(AXE_RUN)
    return findings
