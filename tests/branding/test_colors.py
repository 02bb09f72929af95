"""The accent colour: WCAG contrast computed right, a colour white text cannot be read
on refused with the rule and a shade that passes."""

from __future__ import annotations

import pytest

from healthforms.branding.colors import (
    WHITE,
    contrast,
    darkest_passing_shade,
    parse_hex,
    shades,
    validate_accent,
)
from healthforms.errors import ValidationFailed


def test_contrast_matches_the_wcag_reference_values() -> None:
    assert contrast((0, 0, 0), WHITE) == pytest.approx(21.0)
    assert contrast(WHITE, WHITE) == pytest.approx(1.0)
    # #767676 is the classic lightest grey that passes 4.5:1 on white.
    assert contrast((0x76, 0x76, 0x76), WHITE) == pytest.approx(4.54, abs=0.01)
    assert contrast((0x77, 0x77, 0x77), WHITE) < 4.5


def test_a_dark_enough_accent_is_kept_in_lower_case_hex() -> None:
    assert validate_accent("#0F6272") == "#0f6272"
    assert validate_accent("767676") == "#767676"
    assert validate_accent("#036") == "#003366"
    assert validate_accent(None) is None
    assert validate_accent("") is None


@pytest.mark.parametrize("value", ["#ffcc00", "#777777", "#8fbc8f", "yellow"])
def test_a_light_or_malformed_accent_is_refused_with_the_rule(value: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        validate_accent(value)
    message = refused.value.extra["fields"]["accentColor"]
    if value == "yellow":
        assert "hex code" in message
        return
    assert "4.5:1" in message and "WCAG AA" in message
    suggested = message.rsplit("for example ", 1)[1].rstrip(".")
    rgb = parse_hex(suggested)
    assert rgb is not None and contrast(rgb, WHITE) >= 4.5
    assert validate_accent(suggested) == suggested


@pytest.mark.parametrize("value", [123, ["#000000"], {"hex": "#000"}, "#12345", "#gggggg"])
def test_anything_but_a_hex_code_is_refused(value: object) -> None:
    with pytest.raises(ValidationFailed):
        validate_accent(value)


def test_the_suggested_shade_is_the_lightest_that_passes() -> None:
    shade = darkest_passing_shade((255, 204, 0))
    assert contrast(shade, WHITE) >= 4.5


def test_the_tint_behind_accent_text_keeps_aa() -> None:
    for hex_code in ("#0f6272", "#767676", "#5a2ca0", "#b00020"):
        rgb = parse_hex(hex_code)
        assert rgb is not None
        derived = shades(rgb)
        soft = parse_hex(derived.soft)
        hover = parse_hex(derived.hover)
        assert soft is not None and hover is not None
        assert contrast(rgb, soft) >= 4.5
        assert contrast(hover, WHITE) >= contrast(rgb, WHITE)
