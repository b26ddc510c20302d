"""The widget's script and the pure parts of its HTTP door."""

from __future__ import annotations

import gzip
import re

import pytest

from services.api.widget import _matches, _takes_gzip, origin_allowed, parse_origins, widget_script

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "value,expected",
    [
        ("*", None),
        ("", None),
        (None, None),
        ("https://a.example, https://B.example/", frozenset({"https://a.example", "https://b.example"})),
        (["https://a.example", "*"], None),
        (["https://a.example"], frozenset({"https://a.example"})),
    ],
)
def test_allowed_origins_setting(value, expected):
    assert parse_origins(value) == expected


def test_origin_check():
    allowed = parse_origins("https://a.example")
    assert origin_allowed(allowed, "https://A.example") and not origin_allowed(allowed, "https://b.example")
    assert origin_allowed(None, "https://anything.example")


@pytest.mark.parametrize(
    "header,takes",
    [("gzip", True), ("gzip, deflate, br", True), ("br;q=1, gzip;q=0.5", True), ("gzip;q=0", False), ("*", True)]
    + [("identity", False), ("", False), ("gzip;q=x", False)],
)
def test_accept_encoding(header, takes):
    assert _takes_gzip(header) is takes


def test_if_none_match():
    assert _matches('"a", "b"', '"b"') and _matches('W/"b"', '"b"') and _matches("*", '"b"')
    assert not _matches('"a"', '"b"') and not _matches("", '"b"')


def test_the_script_is_small_safe_and_self_contained():
    script = widget_script()
    source = script.raw.decode()
    assert gzip.decompress(script.gzipped) == script.raw
    # The budget the README states: under 20 KB as served (comments included), under 7 KB gzipped.
    assert len(script.raw) < 20 * 1024 and len(script.gzipped) < 7 * 1024
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    # Untrusted text only ever goes in as text; nothing is evaluated; nothing is fetched from elsewhere.
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert forbidden not in code
    assert re.findall(r"https?://[^\"' ]+", code) == ["http://www.w3.org/2000/svg"]  # a namespace, not a request
    for hook in ("widget-launcher", "widget-input", "widget-send", "widget-message"):
        assert f'"data-testid": "{hook}"' in code
