"""Following merges (services.domain.merges): one walk, one limit, loops caught."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.domain.aggregate import DomainError
from services.domain.merges import (
    MERGE_CHAIN_LIMIT,
    MergeChainError,
    merged_family,
    survivor_of,
    survivor_of_async,
)

pytestmark = pytest.mark.unit


def chain(length: int) -> list[uuid.UUID]:
    """ids[0] merged into ids[1], merged into ids[2] ...: `length` hops."""
    return [uuid.uuid4() for _ in range(length + 1)]


def lookup_of(ids: list[uuid.UUID]):
    survivors = dict(zip(ids, ids[1:], strict=False))
    asked: list[uuid.UUID] = []

    def lookup(i: uuid.UUID) -> uuid.UUID | None:
        asked.append(i)
        return survivors.get(i)

    return lookup, asked


def test_a_customer_never_absorbed_is_its_own_survivor():
    ids = chain(0)
    lookup, asked = lookup_of(ids)
    assert survivor_of(ids[0], lookup) == ids[0]
    assert asked == [ids[0]]


def test_every_hop_is_followed_to_the_end():
    ids = chain(5)
    lookup, asked = lookup_of(ids)
    assert survivor_of(ids[0], lookup) == ids[-1]
    assert asked == ids
    assert survivor_of(ids[3], lookup) == ids[-1]


def test_a_chain_as_long_as_the_limit_is_followed_and_a_longer_one_is_an_error():
    ids = chain(MERGE_CHAIN_LIMIT)
    assert survivor_of(ids[0], lookup_of(ids)[0]) == ids[-1]
    longer = chain(MERGE_CHAIN_LIMIT + 1)
    with pytest.raises(MergeChainError, match="past"):
        survivor_of(longer[0], lookup_of(longer)[0])
    short = chain(3)
    with pytest.raises(MergeChainError):
        survivor_of(short[0], lookup_of(short)[0], limit=2)


def test_a_loop_is_an_error_not_a_hang():
    a, b, c = chain(2)
    survivors = {a: b, b: c, c: a}
    with pytest.raises(MergeChainError, match="loop") as raised:
        survivor_of(a, survivors.get)
    assert isinstance(raised.value, DomainError)  # the core dead-letters the message, it does not retry
    with pytest.raises(MergeChainError, match="loop"):
        survivor_of(a, {a: a}.get)


def test_the_async_walk_is_the_same_walk():
    ids = chain(4)

    async def lookup(i):
        return dict(zip(ids, ids[1:], strict=False)).get(i)

    assert asyncio.run(survivor_of_async(ids[0], lookup)) == ids[-1]

    async def looping(i):
        return i

    with pytest.raises(MergeChainError):
        asyncio.run(survivor_of_async(ids[0], looping))


def test_the_family_is_the_survivor_then_everyone_merged_into_it_at_any_depth_once():
    s, a, b, c, d = (uuid.uuid4() for _ in range(5))
    absorbed = {s: [a, b], a: [c], c: [d], b: [], d: []}
    family = merged_family(s, lambda i: absorbed.get(i, []))
    assert family[0] == s
    assert sorted(family[1:]) == sorted([a, b, c, d])
    assert len(family) == 5
    # Corrupt data: d absorbed s again, and b was listed twice.
    absorbed[d] = [s]
    absorbed[s] = [a, b, b]
    family = merged_family(s, lambda i: absorbed.get(i, []))
    assert sorted(family) == sorted([s, a, b, c, d])


def test_a_family_deeper_than_the_limit_is_an_error():
    ids = chain(4)  # ids[4] absorbed ids[3], which absorbed ids[2] ...
    absorbed = {later: [earlier] for earlier, later in zip(ids, ids[1:], strict=False)}
    assert merged_family(ids[-1], lambda i: absorbed.get(i, []), limit=4) == list(reversed(ids))
    with pytest.raises(MergeChainError):
        merged_family(ids[-1], lambda i: absorbed.get(i, []), limit=3)
