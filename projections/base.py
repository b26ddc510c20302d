"""A projection turns a run of stored events into rows of its read model.

`apply(curs, items)` gets (position, event, redacted) tuples in log order and must be idempotent:
the runner stores the projection's position in the same transaction, so after a crash the batch is
simply applied again from the stored position, and `rebuild` starts again from zero.

A projection that looks at a few kinds of event says which in `events` (their `NAME`s), and is then
handed only those (`routed`); one without `events` gets every event. On a log of messages, most read
models want none of a batch: each looping over all of it, only to skip, cost a rebuild of 1M events
more CPU than the one read model that counts messages.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Protocol

from events.base import DomainEvent

Item = tuple[int, DomainEvent, bool]


class Projection(Protocol):
    name: str
    schema: str
    tables: tuple[str, ...]

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        """Writes the view; returns live notifications ({"type": ..., ...}) for the agent console."""
        ...

    def erase(self, curs, customer_ids: Sequence) -> None:
        """Removes these customers' personal data from the view: on CustomerErased, and at once by
        `customer erase` (which must not wait for a projector)."""
        ...


def routed(projections: Sequence[Projection], items: Sequence[Item]) -> list[Sequence[Item]]:
    """Each projection's share of `items`, in log order: the events named in its `events`, or all of
    them without it. One pass over the items, however many projections there are."""
    shares: list[Sequence[Item]] = []
    by_name: dict[str, list[list[Item]]] = {}
    for projection in projections:
        wanted = getattr(projection, "events", None)
        if wanted is None:
            shares.append(items)
            continue
        share: list[Item] = []
        shares.append(share)
        for name in wanted:
            by_name.setdefault(name, []).append(share)
    if by_name:
        found = by_name.get
        for item in items:
            for share in found(item[1].NAME, ()):
                share.append(item)
    return shares


ALIAS_SCHEMA = """
CREATE TABLE IF NOT EXISTS proj_customer_alias (
    absorbed_id uuid PRIMARY KEY,
    survivor_id uuid NOT NULL
);
"""


def rounds(rows: Sequence[tuple]) -> list[list[tuple]]:
    """Splits rows keyed by their first column into rounds in which each key appears once, keeping
    each key's order: one set-based statement per round does what one statement per row would."""
    out: list[list[tuple]] = []
    seen: dict = {}
    for row in rows:
        n = seen.get(row[0], 0)
        seen[row[0]] = n + 1
        if n == len(out):
            out.append([])
        out[n].append(row)
    return out


# Held (transaction-level) while the projector writes a batch, shared (its two lanes write at once), and
# alone while a rebuild swaps its tables in.
BATCH_LOCK_KEY = 0x5B_7072_6F62


# Below this many rows a batch is bound as arrays (one round trip); from it on, staged with COPY.
STAGE_FROM_ROWS = 64
_staged: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection → staging tables it has
# Around a staged block's statements (see `bulk`): join by key, then as the session had it.
_BY_KEY = "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
_AS_BEFORE = "SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT"


def forget_staging(connection) -> None:
    """After a rollback (to a savepoint): staging tables created in it are gone, create them again."""
    _staged.pop(connection, None)


@contextlib.contextmanager
def bulk(curs, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[tuple]) -> Iterator[tuple[str, list]]:
    """Rows to read in one set-based statement, as `(FROM clause aliased u, params)`.

    Binding thousands of values as arrays costs microseconds each on the client (text arrays are
    escaped element by element); a binary COPY into a session's staging table costs a fraction of
    that but takes more round trips. So: few rows are bound as arrays, many are staged.

    Staged rows are joined to the read model by its indexes, never by reading all of it: every
    statement here finds the rows of a batch by key (`c.id = u.id`, an alias by its key), but a
    staging table has no statistics, so PostgreSQL guessed 1,250 rows and hashed the whole read model
    against them (issue 13: an UPDATE of 112 of 17,000 cases took 9 ms, 2.8 ms as a nested loop over
    the primary key), a cost that grew with the read model instead of with the batch. Hash and merge
    joins are off for the statements in the block only (the setting is put back after it).
    """
    names = ", ".join(name for name, _ in columns)
    if len(rows) < STAGE_FROM_ROWS:
        casts = ", ".join(f"%s::{pg_type}[]" for _, pg_type in columns)
        yield f"unnest({casts}) AS u({names})", [list(col) for col in zip(*rows, strict=True)]
        return
    created = _staged.setdefault(curs.connection, set())
    if table not in created:
        definition = ", ".join(f"{name} {pg_type}" for name, pg_type in columns)
        curs.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} ({definition}) ON COMMIT DELETE ROWS")
        created.add(table)
    with curs.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([pg_type for _, pg_type in columns])
        for row in rows:
            copy.write_row(row)
    curs.execute(_BY_KEY)
    yield f"{table} u", []
    # Emptied for the next use in this transaction by DELETE, not TRUNCATE: TRUNCATE gives the table a
    # new file and rewrites its catalog row (5 ms a time on a busy machine, and an invalidation every
    # session processes); its commit empties it anyway (ON COMMIT DELETE ROWS).
    curs.execute(f"DELETE FROM {table}; {_AS_BEFORE}")
