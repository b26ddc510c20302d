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
    return {"id": str(case.id), "customer_id": str(case.customer_id), "channel": case.channel,
            "status": case.status, "priority": case.priority, "assignee": case.assignee, "queue": case.queue,
            "tags": list(case.tags), "version": case.version}


def erase_customer(store: EventStore, customer_id: UUID, requested_by: str, now: datetime) -> list[UUID]:
    """Records the erasure, then destroys the keys of the customer and everyone merged into them."""
    events = store.load(customer_id)
    if not events:
        raise NotFound(f"customer {customer_id} not found")
    customer = Customer.replay(customer_id, events)
    while customer.survivor_id is not None:
        customer = Customer.replay(customer.survivor_id, store.load(customer.survivor_id))
    ids = [customer.id]
    frontier = list(customer.absorbed)
    while frontier:
        absorbed_id = frontier.pop()
        ids.append(absorbed_id)
        frontier.extend(Customer.replay(absorbed_id, store.load(absorbed_id)).absorbed)
    customer.erase(requested_by, now)
    events = customer.collect()
    with store.transaction() as tx:
        tx.append(events)
        store.keyring.destroy(tx.curs, ids)
        tx.execute("DELETE FROM sb_identities WHERE customer_id = ANY(%s)", (ids,))
    return ids

