"""`matches` is one language: patterns keep to what RE2 and PostgreSQL read alike, in the form both
run; what either reads differently is refused at parse time with what to write instead."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.domain.filters import SEGMENT_FIELDS, FilterError, evaluate, parse
from services.domain.patterns import PatternError, portable

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("pattern", "runs_as"),
    [
        ("^a.*b$", "^a.*b$"),
        ("(?i)refund", "(?i)refund"),
        (r"^Ana\s+G", r"^Ana[\t\n\f\r ]+G"),  # PostgreSQL's \s also takes \v and the locale's spaces
        (r"\d{3}-\d{4}", "[0-9]{3}-[0-9]{4}"),  # PostgreSQL's \d follows the locale
        (r"[\w.-]+@example\.com", r"[0-9A-Za-z_.-]+@example\.com"),
        (r"\W\S\D", r"[^0-9A-Za-z_][^\t\n\f\r ][^0-9]"),
        (r"\Agold\z", "^gold$"),  # PostgreSQL has no \z
        ("(?:gold|silver)+?x{2,5}", "(?:gold|silver)+?x{2,5}"),
        (r"price: \$\{x\}", r"price: \$\{x\}"),
        ("[]a-]", "[]a-]"),
        ("ñandú", "ñandú"),
    ],
)
def test_portable_patterns_run_in_the_form_both_engines_read_alike(pattern: str, runs_as: str) -> None:
    assert portable(pattern) == runs_as


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"\bfoo\b", "backspace in PostgreSQL"),  # a word boundary in RE2: PostgreSQL matched no word
        (r"\Bfoo", "reads differently"),
        (r"\pL+", "Unicode classes"),
        (r"\p{Greek}", "Unicode classes"),
        (r"\Q.*\E", "\\Q...\\E"),
        (r"\x41B", "\\x"),  # AB in RE2, one character U+41B in PostgreSQL
        ("[[:alpha:]]+", "POSIX classes"),
        ("(?s)a.b", "flags"),
        ("(?m)^b", "flags"),  # multi-line in RE2, newline-sensitive in PostgreSQL
        ("a(?i)b", "flags"),
        ("(?i:a)b", "flags"),
        ("(?P<year>[0-9]+)", "named groups"),
        ("a{300}", "up to 255"),
        ("a{,3}", "\\{"),  # a literal in RE2, an error in PostgreSQL
        ("}", "\\}"),
        ("(?i)garcía", "beyond ASCII"),
        (r"[\D]", "inside [...]"),
    ],
)
def test_patterns_either_engine_reads_differently_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError, match=None) as caught:
        portable(pattern)
    assert reason in str(caught.value)


def test_the_filter_parser_refuses_them_with_the_path_and_hands_on_the_portable_form() -> None:
    with pytest.raises(FilterError) as caught:
        parse({"all": [{"field": "name", "op": "matches", "value": r"\bAna\b"}]}, SEGMENT_FIELDS)
    assert caught.value.path == "filter.all[0].value"
    assert "not a portable pattern" in caught.value.message
    tree = parse({"all": [{"field": "name", "op": "matches", "value": r"^Ana\s"}]}, SEGMENT_FIELDS)
    assert tree.conditions()[0].value == r"^Ana[\t\n\f\r ]"


def test_the_evaluator_reads_them_as_postgresql_does() -> None:
    now = datetime(2026, 5, 4, tzinfo=UTC)

    def holds(pattern: str, text: str) -> bool:
        tree = parse({"all": [{"field": "name", "op": "matches", "value": pattern}]}, SEGMENT_FIELDS)
        return evaluate(tree, {"name": text}.get, now)

    assert holds("^hello.world$", "hello\nworld")  # `.` takes a newline, as PostgreSQL's does
    assert not holds(r"^\s$", "\v")  # RE2's \s, which PostgreSQL's would have matched
    assert holds(r"^\d+$", "2026") and not holds(r"^\d+$", "٢٠٢٦")  # ASCII digits only
