"""Quarantine: an event one consumer of the log cannot handle is set aside, and the consumer goes on.

A projection that cannot apply one event, or the relay that cannot publish one, would otherwise
stop at it and try the same batch forever: no timeline, profile, case or live update for anyone.
Instead the event is recorded here (which consumer, the position, the event's type and id, why), in
the same transaction that moves the consumer past it, and a warning is logged. The event itself
stays in the log, untouched. `switchboard projections quarantine list` shows what is set aside;
`... retry` (after fixing the cause) handles those events again, and each that succeeds leaves.

What is never quarantined: failures that say "the database or NATS is unreachable" (the batch is
simply tried again later, nobody's event is to blame). The reason holds the exception's class and
its message with quoted values, addresses and long numbers masked: no personal data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError as ESInterfaceError
from eventsourcing.persistence import OperationalError as ESOperationalError
from psycopg import errors as pg_errors

from events.base import DomainEvent
from events.sanitize import clean_text
from services.platform.logs import get_logger

log = get_logger(__name__)

# "Unreachable", not "this event is bad": the whole batch is tried again later, nothing is set aside.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    # The event store's library wraps psycopg's errors in its own (a lost connection while reading the
    # log is `eventsourcing.persistence.OperationalError`): an outage all the same, no event's fault.
    ESOperationalError,
    ESInterfaceError,
    ConnectionError,
    pg_errors.InsufficientPrivilege,
    pg_errors.UndefinedTable,
    pg_errors.ReadOnlySqlTransaction,
)

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\([^()]*=[^()]*\)")
_EMAIL = re.compile(r"\S+@\S+")
_DIGITS = re.compile(r"\+?\d[\d ./-]{5,}\d")
_MAX_REASON = 300


@dataclass(frozen=True)
class Quarantined:
    consumer: str
    position: int
    event_type: str
    event_id: UUID | None
    reason: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime


def failure_reason(exc: BaseException) -> str:
    """Why, without personal data: the exception's class (and SQLSTATE), its first line with quoted
    values, e-mail addresses and long numbers masked, and the table, column or constraint involved."""
    name = type(exc).__name__
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        message = diag.message_primary or str(exc)
        where = [
            f"{label} {value}"
            for label, value in (
                ("table", diag.table_name),
                ("column", diag.column_name),
                ("constraint", diag.constraint_name),
            )
            if value
        ]
        if exc.sqlstate:
            name = f"{name} [{exc.sqlstate}]"
    else:
        message, where = str(exc), []
    message = clean_text(message).split("\n", 1)[0]
    message = _DIGITS.sub("…", _EMAIL.sub("…", _QUOTED.sub("…", message)))
    reason = f"{name}: {message}" if message else name
    if where:
        reason += f" ({', '.join(where)})"
    return reason[:_MAX_REASON]


def record(curs, consumer: str, position: int, event: DomainEvent, exc: BaseException) -> str:
    """Sets the event aside for `consumer` (again: one more attempt); returns the reason recorded."""
    reason = failure_reason(exc)
    curs.execute(
        "INSERT INTO sb_quarantine (consumer, position, event_type, event_id, reason) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (consumer, position) DO UPDATE SET reason = EXCLUDED.reason, "
        "attempts = sb_quarantine.attempts + 1, last_failed_at = now()",
        (consumer, position, event.NAME, event.id, reason),
    )
    log.warning(
        "event_quarantined",
        consumer=consumer,
        position=position,
        event_type=event.NAME,
        event_id=str(event.id),
        reason=reason,
    )
    return reason


def release(curs, consumer: str, position: int) -> None:
    """The event was handled after all: out of quarantine."""
    curs.execute("DELETE FROM sb_quarantine WHERE consumer = %s AND position = %s", (consumer, position))
    log.info("event_released_from_quarantine", consumer=consumer, position=position)


def clear(curs, consumers: Sequence[str]) -> None:
    """Forgets what these consumers set aside (they start again from the beginning of the log)."""
    curs.execute("DELETE FROM sb_quarantine WHERE consumer = ANY(%s)", (list(consumers),))


def listing(curs, consumers: Sequence[str] | None = None, position: int | None = None) -> list[Quarantined]:
    """What is set aside, oldest position first; only these consumers / this position when given."""
    query = (
        "SELECT consumer, position, event_type, event_id, reason, attempts, first_failed_at, last_failed_at "
        "FROM sb_quarantine WHERE (%(consumers)s::text[] IS NULL OR consumer = ANY(%(consumers)s)) "
        "AND (%(position)s::bigint IS NULL OR position = %(position)s) ORDER BY position, consumer"
    )
    curs.execute(query, {"consumers": list(consumers) if consumers is not None else None, "position": position})
    return [
        Quarantined(
            r["consumer"],
            r["position"],
            r["event_type"],
            r["event_id"],
            r["reason"],
            r["attempts"],
            r["first_failed_at"],
            r["last_failed_at"],
        )
        for r in curs.fetchall()
    ]


def counts(curs) -> dict[str, int]:
    """How many events each consumer has set aside."""
    curs.execute("SELECT consumer, count(*) AS n FROM sb_quarantine GROUP BY consumer")
    return {r["consumer"]: r["n"] for r in curs.fetchall()}
