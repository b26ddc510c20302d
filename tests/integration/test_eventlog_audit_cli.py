"""`switchboard audit verify` finds rows altered, deleted or inserted behind the service's back.

The log is written by the real core; the tampering is done the way someone with plain database
access (but not the master key) could: straight SQL on `sb_events`.
"""

from __future__ import annotations

import os
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from events.interactions import Identity, Interaction
from services.core.processor import CoreProcessor
from tests.fixtures.cli import switchboard

pytestmark = pytest.mark.integration

CUSTOMERS = 12


@pytest.fixture
def written(store, settings) -> int:
    """The count of events the core wrote for a dozen customers (one transaction per batch of four)."""
    core = CoreProcessor(store)
    at = datetime(2024, 6, 1, tzinfo=UTC)
    interactions = [
        Interaction(
            id=uuid.uuid4(),
            channel="sms",
            direction="inbound",
            occurred_at=at + timedelta(minutes=i),
            identities=[Identity("phone", f"+4477009001{i:02d}")],
            text=f"message {i}",
            provider_message_id=secrets.token_hex(6),
        )
        for i in range(CUSTOMERS)
    ]
    for start in range(0, CUSTOMERS, 4):
        core.process([(i, None) for i in interactions[start : start + 4]])
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT count(*) FROM sb_events").fetchone()[0]


def _bad_position(result) -> int:
    output = (result.stdout + result.stderr).decode()
    found = re.findall(r"position (\d+)", output)
    assert found, output
    return int(found[0])


def _sql(settings, query: str, params=()) -> list:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def test_an_intact_log_exits_0_with_the_count(settings, written) -> None:
    result = switchboard(settings, "audit", "verify")
    assert result.returncode == 0, result.stderr.decode()
    assert written >= CUSTOMERS * 3 and f"{written} events" in result.stdout.decode()


def test_an_altered_row_exits_1_naming_it(settings, written) -> None:
    position = written // 2
    # Still a well-formed event: only a space added to its JSON.
    _sql(
        settings,
        "UPDATE sb_events SET state = convert_to(replace(convert_from(state, 'UTF8'), '\"v\":', '\"v\": '), "
        "'UTF8') WHERE notification_id = %s",
        (position,),
    )
    result = switchboard(settings, "audit", "verify")
    assert result.returncode == 1
    assert _bad_position(result) == position


def test_a_moved_row_exits_1_naming_it(settings, written) -> None:
    """Swapping two events' contents (each still a valid event) is an alteration too."""
    a, b = 5, written - 5
    _sql(
        settings,
        "UPDATE sb_events e SET state = o.state FROM sb_events o "
        "WHERE (e.notification_id, o.notification_id) IN ((%s, %s), (%s, %s))",
        (a, b, b, a),
    )
    result = switchboard(settings, "audit", "verify")
    assert result.returncode == 1 and _bad_position(result) == a


def test_a_deleted_row_exits_1_naming_the_row_after_it(settings, written) -> None:
    position = written // 3
    _sql(settings, "DELETE FROM sb_events WHERE notification_id = %s", (position,))
    result = switchboard(settings, "audit", "verify")
    assert result.returncode == 1
    assert _bad_position(result) == position + 1


def test_deleting_the_newest_rows_is_found_too(settings, written) -> None:
    _sql(settings, "DELETE FROM sb_events WHERE notification_id > %s", (written - 3,))
    result = switchboard(settings, "audit", "verify")
    assert result.returncode == 1
    assert _bad_position(result) == written - 2


def test_a_forged_row_exits_1_naming_it(settings, written) -> None:
    """A row copied from a real one, with a link made up by someone without the chain key."""
    ((version, topic, state),) = _sql(
        settings, "SELECT originator_version, topic, state FROM sb_events WHERE notification_id = 1"
    )
    ((forged,),) = _sql(
        settings,
        "INSERT INTO sb_events (originator_id, originator_version, topic, state, chain) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING notification_id",
        (uuid.uuid4(), version, topic, state, os.urandom(32)),
    )
    assert forged == written + 1
    result = switchboard(settings, "audit", "verify")
    assert result.returncode == 1
    assert _bad_position(result) == forged


def test_a_forged_row_in_the_middle_exits_1_naming_it(settings, written) -> None:
    """Deleting a row and putting a made-up one at its position."""
    position = written // 2
    ((stream, version, topic, state),) = _sql(
        settings,
        "SELECT originator_id, originator_version, topic, state FROM sb_events WHERE notification_id = %s",
        (position,),
    )
    _sql(settings, "DELETE FROM sb_events WHERE notification_id = %s", (position,))
    _sql(
        settings,
        "INSERT INTO sb_events (notification_id, originator_id, originator_version, topic, state, chain) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (position, stream, version, topic, state.replace(b"message", b"massage"), os.urandom(32)),
    )
    result = switchboard(settings, "audit", "verify")
    assert result.returncode == 1
    assert _bad_position(result) == position
