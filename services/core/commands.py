"""Case commands from agents: load the case, call the domain, save; retry when another writer won.

Synchronous (the event store is): the HTTP layer calls these in a worker thread.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from services.domain.aggregate import Aggregate
from services.domain.case import Case
from services.domain.customer import Customer
from services.domain.merges import merged_family, survivor_of
from services.platform.eventstore.store import ConcurrencyError, EventStore


class NotFound(LookupError):
    pass


A = TypeVar("A", bound=Aggregate)


@dataclass
class Done(Generic[A]):
    """A command's outcome: the aggregate after it, and the log position a reader must reach to see
    it (the last event written, or the log's end when nothing changed): the `position` of every
    command's response, for `Sb-Min-Position`."""

    aggregate: A
    position: int


def load(store: EventStore, cls: type[A], stream_id: UUID, first: str | None = None) -> A:
    """The aggregate from its stream; NotFound when the stream is empty (or does not start with the
    event named `first`, when given: a case id handed to the customer routes, say)."""
    events = store.load(stream_id)
    if not events or (first is not None and events[0].NAME != first):
        raise NotFound(f"{cls.__name__.lower()} {stream_id} not found")
    return cls.replay(stream_id, events)


def run_command(
    store: EventStore,
    cls: type[A],
    stream_id: UUID,
    command: Callable[[A], None],
    *,
    first: str | None = None,
    create: bool = False,
    attempts: int = 5,
) -> Done[A]:
    """Loads the aggregate, calls `command` on it and appends what it triggered; retries from a fresh
    load when another writer won (optimistic concurrency). `create`: an empty stream is a new
    aggregate handed to the command (a PUT of a queue that does not exist yet) instead of NotFound."""
    for attempt in range(attempts):
        try:
            aggregate = load(store, cls, stream_id, first)
        except NotFound:
            if not create:
                raise
            aggregate = cls(stream_id)
        command(aggregate)
        events = aggregate.collect()
        if not events:
            return Done(aggregate, store.max_position())
        try:
            with store.transaction() as tx:
                tx.append(events)
            return Done(aggregate, tx.positions[-1])
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
            # Another writer (the core adding a message, another agent) won: back off a little,
            # randomly, so two retrying writers stop meeting each other.
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


def append_new(store: EventStore, aggregate: Aggregate) -> int:
    """Stores a just-created aggregate (its first events); ConcurrencyError when the stream exists."""
    with store.transaction() as tx:
        tx.append(aggregate.collect())
    return tx.positions[-1]


def load_case(store: EventStore, case_id: UUID) -> Case:
    return load(store, Case, case_id, first="case.Opened")


def run_case_command(store: EventStore, case_id: UUID, command: Callable[[Case], None], attempts: int = 5) -> Case:
    return run_case(store, case_id, command, attempts).aggregate


def run_case(store: EventStore, case_id: UUID, command: Callable[[Case], None], attempts: int = 5) -> Done[Case]:
    return run_command(store, Case, case_id, command, first="case.Opened", attempts=attempts)


def case_state(case: Case) -> dict:
    return {
        "id": str(case.id),
        "customer_id": str(case.customer_id),
        "channel": case.channel,
        "status": case.status,
        "priority": case.priority,
        "assignee": case.assignee,
        "queue": case.queue,
        "tags": list(case.tags),
        "version": case.version,
    }


def load_customer(store: EventStore, customer_id: UUID) -> Customer:
    return load(store, Customer, customer_id, first="customer.Registered")


def merged_customers(store: EventStore, customer_id: UUID) -> list[Customer]:
    """The survivor of this customer, then everyone merged into it (and into them), from the log."""
    loaded: dict[UUID, Customer] = {}

    def load(i: UUID) -> Customer:
        if i not in loaded:
            loaded[i] = load_customer(store, i)
        return loaded[i]

    survivor = survivor_of(customer_id, lambda i: load(i).survivor_id)
    return [load(i) for i in merged_family(survivor, lambda i: load(i).absorbed)]


def erase_customer(store: EventStore, customer_id: UUID, requested_by: str, now: datetime) -> list[UUID]:
    """Records the erasure, then destroys the keys of the customer and everyone merged into them."""
    family = merged_customers(store, customer_id)
    ids = [c.id for c in family]
    customer = family[0]
    customer.erase(requested_by, now)
    events = customer.collect()
    with store.transaction() as tx:
        tx.append(events)
        store.keyring.destroy(tx.curs, ids)
        tx.execute("DELETE FROM sb_identities WHERE customer_id = ANY(%s)", (ids,))
    return ids
