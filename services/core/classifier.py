"""The classifier role: every inbound message with text and a case gets a `case.Classified`.

(Here in services.core, the use-case layer, beside the ingest it follows: services.intelligence
holds the pure classifier and its worker process, a layer below.)

A `services.platform.follower.Follower` named "classifier": one active per database (others stand
by), following the event log from its stored position. For a batch, the inbound
`customer.InteractionRecorded` with text and a case are classified together (one
`Classifier.classify_many` call), each case's opening and classifications are read once, and
`Classifications.classify` records the result on the case's classification stream, not the case's
own (once per message of that case: a replayed batch, a duplicate or a second follower adds nothing),
and the events are appended in the transaction that stores the follower's position: exactly once,
and a restart goes on from where it stopped.

It runs beside the core, not in its batch: ingest does not wait for classification. In a running
Switchboard the model lives in a worker process at a lower CPU priority (services.intelligence.worker),
trained there from the shipped data or from `SWITCHBOARD_CLASSIFIER_DATA`; tests may pass an
in-process classifier. Message text is read here and never
logged; nothing leaves the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from uuid import UUID

from events.case import CaseOpened
from events.customer import InteractionRecorded
from services.core import batch_sql
from services.domain.case import Classifications
from services.intelligence.classify import Classification, default_classifier
from services.platform.eventstore.store import EventStore, Transaction
from services.platform.follower import Follower
from services.platform.logs import get_logger

log = get_logger(__name__)

CLASSIFIER = "classifier"  # the role's and the follower's name


class Classifies(Protocol):
    def classify_many(self, texts: Sequence[str]) -> list[Classification]: ...


class ClassifierRole:
    """The follower's handler: `handle(tx, items)` classifies a batch's inbound messages."""

    def __init__(self, store: EventStore, classifier: Callable[[], Classifies] = default_classifier):
        self.store = store
        self.classifier = classifier
        self.appended = 0  # events this role appended since YieldToIngest last looked

    def handle(self, tx: Transaction, items: Sequence[tuple[Any, ...]]) -> None:
        todo = [
            event
            for _position, event, redacted in items
            if type(event) is InteractionRecorded
            and event.direction == "inbound"
            and event.case_id is not None
            and not redacted
            and event.text.strip()
        ]
        if not todo:
            return
        results = self.classifier().classify_many([event.text for event in todo])
        opened = self._opened(tx, {event.case_id for event in todo if event.case_id is not None})
        classifications: dict[UUID, Classifications] = self._classifications(tx, set(opened))
        for event, result in zip(todo, results, strict=True):
            case_id = event.case_id
            assert case_id is not None
            customer_id = opened.get(case_id)
            if customer_id is None:  # a case not in this log: nothing recorded, as always
                continue
            classifications[case_id].classify(
                case_id,
                customer_id,
                event.interaction_id,
                result.language,
                result.sentiment,
                result.intent,
                result.confidence,
                event.occurred_at,
            )
        events = [e for c in classifications.values() for e in c.collect()]
        if events:
            tx.append(events)
        self.appended += len(events)
        log.info("classified", messages=len(todo), recorded=len(events))

    def _opened(self, tx: Transaction, case_ids: set[UUID]) -> dict[UUID, UUID]:
        """case → the customer it was opened for (whose key seals its events), from each case's first
        event alone: the core adds a message to its case in the transaction that records it, so the
        rest of the case's stream has nothing the classifier needs (reading it all was a third of
        the role's time)."""
        stored = batch_sql.first_events(tx, sorted(case_ids))
        out: dict[UUID, UUID] = {}
        for s, (event, _redacted) in zip(stored, self.store.open_stored(stored), strict=True):
            if isinstance(event, CaseOpened):
                out[s.originator_id] = event.customer_id
        return out

    def _classifications(self, tx: Transaction, case_ids: set[UUID]) -> dict[UUID, Classifications]:
        """Each case's classifications so far, read in one query in the follower's transaction (so no
        state outlives a batch that does not commit)."""
        streams = {Classifications.stream_of(case_id): case_id for case_id in case_ids}
        stored = batch_sql.stored_events_after(tx, dict.fromkeys(sorted(streams), 0))
        events: dict[UUID, list] = {}
        for s, (event, _redacted) in zip(stored, self.store.open_stored(stored), strict=True):
            events.setdefault(s.originator_id, []).append(event)
        return {case_id: Classifications.replay(stream, events.get(stream, [])) for stream, case_id in streams.items()}


class YieldToIngest:
    """The follower's pause: while the log grows fast by others' hands (ingest is busy), the classifier
    works `share` of the time, waiting after each batch; when the log is quiet it goes full speed.

    A worker process of low priority was not enough: the follower's own reading, sealing and commits
    run in the role's process and take the event table's lock beside the core's, and with a backlog
    being ingested it cost a quarter of the rate (tests/benchmarks/ingest.py, `classifier_ratio`).
    Ingest goes first; classification catches up once the rate drops below `busy_per_s`."""

    def __init__(
        self,
        store: EventStore,
        role: ClassifierRole,
        busy_per_s: float = 1000.0,
        share: float = 0.25,
        longest: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.role = role
        self.busy_per_s = busy_per_s
        self.share = share
        self.longest = longest
        self.clock = clock
        self._last: tuple[int, float] | None = None

    def __call__(self, elapsed: float) -> float:
        head, now = self.store.max_position(), self.clock()
        ours, self.role.appended = self.role.appended, 0
        last, self._last = self._last, (head, now)
        if last is None or now <= last[1]:
            return 0.0
        others = (head - last[0] - ours) / (now - last[1])
        if others < self.busy_per_s:
            return 0.0
        return min(self.longest, elapsed * (1 - self.share) / self.share)


def classifier_follower(
    store: EventStore, classifier: Callable[[], Classifies] = default_classifier, batch_size: int = 500
) -> Follower:
    """The classifier as the follower the `classifier` role runs (one active per database)."""
    role = ClassifierRole(store, classifier)
    return Follower(store, CLASSIFIER, role.handle, batch_size=batch_size, pause_after=YieldToIngest(store, role))
