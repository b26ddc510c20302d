"""The classifier's pause (services/core/classifier.py: YieldToIngest): it yields while others append
to the log fast, and goes full speed when the log is quiet; its own appends do not count."""

from __future__ import annotations

import pytest

from services.core.classifier import YieldToIngest

pytestmark = pytest.mark.unit


class Log:
    def __init__(self) -> None:
        self.head = 0

    def max_position(self) -> int:
        return self.head


class Role:
    appended = 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_it_pauses_while_ingest_is_busy_and_not_when_the_log_is_quiet() -> None:
    log, role, clock = Log(), Role(), Clock()
    pause = YieldToIngest(log, role, busy_per_s=1000, share=0.25, longest=1.0, clock=clock)  # type: ignore[arg-type]
    assert pause(0.1) == 0.0, "nothing to compare with yet"
    clock.now += 1.0
    log.head += 3000  # ingest appending 3,000 events a second
    assert pause(0.1) == pytest.approx(0.3), "a quarter of the time: three times the batch's time waited"
    clock.now += 1.0
    log.head += 3000
    assert pause(2.0) == 1.0, "never longer than `longest`"
    clock.now += 1.0
    log.head += 50  # ingest done: only a trickle
    assert pause(0.1) == 0.0


def test_its_own_appends_do_not_count_as_ingest() -> None:
    log, role, clock = Log(), Role(), Clock()
    pause = YieldToIngest(log, role, busy_per_s=1000, clock=clock)  # type: ignore[arg-type]
    pause(0.1)
    clock.now += 1.0
    log.head += 1500
    role.appended = 1200  # the classifier's own classifications: others appended 300
    assert pause(0.1) == 0.0
    assert role.appended == 0, "counted once"
