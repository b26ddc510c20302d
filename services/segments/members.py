"""Who is in a segment: its filter (services.domain.filters) compiled to ONE parameterised SQL query
over the read models, run when asked, so membership follows the data without touching the segment.

Every value of a filter (and every key, activity type, consent purpose and channel named in a field)
travels as a bound parameter; the SQL text is made only of the fragments below. Members are the
customers that are neither merged into another nor erased, ordered by id and paged by it (keyset:
a cursor stays valid while customers come and go).

What each field reads:
- `name`, `channels`, `first_seen`, `last_seen`, `interaction_count`, `attributes.KEY` (custom
  attributes, customer.AttributesSet): the profile, `proj_customers`;
- `open_cases` (not resolved), `csat_avg` (of the scores of their cases), `tags` (of any of their
  cases): `proj_cases`;
- `consent.PURPOSE.CHANNEL`: `proj_consent`, an explicit grant or revocation; without one, under the
  `implied` policy, having written to us on that channel counts as consent
  (`proj_customer_inbound_channels`, projections/customer_activity.py); under `explicit`, nothing;
- `activities.TYPE.count`, `activities.amount.sum` (all types, all currencies): `proj_activity_totals`
  (no activity: 0).

A missing value (no name, no CSAT score, no attribute) makes a condition false except `ne`, as the
Python evaluator (`services.domain.filters.evaluate`) does. `matches` runs PostgreSQL's regular
expressions (`~`) on the pattern the parser handed on: the subset of RE2 both engines read alike, in
the form both run (services.domain.patterns), so a segment and an automation mean the same by it; a
pattern PostgreSQL still rejects is reported as a bad filter (`FilterError`) by `check`. Every query
here runs under a statement timeout (`QUERY_TIMEOUT`; the synchronous variant gives the caller's
transaction its own setting back after), so a costly pattern over many customers ends as an error
instead of holding a connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import psycopg

from services.domain.filters import Ago, Condition, FilterError, Group

ConsentPolicy = Literal["implied", "explicit"]

# A text that reads as a number is compared as one (`attributes.KEY` holds what agents typed).
_NUMERIC = r"^\s*[-+]?[0-9]+(\.[0-9]+)?\s*$"
_COMPARISONS = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "before": "<", "after": ">"}

MEMBER = "c.merged_into IS NULL AND NOT c.erased"
QUERY_TIMEOUT = "30s"  # a page of members (or the check on save); the API sets its own, shorter one


@dataclass
class Compiled:
    """A WHERE clause over `proj_customers c` and its parameters, in order."""

    where: str
    params: list[Any] = field(default_factory=list)


def compile_filter(tree: Group, now: datetime, *, consent_policy: ConsentPolicy = "implied") -> Compiled:
    params: list[Any] = []
    where = _group(tree, now, params, consent_policy)
    return Compiled(where, params)


def member_ids_query(
    tree: Group, *, after: UUID | None, limit: int, now: datetime, consent_policy: ConsentPolicy = "implied"
) -> tuple[str, list[Any]]:
    compiled = compile_filter(tree, now, consent_policy=consent_policy)
    page = "" if after is None else " AND c.id > %s"
    query = f"SELECT c.id FROM proj_customers c WHERE {MEMBER}{page} AND {compiled.where} ORDER BY c.id LIMIT %s"
    return query, [*([] if after is None else [after]), *compiled.params, limit]


def members_query(
    tree: Group, *, after: UUID | None, limit: int, now: datetime, consent_policy: ConsentPolicy = "implied"
) -> tuple[str, list[Any]]:
    """A page of members with what a list shows of each: id, name, channels, first and last seen,
    interactions and open cases."""
    ids, params = member_ids_query(tree, after=after, limit=limit, now=now, consent_policy=consent_policy)
    query = (
        f"WITH m AS ({ids}) SELECT c.id, c.name, c.channels, c.first_seen, c.last_seen, c.interaction_count, "
        "(SELECT count(*) FROM proj_cases k WHERE k.customer_id = c.id AND k.status <> 'resolved') AS open_cases "
        "FROM m JOIN proj_customers c ON c.id = m.id ORDER BY c.id"
    )
    return query, params


async def segment_member_ids(
    conn: psycopg.AsyncConnection[Any],
    tree: Group,
    *,
    after: UUID | None,
    limit: int,
    now: datetime,
    consent_policy: ConsentPolicy = "implied",
) -> list[UUID]:
    """The ids of the segment's members after `after` (None: from the first), at most `limit`, by id.

    `conn` is a psycopg AsyncConnection (the API's pool). For a synchronous cursor (a Follower's
    transaction), `segment_member_ids_sync`."""
    query, params = member_ids_query(tree, after=after, limit=limit, now=now, consent_policy=consent_policy)
    async with conn.transaction():
        await conn.execute("SELECT set_config('statement_timeout', %s, true)", (QUERY_TIMEOUT,))
        cur = await conn.execute(query, params)
        return [row[0] for row in await cur.fetchall()]


def segment_member_ids_sync(
    curs: psycopg.Cursor[Any],
    tree: Group,
    *,
    after: UUID | None,
    limit: int,
    now: datetime,
    consent_policy: ConsentPolicy = "implied",
    timeout: str = QUERY_TIMEOUT,
) -> list[UUID]:
    """As `segment_member_ids`, on a synchronous psycopg cursor (rows as tuples or dicts), inside the
    caller's transaction; the query under `timeout` (QueryCanceled past it: the transaction is over)."""
    query, params = member_ids_query(tree, after=after, limit=limit, now=now, consent_policy=consent_policy)
    with _timeout(curs, timeout):
        curs.execute(query, params)
        return [row["id"] if isinstance(row, dict) else row[0] for row in curs.fetchall()]


