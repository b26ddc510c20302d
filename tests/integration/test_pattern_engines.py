"""`matches` means the same in a segment (PostgreSQL's `~`) and in an automation (RE2): every pattern
the parser accepts, in the form it hands on, gives both engines' answer alike on texts where the raw
syntax would have parted them (newlines, a vertical tab, non-ASCII letters and digits); and a
segment's query runs under a statement timeout."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from services.domain.filters import SEGMENT_FIELDS, evaluate, parse
from services.segments.members import segment_member_ids_sync

pytestmark = pytest.mark.integration

NOW = datetime(2026, 5, 4, tzinfo=UTC)
TEXTS = [
    "Ana García",
    "ana garcía",
    "hello\nworld",
    "\v",
    " ",
    "2026",
    "٢٠٢٦",  # Arabic-Indic digits
    "éte",
    "a_b-c",
    "gold",
    "x{2}",
    "price: ${x}",
    "",
]
PATTERNS = [
    "^a.*b$",
    "^hello.world$",
    r"^\s$",
    r"\S",
    r"^\d+$",
    r"^\w+$",
    r"\W",
    r"[\w-]+",
    r"^[^\n]+$",
    r"\Agold\z",
    "(?i)^ana",
    "(?:gold|silver)+?",
    "x{2}",
    r"\$\{x\}",
    "[]a-]",
    "garcía$",
    "ñ|é",
    "^(a+)+$",
]


def _pg(conn, pattern: str, text: str) -> bool:
    return conn.execute("SELECT %s ~ %s", (text, pattern)).fetchone()[0]


def test_every_accepted_pattern_gives_both_engines_the_same_answer(database_url) -> None:
    with psycopg.connect(database_url) as conn:
        for raw in PATTERNS:
            tree = parse({"all": [{"field": "name", "op": "matches", "value": raw}]}, SEGMENT_FIELDS)
            runs_as = tree.conditions()[0].value
            for text in TEXTS:
                in_re2 = evaluate(tree, {"name": text}.get, NOW)
                assert in_re2 == _pg(conn, runs_as, text), (raw, text)


def test_the_raw_syntax_would_have_parted_them(database_url) -> None:
    """What these patterns meant in PostgreSQL before: `.` took a newline there and not in RE2,
    PostgreSQL's \\s took a vertical tab, its \\b was a backspace (no word boundary)."""
    with psycopg.connect(database_url) as conn:
        assert _pg(conn, "^hello.world$", "hello\nworld")  # RE2 without dot_nl: no match
        assert _pg(conn, r"^\s$", "\v")  # RE2's \s: no match
        assert not _pg(conn, r"\bfoo\b", "a foo b")  # RE2: a match
    for raw in (r"\bfoo\b", "(?s)a.b", "[[:alpha:]]"):
        with pytest.raises(ValueError, match="not a portable pattern"):
            parse({"all": [{"field": "name", "op": "matches", "value": raw}]}, SEGMENT_FIELDS)


def test_a_segment_query_runs_under_a_statement_timeout_and_leaves_the_callers_own(store, database_url) -> None:
    tree = parse({"all": [{"field": "name", "op": "matches", "value": "^(x+x+)+y$"}]}, SEGMENT_FIELDS)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO proj_customers (id, name, first_seen, last_seen) "
            "SELECT gen_random_uuid(), repeat('x', 40), now(), now() FROM generate_series(1, 50000)"
        )
        conn.commit()
        with conn.transaction(), conn.cursor() as curs:
            curs.execute("SET LOCAL statement_timeout = '7min'")
            assert segment_member_ids_sync(curs, tree, after=None, limit=10, now=NOW) == []
            assert curs.execute("SHOW statement_timeout").fetchone()[0] == "7min"  # the caller's again
        with pytest.raises(psycopg.errors.QueryCanceled), conn.transaction(), conn.cursor() as curs:
            segment_member_ids_sync(curs, tree, after=None, limit=10, now=NOW, timeout="1ms")
