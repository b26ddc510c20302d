"""One event a projection cannot apply is quarantined; every other event is projected.

The poisonous events are written by the real core, the way connectors and channels could before the
sanitiser existed (the core's processor itself does not clean text: that happens where interactions
are decoded), so the log holds exactly what an old deployment's log may hold.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from events.interactions import Identity, Interaction
from projections.runner import ProjectionRunner
from services.core.processor import CoreProcessor
from tests.fixtures.cli import switchboard

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _sms(n: int, text: str) -> Interaction:
    return Interaction(
        id=uuid.uuid4(),
        channel="sms",
        direction="inbound",
        occurred_at=T0 + timedelta(seconds=n),
        identities=[Identity("phone", f"+44770090{n:04d}")],
        text=text,
        provider_message_id=secrets.token_hex(8),
    )


def _record(store, interactions: list[Interaction]) -> None:
    outcome = CoreProcessor(store).process([(i, None) for i in interactions])
    assert len(outcome.recorded) == len(interactions), outcome


def _sql(settings, query: str, params=()) -> list:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _timeline_ids(settings) -> set[uuid.UUID]:
    return {row[0] for row in _sql(settings, "SELECT interaction_id FROM proj_timeline")}


def _quarantine(settings) -> list[tuple]:
    return _sql(
        settings, "SELECT consumer, position, event_type, reason, attempts FROM sb_quarantine ORDER BY position"
    )


def test_a_nul_in_the_middle_of_a_batch_is_quarantined_and_the_rest_projected(store, settings) -> None:
    # Enough rows on each side that the batch goes through the COPY staging path, then per-row arrays.
    before = [_sms(n, f"before {n}") for n in range(70)]
    poison = _sms(500, "hello\x00 from a secret 07700 900123")
    after = [_sms(600 + n, f"after {n}") for n in range(70)]
    _record(store, [*before, poison, *after])

    runner = ProjectionRunner(store)
    runner.catch_up()  # the old runner raised here, on every try, forever

    projected = _timeline_ids(settings)
    assert {i.id for i in before + after} <= projected
    assert poison.id not in projected
    quarantined = _quarantine(settings)
    assert len(quarantined) == 1
    consumer, position, event_type, reason, attempts = quarantined[0]
    assert (consumer, event_type, attempts) == ("projection:timeline", "customer.InteractionRecorded", 1)
    assert reason.startswith("DataError") and "NUL" in reason
    assert "secret" not in reason and "900123" not in reason
    # The other projections applied the same event: the customer is there, with the message counted.
    counts = _sql(
        settings,
        "SELECT c.interaction_count FROM proj_customers c JOIN proj_identities i "
        "ON i.customer_id = c.id WHERE i.value = %s",
        (poison.identities[0].value,),
    )
    assert counts == [(1,)]
    assert all(runner.positions().values()) and len(set(runner.positions().values())) == 1

    # The projector goes on: a later message is projected by the next batch.
    later = _sms(900, "a later message")
    _record(store, [later])
    assert runner.run_once() > 0
    assert later.id in _timeline_ids(settings)

    # Listed by the CLI; a retry without a fix fails again and keeps it, one attempt more.
    listed = switchboard(settings, "quarantine", "list")
    assert listed.returncode == 0, listed.stderr.decode()
    lines = listed.stdout.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"projection:timeline\t{position}\tcustomer.InteractionRecorded\t")
    retried = switchboard(settings, "quarantine", "retry", "--projection", "timeline")
    assert retried.returncode == 1 and b"1 still quarantined" in retried.stdout
    assert _quarantine(settings)[0][4] == 2


def test_retry_after_the_cause_is_fixed_applies_the_event_and_releases_it(store, settings) -> None:
    runner = ProjectionRunner(store)
    runner.create_schema()
    # A broken read model (think: a bad migration) that refuses one kind of row; fixed below.
    _sql(settings, "ALTER TABLE proj_timeline ADD CONSTRAINT broken_migration CHECK (text NOT LIKE '%%refund%%')")
    first, refused, last = _sms(1, "first"), _sms(2, "I want a refund"), _sms(3, "last")
    _record(store, [first])
    _record(store, [refused])
    _record(store, [last])
    runner.catch_up()
    assert _timeline_ids(settings) == {first.id, last.id}
    ((consumer, position, _type, reason, _attempts),) = _quarantine(settings)
    assert consumer == "projection:timeline"
    assert reason.startswith("CheckViolation [23514]") and "constraint broken_migration" in reason
    assert "refund" not in reason

    _sql(settings, "ALTER TABLE proj_timeline DROP CONSTRAINT broken_migration")
    retried = switchboard(settings, "quarantine", "retry", "--projection", "timeline", "--position", str(position))
    assert retried.returncode == 0, (retried.stdout + retried.stderr).decode()
    assert b"1 event(s) handled and released, 0 still quarantined" in retried.stdout
    assert _timeline_ids(settings) == {first.id, refused.id, last.id}
    assert _quarantine(settings) == []
    assert switchboard(settings, "quarantine", "list").stdout == b""


def test_rebuild_quarantines_instead_of_failing(store, settings) -> None:
    good = [_sms(n, f"message {n}") for n in range(5)]
    poison = _sms(50, "\x00")
    _record(store, [*good[:2], poison, *good[2:]])
    rebuilt = switchboard(settings, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr.decode()
    assert _timeline_ids(settings) == {i.id for i in good}
    assert [(q[0], q[2]) for q in _quarantine(settings)] == [("projection:timeline", "customer.InteractionRecorded")]
    # Rebuilding again starts from zero: the same event is quarantined once, not twice.
    assert switchboard(settings, "projections", "rebuild", "timeline").returncode == 0
    assert [q[4] for q in _quarantine(settings)] == [1]