@contextmanager
def _timeout(curs: psycopg.Cursor[Any], timeout: str) -> Iterator[None]:
    """`statement_timeout` for what runs inside, then the caller's own again (the caller's
    transaction goes on: SET LOCAL alone would hold to its end)."""
    row = curs.execute("SELECT current_setting('statement_timeout') AS was").fetchone()
    was = row["was"] if isinstance(row, dict) else row[0]  # type: ignore[index]
    curs.execute("SELECT set_config('statement_timeout', %s, true)", (timeout,))
    yield
    curs.execute("SELECT set_config('statement_timeout', %s, true)", (was,))


async def check(conn: psycopg.AsyncConnection[Any], tree: Group, now: datetime, *, where: str = "filter") -> None:
    """Runs the compiled query once (no rows) so what PostgreSQL refuses (a pattern outside its
    regular expressions) is a `FilterError` when the segment is saved, not when it is used."""
    query, params = member_ids_query(tree, after=None, limit=0, now=now)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('statement_timeout', %s, true)", (QUERY_TIMEOUT,))
            await conn.execute(query, params)
    except psycopg.errors.InvalidRegularExpression as exc:
        raise FilterError(where, f"a pattern PostgreSQL cannot run: {exc.diag.message_primary}") from None


# ---------------------------------------------------------------------------------------------------


def _group(group: Group, now: datetime, params: list[Any], policy: ConsentPolicy) -> str:
    joiner = " AND " if group.mode == "all" else " OR "
    parts = [
        _group(item, now, params, policy) if isinstance(item, Group) else _condition(item, now, params, policy)
        for item in group.items
    ]
    return "(" + joiner.join(parts) + ")"


def _condition(c: Condition, now: datetime, params: list[Any], policy: ConsentPolicy) -> str:
    if c.op == "ne":
        # Not equal, a missing value included (the evaluator's rule): NOT of an eq that is never NULL.
        return f"NOT COALESCE({_condition(Condition(c.field, 'eq', c.value, c.kind), now, params, policy)}, false)"
    if c.kind == "list":
        return _has_item(c.field, params, str(c.value))
    expr, expr_params = _value(c.field, policy)
    if c.kind == "text":
        return _text(c, expr, expr_params, params)
    params.extend(expr_params)  # the expression comes first in each fragment below
    if c.kind == "bool":
        params.append(bool(c.value))
        return f"({expr} = %s::boolean)"
    if c.kind == "number":
        if c.op == "in":
            params.append([Decimal(v) for v in c.value])  # type: ignore[attr-defined]
            return f"({expr} = ANY(%s::numeric[]))"
        params.append(c.value)
        return f"({expr} {_COMPARISONS[c.op]} %s::numeric)"
    if c.kind == "datetime":
        point = c.value.at(now) if isinstance(c.value, Ago) else c.value
        params.append(point)
        return f"({expr} {_COMPARISONS[c.op]} %s::timestamptz)"
    raise FilterError(c.field, f"no SQL for a {c.kind} field")  # pragma: no cover - parse rules it out


