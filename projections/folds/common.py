"""Read models folded in memory from the whole log, for `projections rebuild`.

The live projections (timeline.py, profile.py, cases.py) write each batch into the tables with
UPDATEs; replaying a whole log that way updates a busy customer's row thousands of times. A fold
gives the same rows with each row written once: it keeps the state of every row in memory while the
log streams past (the timeline's rows, which only ever change by merges and erasures, go straight
out to the caller's sink), then hands over the final rows and a few set-based corrections.

Each fold mirrors the SQL of its projection event by event: the same guards (an UPDATE of a row that
does not exist changes nothing; an INSERT of a key already there is ignored) and the same order. Two
things are left to PostgreSQL so that they come out exactly as live processing makes them: the order
of text arrays (`ORDER BY` under the database's collation) and the customer a row belongs to after
merges (the alias table, applied at the end). The folds do no I/O: `rows(order)` gives
`{table: (columns, rows)}`, with text arrays put in order by `order` (which asks the database how it
sorts the few distinct values `array_values()` names), and `corrections()` the SQL to run after.

This relies on what the domain guarantees for merges (services/domain/customer.py): an absorbed
customer is never absorbed again nor absorbs anyone, so where a row's customer ends up depends only
on the customer it was recorded for and the merges recorded after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import msgspec

Columns = tuple[tuple[str, str], ...]  # (column, PostgreSQL type) in COPY order
Rows = dict[str, tuple[Columns, list[tuple]]]  # table → its columns and rows
# SQL run once the rows are in; with rows for a temporary table `stage` that it reads, if not None.
Correction = tuple[str, tuple, tuple[Columns, list[tuple]] | None]
_encode = msgspec.json.Encoder().encode


class RawJson(bytes):
    """JSON text already encoded, for a jsonb column of a binary COPY."""


Order = Callable[[set[str]], list[str]]  # text values sorted as the database's `ORDER BY` sorts them


class Unstorable(ValueError):
    """A value PostgreSQL refuses (a NUL character in text or jsonb): live processing gets a DataError
    for the event and quarantines it; a fold raises this before changing anything, to the same end."""


def storable(*values: Any) -> None:
    """Raises Unstorable if any text among these values (in lists, maps and keys too) holds a NUL.
    Checked in the folds because their rows reach PostgreSQL only at the end, in one COPY."""
    for value in values:
        if isinstance(value, str):
            if "\x00" in value:
                raise Unstorable("text with a NUL character, which PostgreSQL cannot store")
        elif isinstance(value, dict):
            storable(*value.keys(), *value.values())
        elif isinstance(value, (list, tuple, set)):
            storable(*value)


class Aliases:
    """proj_customer_alias as live processing keeps it: every absorbed customer → its survivor now."""

    def __init__(self) -> None:
        self.survivor: dict[UUID, UUID] = {}
        self.absorbed: dict[UUID, set[UUID]] = {}  # survivor → the customers aliased to it

    def merge(self, survivor: UUID, absorbed: UUID) -> None:
        # UPDATE alias SET survivor = S WHERE survivor = A; INSERT (A, S) ON CONFLICT DO UPDATE.
        moved = self.absorbed.pop(absorbed, set())
        previous = self.survivor.get(absorbed)
        if previous is not None and previous in self.absorbed:
            self.absorbed[previous].discard(absorbed)
        for customer in moved:
            self.survivor[customer] = survivor
        moved.add(absorbed)
        self.survivor[absorbed] = survivor
        self.absorbed.setdefault(survivor, set()).update(moved)

    def resolve(self, customer: UUID) -> UUID:
        return self.survivor.get(customer, customer)

    def owned_by(self, customer: UUID) -> set[UUID]:
        """The customers whose rows are this customer's now (itself and everyone aliased to it)."""
        return {customer, *self.absorbed.get(customer, ())}
