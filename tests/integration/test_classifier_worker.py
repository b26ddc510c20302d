"""The classifier's worker process: trained at its parent's priority, then serving at the low one.

Trained at niceness 19 on a busy machine the model was never ready (the ingest bench: a minute of
backlog and not one message classified); trained first, it answers, and its serving work still
takes only the CPU ingest leaves over."""

from __future__ import annotations

import os

import pytest

from services.intelligence.worker import ClassifierProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # training: minutes on a loaded machine


def niceness(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def test_the_worker_answers_then_serves_at_the_low_priority() -> None:
    worker = ClassifierProcess(nice=7)
    try:
        [result] = worker.classify_many(["Thank you so much, the agent was brilliant"])
        assert (result.language, result.sentiment) == ("en", "positive")
        assert niceness(worker._proc.pid) == niceness(os.getpid()) + 7
    finally:
        worker.close()
