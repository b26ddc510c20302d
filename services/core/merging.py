"""Merges a supervisor decides: accepting or rejecting a suggested merge, and merging two customers
by hand. The same merge the core makes (`Customer.absorb`, then the identity index and the alias
table moved to the survivor, `batch_sql.write_merges`), in one transaction with its events.

Racing the core: both append to the customers' streams, so whichever commits second meets a version
conflict and starts again from a fresh load (the core's batches retry the same way, and a core that
cached a customer before the merge finds out at its next append). Nothing forks, nothing is lost.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from services.core.batch_sql import write_merges
from services.core.commands import NotFound, load_customer
from services.domain.aggregate import DomainError
from services.domain.customer import Customer
from services.domain.merges import survivor_of
from services.domain.resolution import survivor_among
from services.platform.eventstore.store import ConcurrencyError, EventStore


@dataclass
class MergeDone:
    position: int  # read it back with Sb-Min-Position
    survivor_id: UUID | None  # the customer holding both histories now (None: rejected)
    absorbed_id: UUID | None  # None: nothing merged (rejected, or already one customer)


class _Loaded:
    """Customers loaded for one attempt, each once (the same object however it is reached)."""

    def __init__(self, store: EventStore):
        self.store = store
        self.customers: dict[UUID, Customer] = {}

    def __call__(self, customer_id: UUID) -> Customer:
        if customer_id not in self.customers:
            self.customers[customer_id] = load_customer(self.store, customer_id)
        return self.customers[customer_id]

    def survivor(self, customer_id: UUID) -> Customer:
        return self(survivor_of(customer_id, lambda i: self(i).survivor_id))

    def events(self) -> list:
        return [e for c in self.customers.values() for e in c.collect()]


def resolve_suggestion(store: EventStore, one: UUID, other: UUID, accepted: bool, by: str, at: datetime) -> MergeDone:
    """Records the supervisor's verdict on the suggested merge of `one` and `other` (on whichever of
    them it was suggested); accepted, merges them into the first registered, as the core would."""

    def decide(loaded: _Loaded) -> tuple[UUID | None, UUID] | None:
        holders = [c for c in (loaded(one), loaded(other)) if ({one, other} - {c.id}) & c.suggested]
        if not holders:
            raise NotFound(f"no merge of {one} and {other} was suggested")
        for customer in holders:
            customer.resolve_suggestion(other if customer.id == one else one, accepted, by, at)
        if not accepted:
            return None
        return _absorb(loaded, survivor_among, one, other, by, at)

    return _run(store, decide)


def merge_by_hand(store: EventStore, customer_id: UUID, other_id: UUID, by: str, at: datetime) -> MergeDone:
    """Merges `other_id` (its survivor) into `customer_id` (its survivor), whatever their ids say."""

    def decide(loaded: _Loaded) -> tuple[UUID | None, UUID]:
        merge = _absorb(loaded, lambda pair: pair[0], customer_id, other_id, by, at)
        if merge[0] is None:
            raise DomainError(f"{customer_id} and {other_id} are one customer already")
        return merge

    return _run(store, decide)


def _absorb(loaded: _Loaded, pick, one: UUID, other: UUID, by: str, at: datetime) -> tuple[UUID | None, UUID]:
    """(absorbed, survivor); absorbed None when the two are one customer already."""
    first, second = loaded.survivor(one), loaded.survivor(other)
    if first.id == second.id:
        return None, first.id
    survivor = pick([first, second])
    absorbed = second if survivor is first else first
    survivor.absorb(absorbed, at, decided_by=by)
    return absorbed.id, survivor.id


def _run(store: EventStore, decide, patience: float = 30.0) -> MergeDone:
    """Optimistic: load, decide, write; on a lost race load again. The core may write to a busy
    customer many times a second, so retries go on for `patience` seconds (with jittered, capped
    backoff), not for a fixed number of attempts that a busy customer can outrun."""
    deadline = time.monotonic() + patience
    attempt = 0
    while True:
        loaded = _Loaded(store)
        absorbed, survivor = decide(loaded) or (None, None)
        events = loaded.events()
        if not events:
            return MergeDone(store.max_position(), survivor, None)
        try:
            with store.transaction() as tx:
                if absorbed is not None:
                    write_merges(tx, [(absorbed, survivor)])
                tx.append(events)
            return MergeDone(tx.positions[-1], survivor, absorbed)
        except ConcurrencyError:
            if time.monotonic() >= deadline:
                raise
            # The core (or another supervisor) wrote to one of these customers first: load again.
            attempt += 1
            time.sleep(random.uniform(0, min(0.25, 0.01 * 2 ** min(attempt, 5))))
