"""Agent API, search: customers (name, identities) and timeline items (text) matching the words of a
query, in any language, accents and case ignored, best first.

PostgreSQL full-text search over the read models themselves (nothing copied elsewhere, so erasing a
customer's data there erases it from search, and a rebuild rebuilds it): `sb_search_vector(text)`
(services/platform/schema.py: the `simple` configuration after `unaccent` and a Unicode lower case,
punctuation as spaces) is what the GIN expression indexes of proj_customers, proj_identities and
proj_timeline are built on, and what the query's own words go through, so both sides agree on what
a word is. Each word of the query matches as a prefix ("muño" finds "Muñoz"); all of them must match.

Ranking (`ts_rank`): a customer's name weighs most (A), their identities next (B), the text of a
message least (D), so a customer named X comes before a message that mentions X. Customers are
ranked among the `CUSTOMER_CANDIDATES` most recently seen that match, items among the newest
`ITEM_CANDIDATES` (their words stored in proj_timeline.search_vector): a page of 20 never ranks
every customer or message that holds a common word.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Literal

import msgspec
from litestar import Request, get
from litestar.exceptions import HTTPException
from litestar.params import FromQuery
from psycopg.rows import dict_row

from services.api.auth import READ
from services.api.context import require, svc
from services.platform.eventstore.codec import REDACTED

MAX_QUERY_CHARS = 200
MAX_WORDS = 16
MAX_LIMIT = 100
SNIPPET_WORDS = 24
# Timeline items are ranked among the newest this many that match every word: words that a third of
# all messages hold ("order refund") would otherwise rank hundreds of thousands of items for a page
# of 20; a query that narrow enough to have fewer matches ranks all of them.
ITEM_CANDIDATES = 1000
# Customers likewise among the most recently seen this many with every word in their name or an
# identity ("customer 1" is a prefix of ten thousand names): their documents are ranked one by one.
CUSTOMER_CANDIDATES = 200
RECENT_WINDOW = 8000  # words in one item of 8 among the newest are found there, without the GIN index
_BODY_CHARS = 20_000  # a snippet comes from the start of a long text (an email with its quoted thread)
_WORD = re.compile(r"\w+")


class SearchHit(msgspec.Struct):
    """One match: a customer (`id` = `customer_id`) or a timeline item (`id` its interaction id)."""

    kind: Literal["customer", "timeline_item"]
    id: str
    customer_id: str
    case_id: str | None
    channel: str | None
    occurred_at: datetime  # a customer's last contact, an item's time
    snippet: str  # the matching text, matches between « and »
    rank: float


class SearchResults(msgspec.Struct):
    q: str
    items: list[SearchHit]


class BadQuery(ValueError):
    """A query with nothing to search for, or too much."""


def tsquery(words: list[str], operator: str = "&") -> str:
    """The words (lexemes already normalised by `sb_search_vector`) as prefix terms of a tsquery."""
    quoted = ("'" + w.replace("\\", "\\\\").replace("'", "''") + "':*" for w in words)
    return f" {operator} ".join(quoted)


async def query_words(conn, q: str) -> list[str]:
    """The query's words as the index has them; BadQuery when there are none or too many."""
    if len(q) > MAX_QUERY_CHARS:
        raise BadQuery(f"q is longer than {MAX_QUERY_CHARS} characters")
    cur = await conn.execute("SELECT lexeme FROM unnest(sb_search_vector(%s))", (q,))
    words = [row[0] for row in await cur.fetchall()]
    if not words:
        raise BadQuery("q has no words to search for")
    if len(words) > MAX_WORDS:
        raise BadQuery(f"q has more than {MAX_WORDS} words")
    return words


# The customers' candidates come through the indexes: those with each word in their name or in one of
# their identities (a name may hold one word and an address another), intersected over the words, so
# that a word every customer has ("customer", "example") costs an index scan, not a ranked document
# per customer; the whole document (name A, identities B) must then match EVERY word.
_CANDIDATE = (
    "(SELECT c.id FROM proj_customers c WHERE sb_search_vector(c.name) @@ %({0})s::tsquery "
    "UNION SELECT i.customer_id FROM proj_identities i WHERE sb_search_vector(i.value) @@ %({0})s::tsquery)"
)


def _search_sql(n_words: int) -> str:
    candidates = " INTERSECT ".join(_CANDIDATE.format(f"w{i}") for i in range(n_words))
    return _SEARCH.replace("%(candidates)s", candidates)


