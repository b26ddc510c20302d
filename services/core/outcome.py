"""What processing a batch came to, and a batch committed later (`Prepared`)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from uuid import UUID

from services.platform.eventstore.store import Transaction


class PoisonInteraction(Exception):
    """This interaction can never be processed as it is (bad data or a broken rule)."""

    def __init__(self, interaction_id: UUID | None, reason: str):
        super().__init__(reason)
        self.interaction_id = interaction_id
        self.reason = reason


@dataclass
class Outcome:
    recorded: list[UUID] = field(default_factory=list)
    duplicates: list[UUID] = field(default_factory=list)
    poison: dict[UUID, str] = field(default_factory=dict)  # rejected for good: dead-letter now
    failed: dict[UUID, str] = field(default_factory=dict)  # unexpected error: retry, then dead-letter
    events: int = 0
    positions: list[int] = field(default_factory=list)
    conflicts: int = 0

    def add(self, other: Outcome) -> None:
        self.recorded += other.recorded
        self.duplicates += other.duplicates
        self.poison.update(other.poison)
        self.failed.update(other.failed)
        self.events += other.events
        self.positions += other.positions
        self.conflicts += other.conflicts


class _Aborted(Exception):
    pass


class Prepared:
    """A batch whose events and records are written in a transaction that is still open."""

    def __init__(self, outcome: Outcome, context, tx: Transaction, touched: list[UUID]):
        self.outcome = outcome
        self.tx = tx
        self.touched = touched  # the aggregates it changed in memory: forget them if it never commits
        self.changed_owners: dict[bytes, UUID] = {}
        self._context = context

    def commit(self) -> Outcome:
        """Appends the events (under the log's lock) and commits; ConcurrencyError if another writer won."""
        context, self._context = self._context, None
        context.__exit__(None, None, None)
        self.outcome.positions = self.tx.positions
        return self.outcome

    def abort(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            try:
                context.__exit__(_Aborted, _Aborted(), None)
            except _Aborted:
                pass


class LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get(self, key, default=None):
        value = super().get(key, default)
        if value is not default:
            self.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)
