"""An organisation's accent colour: parsed, checked against WCAG 2.x AA, and its shades.

Patient pages draw white text on the accent (buttons) and the accent on white (links,
the progress bar), so the accent must reach 4.5:1 against white (WCAG 2.x success
criterion 1.4.3, normal text). A colour that does not is refused with the ratio it has
and the nearest darker shade of the same hue that passes, never silently changed: what
the clinic sees on its pages is what its admin chose.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from healthforms.errors import ValidationFailed

AA_NORMAL_TEXT = 4.5
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
_HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")

Rgb = tuple[int, int, int]


def parse_hex(value: object) -> Rgb | None:
    """`#1a2b3c`, `1a2b3c` or `#abc` as RGB; None for anything else."""
    if not isinstance(value, str):
        return None
    match = _HEX.fullmatch(value.strip())
    if match is None:
        return None
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(ch * 2 for ch in digits)
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))


def to_hex(rgb: Rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(rgb: Rgb) -> float:
    """WCAG relative luminance (sRGB)."""
    r, g, b = (_channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: Rgb, b: Rgb) -> float:
    """WCAG contrast ratio, 1 to 21."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def mix(a: Rgb, b: Rgb, amount: float) -> Rgb:
    """`a` moved `amount` (0..1) of the way towards `b`."""
    return (
        round(a[0] + (b[0] - a[0]) * amount),
        round(a[1] + (b[1] - a[1]) * amount),
        round(a[2] + (b[2] - a[2]) * amount),
    )


def darkest_passing_shade(rgb: Rgb) -> Rgb:
    """The lightest shade of `rgb` (mixed towards black) with AA contrast on white."""
    for step in range(0, 101):
        shade = mix(rgb, BLACK, step / 100)
        if contrast(shade, WHITE) >= AA_NORMAL_TEXT:
            return shade
    return BLACK


@dataclass(frozen=True, slots=True)
class AccentShades:
    """The accent and what the pages derive from it (web/static/css/app.css names)."""

    primary: str  # buttons (white text on it), links and the progress bar
    hover: str  # a darker shade: even more contrast
    soft: str  # a light tint behind accent-coloured text (the confirmation code)


def shades(rgb: Rgb) -> AccentShades:
    """The page colours of an accepted accent; the tint is kept light enough that the
    accent on it still reaches AA."""
    soft = WHITE
    for step in range(90, 101):
        tint = mix(rgb, WHITE, step / 100)
        if contrast(rgb, tint) >= AA_NORMAL_TEXT:
            soft = tint
            break
    return AccentShades(to_hex(rgb), to_hex(mix(rgb, BLACK, 0.2)), to_hex(soft))


def validate_accent(value: object) -> str | None:
    """The accent as `#rrggbb` (lower case), or None to use the default; 422 naming
    `accentColor` for a malformed colour or one white text cannot be read on."""
    if value is None or value == "":
        return None
    rgb = parse_hex(value)
    if rgb is None:
        raise ValidationFailed({"accentColor": "Enter the colour as a hex code such as #0f6272."})
    # Rounded down: 4.47:1 must not read as "4.5:1" in a refusal.
    ratio = math.floor(contrast(rgb, WHITE) * 100) / 100
    if ratio < AA_NORMAL_TEXT:
        suggestion = to_hex(darkest_passing_shade(rgb))
        raise ValidationFailed(
            {
                "accentColor": (
                    f"White text on {to_hex(rgb)} has a contrast of {ratio:.2f}:1; buttons "
                    f"and links need at least 4.5:1 to be readable (WCAG AA). Choose a "
                    f"darker colour, for example {suggestion}."
                )
            }
        )
    return to_hex(rgb)
