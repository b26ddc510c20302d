"""Case commands from agents: load the case, call the domain, save; retry when another writer won.

Synchronous (the event store is): the HTTP layer calls these in a worker thread.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from services.domain.case import Case
from services.domain.customer import Customer
from services.domain.merges import merged_family, survivor_of
from services.platform.eventstore.store import ConcurrencyError, EventStore


class NotFound(LookupError):
    pass


def load_case(store: EventStore, case_id: UUID) -> Case:
    events = store.load(case_id)
    if not events or events[0].NAME != "case.Opened":
        raise NotFound(f"case {case_id} not found")
    return Case.replay(case_id, events)


def run_case_command(store: EventStore, case_id: UUID, command: Callable[[Case], None], attempts: int = 5) -> Case:
    for attempt in range(attempts):
        case = load_case(store, case_id)
        command(case)
        events = case.collect()
        if not events:
            return case
        try:
            with store.transaction() as tx:
                tx.append(events)
            return case
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
            # Another writer (the core adding a message, another agent) won: back off a little,
            # randomly, so two retrying writers stop meeting each other.
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


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
    events = store.load(customer_id)
    if not events or events[0].NAME != "customer.Registered":
        raise NotFound(f"customer {customer_id} not found")
    return Customer.replay(customer_id, events)


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
