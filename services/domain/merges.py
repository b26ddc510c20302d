"""Following merges: an absorbed customer's id keeps resolving to its survivor, however many merges later.

A merge records `Absorbed(survivor_id)` on the absorbed customer and `Merged(absorbed_id)` on the
survivor; a survivor may be absorbed in turn, so an old id can be several hops from the customer
who holds its history now. Every reader of that chain (the core resolving an identity's owner, the
API resolving a profile, erasure collecting every record of a person, the relay finding where to
reply) walks it here, with one limit and loop detection, over a lookup it passes in: an aggregate
from the event store, a row of a side table or of a read model. The walk itself does no I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from uuid import UUID

from services.domain.aggregate import DomainError

# Longer than any chain real traffic builds (each hop needs a merge of the survivor itself), short
# enough that a corrupted chain fails at once instead of looping.
MERGE_CHAIN_LIMIT = 64


class MergeChainError(DomainError):
    """The merges of a customer loop or go on past MERGE_CHAIN_LIMIT: the data is corrupt."""


class _Walk:
    """The state of one walk: where it is, where it has been, how far it went."""

    __slots__ = ("current", "limit", "seen", "start")

    def __init__(self, start: UUID, limit: int):
        self.start = start
        self.current = start
        self.limit = limit
        self.seen: set[UUID] | None = None  # made on the first hop: most customers were never absorbed

    def step(self, survivor: UUID | None) -> bool:
        """Moves to `survivor` (the current customer's, None if it was never absorbed); False at the end."""
        if survivor is None:
            return False
        if self.seen is None:
            self.seen = {self.start}
        if survivor in self.seen:
            raise MergeChainError(f"the merges of customer {self.start} loop at {survivor}")
        if len(self.seen) > self.limit:
            raise MergeChainError(f"the merges of customer {self.start} go on past {self.limit} hops")
        self.seen.add(survivor)
        self.current = survivor
        return True


def survivor_of(
    customer_id: UUID, survivor_lookup: Callable[[UUID], UUID | None], limit: int = MERGE_CHAIN_LIMIT
) -> UUID:
    """The customer that holds `customer_id`'s history now: itself if never absorbed.

    `survivor_lookup(id)` says whom `id` was merged into (None: nobody). MergeChainError when the
    chain loops or is longer than `limit`.
    """
    walk = _Walk(customer_id, limit)
    while walk.step(survivor_lookup(walk.current)):
        pass
    return walk.current


async def survivor_of_async(
    customer_id: UUID, survivor_lookup: Callable[[UUID], Awaitable[UUID | None]], limit: int = MERGE_CHAIN_LIMIT
) -> UUID:
    """`survivor_of` for a lookup that awaits (an async database connection)."""
    walk = _Walk(customer_id, limit)
    while walk.step(await survivor_lookup(walk.current)):
        pass
    return walk.current


def merged_family(
    survivor_id: UUID, absorbed_lookup: Callable[[UUID], Iterable[UUID]], limit: int = MERGE_CHAIN_LIMIT
) -> list[UUID]:
    """`survivor_id`, then every customer merged into it, directly or through another, each once.

    `absorbed_lookup(id)` lists whom `id` absorbed. A customer met twice (a loop, or one absorbed
    twice in corrupt data) is listed once; the walk goes at most `limit` merges deep.
    """
    family = [survivor_id]
    seen = {survivor_id}
    frontier: list[tuple[UUID, int]] = [(survivor_id, 0)]
    while frontier:
        customer_id, depth = frontier.pop()
        for absorbed_id in absorbed_lookup(customer_id):
            if absorbed_id in seen:
                continue
            if depth >= limit:
                raise MergeChainError(f"the merges into customer {survivor_id} go on past {limit} levels")
            seen.add(absorbed_id)
            family.append(absorbed_id)
            frontier.append((absorbed_id, depth + 1))
    return family
