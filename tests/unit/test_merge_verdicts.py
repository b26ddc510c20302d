"""A supervisor's verdict on a suggested merge, on in-memory aggregates: their decision stands over
the rule that keeps two company-side ids apart, and a verdict once given is not turned around."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from events.customer import CustomerAbsorbed, CustomerMerged, IdentityLinked, MergeSuggestionResolved
from projections.merge_suggestions import merge_suggestion_id
from services.domain.aggregate import DomainError
from services.domain.customer import Customer, SuggestionResolvedError

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def member(external: str) -> Customer:
    customer = Customer.register(uuid.uuid4(), T0)
    customer.link("external", external, T0)
    customer.collect()
    return customer


def test_two_external_ids_merge_only_when_a_person_decides():
    one, other = member("u-1"), member("u-2")
    with pytest.raises(DomainError):
        one.absorb(other, T0)
    assert one.collect() == [] and other.collect() == []
    one.absorb(other, T0, decided_by="supervisor-1")
    events = one.collect()
    merged = next(e for e in events if isinstance(e, CustomerMerged))
    assert (merged.absorbed_id, merged.by) == (other.id, "supervisor-1")
    assert [(e.kind, e.value) for e in events if isinstance(e, IdentityLinked)] == [("external", "u-2")]
    assert [type(e) for e in other.collect()] == [CustomerAbsorbed]
    assert one.external_ids == {"u-1", "u-2"}


def test_a_verdict_is_recorded_once_and_not_turned_around():
    one, other = member("u-1"), member("u-2")
    with pytest.raises(DomainError):
        one.resolve_suggestion(other.id, True, "sup", T0)  # nothing was suggested
    one.suggest_merge(other.id, "different external ids", T0)
    one.resolve_suggestion(other.id, False, "sup", T0)
    one.resolve_suggestion(other.id, False, "sup", T0)  # the same verdict again: nothing new
    [suggested, resolved] = one.collect()
    assert isinstance(resolved, MergeSuggestionResolved) and resolved.accepted is False
    with pytest.raises(SuggestionResolvedError):
        one.resolve_suggestion(other.id, True, "sup", T0)
    assert one.collect() == []


def test_a_suggestion_id_names_the_pair_whichever_way_round():
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert merge_suggestion_id(a, b) == merge_suggestion_id(b, a)
    assert len({merge_suggestion_id(a, b), merge_suggestion_id(a, c), merge_suggestion_id(b, c)}) == 3