_SEARCH = """
WITH candidates AS (
    %(candidates)s
),
customers AS (
    SELECT 'customer' AS kind, c.id, c.id AS customer_id, NULL::uuid AS case_id, NULL::text AS channel,
           c.last_seen AS occurred_at, concat_ws(' · ', c.name, d.identities) AS body,
           ts_rank(setweight(coalesce(sb_search_vector(c.name), ''), 'A')
                   || setweight(coalesce(sb_search_vector(d.identities), ''), 'B'), %(all)s::tsquery) AS rank
    FROM (
        SELECT c.* FROM candidates JOIN proj_customers c ON c.id = candidates.id
        WHERE c.merged_into IS NULL AND NOT c.erased
        ORDER BY c.last_seen DESC, c.id DESC LIMIT %(customers)s
    ) c
    CROSS JOIN LATERAL (
        SELECT string_agg(i.value, ' · ' ORDER BY i.verified DESC, i.kind, i.value) AS identities
        FROM proj_identities i WHERE i.customer_id = c.id
    ) d
    WHERE (coalesce(sb_search_vector(c.name), '') || coalesce(sb_search_vector(d.identities), '')) @@ %(all)s::tsquery
),
-- The newest ITEM_CANDIDATES items holding every word: looked for first among the newest
-- RECENT_WINDOW items, newest first (proj_timeline_newest_idx), which holds that many when the words
-- are common; else through the words' index (GIN), which is cheap when they are not.
recent AS MATERIALIZED (
    SELECT w.* FROM (
        SELECT t.interaction_id, t.customer_id, t.case_id, t.channel, t.occurred_at, t.text, t.search_vector
        FROM proj_timeline t ORDER BY t.occurred_at DESC, t.interaction_id DESC LIMIT %(window)s
    ) w
    WHERE w.search_vector @@ %(all)s::tsquery AND w.text <> %(redacted)s
    ORDER BY w.occurred_at DESC, w.interaction_id DESC LIMIT %(newest)s
),
indexed AS MATERIALIZED (
    SELECT t.interaction_id, t.customer_id, t.case_id, t.channel, t.occurred_at, t.text, t.search_vector
    FROM proj_timeline t
    WHERE t.search_vector @@ %(all)s::tsquery AND t.text <> %(redacted)s
      AND (SELECT count(*) FROM recent) < %(newest)s
),
matched AS (
    SELECT * FROM recent WHERE (SELECT count(*) FROM recent) >= %(newest)s
    UNION ALL
    (SELECT * FROM indexed ORDER BY occurred_at DESC, interaction_id DESC LIMIT %(newest)s)
),
items AS (
    SELECT 'timeline_item' AS kind, t.interaction_id AS id, t.customer_id, t.case_id, t.channel, t.occurred_at,
           t.text AS body, ts_rank(setweight(t.search_vector, 'D'), %(all)s::tsquery) AS rank
    FROM matched t
    ORDER BY rank DESC, t.occurred_at DESC, t.interaction_id LIMIT %(limit)s
),
best AS (
    SELECT * FROM customers UNION ALL SELECT * FROM items
    ORDER BY rank DESC, occurred_at DESC, id LIMIT %(limit)s
)
SELECT best.kind, best.id, best.customer_id, best.case_id, best.channel, best.occurred_at, best.rank,
       left(best.body, %(body_chars)s) AS body
FROM best ORDER BY best.rank DESC, best.occurred_at DESC, best.id
"""


def fold(text: str) -> str:
    """Accents off and case folded, as far as Python sees it (for marking matches in a snippet)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def snippet(text: str, words: list[str], size: int = SNIPPET_WORDS) -> str:
    """About `size` words of `text` around its first match, every word that matches between « and ».

    Marked here rather than by ts_headline: PostgreSQL's parser under a C locale takes "¿Dónde" for
    one word, so its headline would miss the match that the index found.
    """
    tokens = list(_WORD.finditer(text))
    if not tokens:
        return text[: size * 8]
    matches = [i for i, m in enumerate(tokens) if any(fold(m.group()).startswith(w) for w in words)]
    first = max(0, (matches[0] if matches else 0) - size // 3)
    last = min(len(tokens), first + size) - 1
    start = 0 if first == 0 else tokens[first].start()
    end = len(text) if last == len(tokens) - 1 else tokens[last].end()
    out, at = [], start
    for i in matches:
        if first <= i <= last:
            m = tokens[i]
            out += [text[at : m.start()], "«", m.group(), "»"]
            at = m.end()
    out.append(text[at:end])
    body = " ".join("".join(out).split())
    return ("… " if start > 0 else "") + body + (" …" if end < len(text) else "")


async def search(conn, q: str, limit: int) -> list[SearchHit]:
    words = await query_words(conn, q)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _search_sql(len(words)),
        {
            **{f"w{i}": tsquery([word]) for i, word in enumerate(words)},
            "all": tsquery(words, "&"),
            "redacted": REDACTED,
            "limit": limit,
            "newest": ITEM_CANDIDATES,
            "customers": CUSTOMER_CANDIDATES,
            "window": RECENT_WINDOW,
            "body_chars": _BODY_CHARS,
        },
    )
    return [
        SearchHit(
            kind=r["kind"],
            id=str(r["id"]),
            customer_id=str(r["customer_id"]),
            case_id=str(r["case_id"]) if r["case_id"] else None,
            channel=r["channel"],
            occurred_at=r["occurred_at"],
            snippet=snippet(r["body"] or "", words),
            rank=round(float(r["rank"]), 6),
        )
        for r in await cur.fetchall()
    ]


@get("/api/v1/search", summary="Customers and timeline items matching words, best first")
async def search_everything(request: Request, q: FromQuery[str], limit: FromQuery[int] = 20) -> SearchResults:
    await require(request, READ)
    if not 1 <= limit <= MAX_LIMIT:
        raise HTTPException(status_code=400, detail=f"limit must be between 1 and {MAX_LIMIT}")
    async with svc(request).pool.connection() as conn:
        try:
            return SearchResults(q=q, items=await search(conn, q, limit))
        except BadQuery as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
