"""Explicit event dispatch: an aggregate declares its events, and a missing, misspelt or stray
handler fails when the class is created, not silently on replay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from events.case import CASE_EVENTS, CaseNoteAdded, CaseOpened, CaseResolved, CsatRecorded
from events.customer import CUSTOMER_EVENTS, CustomerRegistered
from services.domain.aggregate import Aggregate, UndeclaredEventError
from services.domain.case import Case
from services.domain.customer import Customer

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_a_misspelt_handler_fails_at_class_creation():
    with pytest.raises(TypeError, match="when_Reslved"):

        class Misspelt(Aggregate):  # noqa: F841
            EVENTS = (CaseOpened, CaseResolved)

            def when_Opened(self, e): ...

            def when_Resolved(self, e): ...

            def when_Reslved(self, e): ...


def test_a_declared_event_without_a_handler_fails_at_class_creation():
    with pytest.raises(TypeError, match="case.Resolved.*when_Resolved"):

        class Forgetful(Aggregate):  # noqa: F841
            EVENTS = (CaseOpened, CaseResolved)

            def when_Opened(self, e): ...

            def when_Reslved(self, e): ...


def test_an_event_that_changes_nothing_says_so_and_then_has_no_handler():
    class Quiet(Aggregate):
        EVENTS = (CaseOpened, CaseNoteAdded)
        STATELESS = (CaseNoteAdded,)

        def when_Opened(self, e): ...

    assert Quiet._handlers[CaseNoteAdded] is None
    with pytest.raises(TypeError, match="STATELESS"):

        class Contradictory(Aggregate):  # noqa: F841
            EVENTS = (CaseOpened, CaseNoteAdded)
            STATELESS = (CaseNoteAdded,)

            def when_Opened(self, e): ...

            def when_NoteAdded(self, e): ...

    with pytest.raises(TypeError, match="does not declare"):

        class Undeclared(Aggregate):  # noqa: F841
            EVENTS = (CaseOpened,)
            STATELESS = (CsatRecorded,)

            def when_Opened(self, e): ...


def test_an_event_the_aggregate_does_not_declare_is_refused():
    customer = Customer.register(uuid.uuid4(), T0)
    [registered] = customer.collect()
    with pytest.raises(UndeclaredEventError, match="Case does not handle customer.Registered"):
        Case.replay(customer.id, [registered])


def test_the_aggregates_handle_every_event_of_their_streams():
    assert set(Customer._handlers) == set(CUSTOMER_EVENTS)
    assert set(Case._handlers) == set(CASE_EVENTS)
    assert [e for e, h in Case._handlers.items() if h is None] == [CaseNoteAdded]
    assert all(h is not None for h in Customer._handlers.values())
    assert Customer._handlers[CustomerRegistered] is Customer.when_Registered
