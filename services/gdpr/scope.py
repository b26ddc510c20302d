"""Who an erasure is about: the survivor and everyone merged into it, and what only their keys can tell."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from channels.blobs import BLOB_PREFIX
from events.customer import IdentityClaimed, IdentityLinked, InteractionRecorded
from services.core.commands import NotFound, merged_customers
from services.platform.eventstore.store import EventStore


class CustomerNotFound(LookupError):
    pass


def erasure_scope(store: EventStore, customer_id: UUID) -> list[UUID]:
    """The survivor of this customer, then everyone merged into it (and into them)."""
    try:
        return [c.id for c in merged_customers(store, customer_id)]
    except NotFound as exc:
        raise CustomerNotFound(str(exc)) from exc


@dataclass
class Footprint:
    """What only the keys can tell: chat sessions, blind indexes of identities, attachment blobs."""

    sessions: set[str] = field(default_factory=set)
    blinds: set[bytes] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)


def footprint(store: EventStore, ids: list[UUID]) -> Footprint:
    found = Footprint()
    sessions, blinds, blobs = found.sessions, found.blinds, found.blobs
    for cid in ids:
        for event, redacted in store.open_stored(store.recorder.select_events(cid)):
            if redacted:
                continue
            if isinstance(event, IdentityLinked | IdentityClaimed):
                blinds.add(store.master.blind_index(event.kind, event.value))
                if event.kind == "chat":
                    sessions.add(event.value)
            elif isinstance(event, InteractionRecorded):
                if event.thread_key and event.thread_key.startswith("chat:"):
                    sessions.add(event.thread_key.split(":", 1)[1])
                blobs.update(
                    a.ref[len(BLOB_PREFIX) :] for a in event.attachments if a.ref and a.ref.startswith(BLOB_PREFIX)
                )
    return found


def recorded(store: EventStore, ids: list[UUID]) -> tuple[set[UUID], set[UUID]]:
    """The ids of the customers' interactions and of their cases (both in clear: readable after erasure)."""
    interactions: set[UUID] = set()
    cases: set[UUID] = set()
    for cid in ids:
        for event in store.load(cid):
            if isinstance(event, InteractionRecorded):
                interactions.add(event.interaction_id)
                if event.case_id is not None:
                    cases.add(event.case_id)
    return interactions, cases