def _text(c: Condition, expr: str, expr_params: list[Any], params: list[Any]) -> str:
    numeric = c.field.startswith("attributes.")
    if c.op in ("eq", "in"):
        values = [str(v) for v in c.value] if c.op == "in" else [str(c.value)]  # type: ignore[attr-defined]
        numbers = [n for n in map(_decimal, values) if n is not None] if numeric else []
        if not numbers:
            params.extend([*expr_params, values])
            return f"({expr} = ANY(%s::text[]))"
        params.extend([values, numbers, *expr_params])
        # The value bound once (a subquery), compared as text, and as a number when it reads as one;
        # CASE casts only texts that read as numbers (an AND would not promise the order).
        return (
            f"(SELECT v = ANY(%s::text[]) OR CASE WHEN v ~ '{_NUMERIC}' THEN v::numeric END = ANY(%s::numeric[]) "
            f"FROM (SELECT {expr} AS v) x)"
        )
    params.extend(expr_params)
    if c.op == "contains":
        params.append(c.value)
        return f"(strpos(lower({expr}), lower(%s)) > 0)"
    if c.op == "matches":
        params.append(c.value)
        return f"({expr} ~ %s)"
    raise FilterError(c.field, f"no SQL for {c.op!r} on text")  # pragma: no cover - parse rules it out


def _decimal(text: str) -> Decimal | None:
    return Decimal(text.strip()) if re.match(_NUMERIC, text) else None


def _value(name: str, policy: ConsentPolicy) -> tuple[str, list[Any]]:
    """The SQL expression of a field's value for the customer `c`, and the parameters it binds."""
    if name in ("name", "first_seen", "last_seen", "interaction_count"):
        return f"c.{name}", []
    if name == "open_cases":
        return "(SELECT count(*) FROM proj_cases k WHERE k.customer_id = c.id AND k.status <> 'resolved')", []
    if name == "csat_avg":
        return "(SELECT avg(k.csat) FROM proj_cases k WHERE k.customer_id = c.id AND k.csat IS NOT NULL)", []
    if name == "activities.amount.sum":
        return "COALESCE((SELECT sum(a.amount_sum) FROM proj_activity_totals a WHERE a.customer_id = c.id), 0)", []
    prefix, _, rest = name.partition(".")
    if prefix == "attributes":
        return "(c.custom_attributes ->> %s)", [rest]
    if prefix == "activities" and rest.endswith(".count"):
        return (
            "COALESCE((SELECT a.count FROM proj_activity_totals a WHERE a.customer_id = c.id AND a.type = %s), 0)",
            [rest.removesuffix(".count")],
        )
    if prefix == "consent":
        purpose, _, channel = rest.partition(".")
        explicit = (
            "(SELECT g.granted FROM proj_consent g WHERE g.customer_id = c.id AND g.purpose = %s AND g.channel = %s)"
        )
        if policy == "explicit":
            return f"COALESCE({explicit}, false)", [purpose, channel]
        implied = (
            "EXISTS (SELECT 1 FROM proj_customer_inbound_channels w WHERE w.customer_id = c.id AND w.channel = %s)"
        )
        return f"COALESCE({explicit}, {implied})", [purpose, channel, channel]
    raise FilterError(name, f"no SQL for field {name!r}")


def _has_item(name: str, params: list[Any], item: str) -> str:
    params.append(item)
    if name == "channels":
        return "(%s = ANY(c.channels))"
    if name == "tags":
        return "EXISTS (SELECT 1 FROM proj_cases k WHERE k.customer_id = c.id AND %s = ANY(k.tags))"
    raise FilterError(name, f"no SQL for list field {name!r}")  # pragma: no cover - parse rules it out
