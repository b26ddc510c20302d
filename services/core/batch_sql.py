"""The SQL of a batch's unit of work over the core's own tables (their DDL: services.platform.schema).

Beside the event log the core keeps: the identity index (`sb_identities`, keyed hashes of verified
identities → their customer), the merge aliases (`sb_customer_aliases`, absorbed → survivor), one
`sb_processed` row per interaction it recorded (its exactly-once guard), and `sb_outbound` (the
messages we sent, by the provider's id, so a status callback finds its reply). Everything here runs
inside the batch's transaction; bulk writes use COPY or one `unnest` statement, ids are bound as
array literals (binding a list makes psycopg dump it element by element, far slower).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from services.domain.merges import merged_family, survivor_of
from services.platform.eventstore.store import Transaction

OutboundBlind = Callable[[str, str], str]
# (channel, provider message id, case, reply) of a message we sent.
OutboundRow = tuple[str, str, UUID, UUID | None]


def uuid_array(ids: Iterable[UUID]) -> str:
    """A uuid[] literal."""
    return "{" + ",".join(map(str, ids)) + "}"


def bytea_array(values: Iterable[bytes]) -> str:
    """A bytea[] literal (hex escapes)."""
    return "{" + ",".join('"\\\\x%s"' % v.hex() for v in values) + "}"


def copy_rows(tx: Transaction, target: str, types: Sequence[str], rows: Sequence[tuple]) -> None:
    with tx.curs.copy(f"COPY {target} FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


# -- reads ------------------------------------------------------------------------------------------


# One index range per stream: a LATERAL subquery behind `OFFSET 0`, which keeps the planner from
# flattening it into a join. As a join, on a log that grows faster than its statistics, it was
# planned as a merge or hash join over the whole log: every event read for each batch (30–85 ms at
# 60–90k events, and growing with the log) where the index ranges take about 1 ms.
EVENTS_AFTER = (
    "SELECT e.originator_id, e.originator_version, e.topic, e.state "
    "FROM unnest(%s::uuid[], %s::int[]) AS s(id, after) "
    "CROSS JOIN LATERAL (SELECT originator_id, originator_version, topic, state FROM sb_events "
    "WHERE originator_id = s.id AND originator_version > s.after OFFSET 0) e "
    "ORDER BY e.originator_id, e.originator_version"
)


def stored_events_after(tx: Transaction, after: dict[UUID, int]) -> list[StoredEvent]:
    """The stored events of these streams after the given version of each, stream by stream, oldest first."""
    tx.execute(EVENTS_AFTER, (uuid_array(after), list(after.values())))
    return _stored(tx.curs.fetchall())


def first_events(tx: Transaction, ids: Iterable[UUID]) -> list[StoredEvent]:
    """The first stored event (version 1) of each of these streams that has one: what opened it."""
    tx.execute(
        "SELECT originator_id, originator_version, topic, state FROM sb_events "
        "WHERE originator_id = ANY(%s::uuid[]) AND originator_version = 1",
        (uuid_array(ids),),
    )
    return _stored(tx.curs.fetchall())


def _stored(rows: Iterable[dict[str, Any]]) -> list[StoredEvent]:
    return [
        StoredEvent(
            originator_id=r["originator_id"],
            originator_version=r["originator_version"],
            topic=r["topic"],
            state=bytes(r["state"]),
        )
        for r in rows
    ]


def already_processed(tx: Transaction, ids: Sequence[UUID]) -> set[UUID]:
    tx.execute("SELECT interaction_id FROM sb_processed WHERE interaction_id = ANY(%s::uuid[])", (uuid_array(ids),))
    return {row["interaction_id"] for row in tx.curs.fetchall()}


def identity_owners(tx: Transaction, blinds: Iterable[bytes]) -> dict[bytes, UUID]:
    """The customer the index names for each of these identities (keyed hashes) it holds."""
    tx.execute("SELECT blind, customer_id FROM sb_identities WHERE blind = ANY(%s::bytea[])", (bytea_array(blinds),))
    return {bytes(row["blind"]): row["customer_id"] for row in tx.curs.fetchall()}


def sent_message(tx: Transaction, channel: str, blind: str, clear: str) -> tuple[UUID, UUID | None] | None:
    """(case, reply) of the message we sent with this provider id; its clear id too, for a row an
    older core wrote during a rolling upgrade."""
    tx.execute(
        "SELECT case_id, reply_id FROM sb_outbound WHERE channel = %s AND provider_message_id = ANY(%s)",
        (channel, [blind, clear]),
    )
    row = tx.curs.fetchone()
    return None if row is None else (row["case_id"], row["reply_id"])


def mark_campaign_message(tx: Transaction, channel: str, blind: str, outcome: str, reason: str | None) -> bool:
    """A status for a campaign message (services.campaigns.attribution): its first decisive word
    (`delivered` or `failed`) is kept for the campaigner to record; a repeat or a later word changes
    nothing. False when no campaign sent a message with this provider id."""
    tx.execute(
        "UPDATE sb_campaign_messages SET delivery = %s, delivery_reason = %s "
        "WHERE channel = %s AND provider_blind = %s AND delivery IS NULL",
        (outcome, reason, channel, blind),
    )
    return bool(tx.curs.rowcount)


# -- writes -----------------------------------------------------------------------------------------


def write_side_tables(
    tx: Transaction,
    *,
    merges: Sequence[tuple[UUID, UUID]],
    new_identities: dict[bytes, tuple[str, UUID]],
    outbound: Sequence[OutboundRow],
    outbound_blind: OutboundBlind,
    processed: Sequence[tuple[UUID, int | None, UUID | None]],
) -> None:
    """Everything but the events a batch writes: merges, index rows, sent messages, processed rows."""
    write_merges(tx, merges)
    if new_identities:
        # Sorted: one order for every writer, so two of them wait on each other instead of deadlocking.
        # An identity another writer took meanwhile is a unique violation: a conflict, retried.
        copy_rows(
            tx,
            "sb_identities (blind, kind, customer_id)",
            ("bytea", "text", "uuid"),
            [(b, *new_identities[b]) for b in sorted(new_identities)],
        )
    if outbound:
        rows = [
            (channel, outbound_blind(channel, provider_id), case_id, reply_id)
            for channel, provider_id, case_id, reply_id in outbound
        ]
        tx.execute(
            "INSERT INTO sb_outbound SELECT * FROM unnest(%s::text[], %s::text[], %s::uuid[], %s::uuid[]) "
            "ON CONFLICT DO NOTHING",
            [list(col) for col in zip(*rows, strict=True)],
        )
    if processed:
        copy_rows(tx, "sb_processed (interaction_id, stream_seq, case_id)", ("uuid", "int8", "uuid"), processed)


def write_merges(tx: Transaction, merges: Sequence[tuple[UUID, UUID]]) -> None:
    """What a merge changes beside its events: the absorbed customer's identities now resolve to the
    survivor, and so does its id (and the ids of everyone it had absorbed)."""
    for absorbed, survivor in merges:
        tx.execute("UPDATE sb_identities SET customer_id = %s WHERE customer_id = %s", (survivor, absorbed))
        tx.execute("UPDATE sb_customer_aliases SET survivor_id = %s WHERE survivor_id = %s", (survivor, absorbed))
        tx.execute(
            "INSERT INTO sb_customer_aliases VALUES (%s, %s) ON CONFLICT (absorbed_id) DO UPDATE "
            "SET survivor_id = EXCLUDED.survivor_id",
            (absorbed, survivor),
        )


# -- the alias table --------------------------------------------------------------------------------


def alias_survivor(conn: Any, customer_id: UUID) -> UUID | None:
    """Whom `sb_customer_aliases` says this customer was merged into (None: nobody)."""
    row = conn.execute("SELECT survivor_id FROM sb_customer_aliases WHERE absorbed_id = %s", (customer_id,)).fetchone()
    return None if row is None else _first(row, "survivor_id")


def alias_absorbed(conn: Any, customer_id: UUID) -> list[UUID]:
    """Whom `sb_customer_aliases` says was merged into this customer."""
    rows = conn.execute(
        "SELECT absorbed_id FROM sb_customer_aliases WHERE survivor_id = %s ORDER BY absorbed_id", (customer_id,)
    ).fetchall()
    return [_first(r, "absorbed_id") for r in rows]


def _first(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, dict) else row[0]


def alias_survivor_of(conn: Any, customer_id: UUID) -> UUID:
    """The survivor of this customer id (itself if never absorbed), by the alias table."""
    return survivor_of(customer_id, lambda i: alias_survivor(conn, i))


def alias_family(conn: Any, customer_id: UUID) -> list[UUID]:
    """The survivor of this customer id, then every customer merged into it, by the alias table."""
    return merged_family(alias_survivor_of(conn, customer_id), lambda i: alias_absorbed(conn, i))
