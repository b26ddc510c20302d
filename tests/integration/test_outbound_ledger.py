"""The outbound ledger on real PostgreSQL: an attempt is recorded before the provider is called, a
settled message is never sent again, and an attempt in doubt is settled (asked of the provider, or
failed with its reason) before anything is resent."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from channels.errors import ProviderError
from services.platform.schema import bring_up_to_date
from services.relay.ledger import UNKNOWN_OUTCOME, OutboundLedger, deliver, owner_lock_key

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(store, database_url):
    bring_up_to_date(store)
    led = OutboundLedger(store, database_url)
    led.hold_owner_lock()
    yield led
    led.release_owner_lock()


class Provider:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self) -> str | None:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else f"SM{self.calls}"
        if isinstance(answer, Exception):
            raise answer
        return answer


def crashed_attempt(database_url: str, key: str, owner: uuid.UUID | None = None) -> None:
    """What a process killed between the provider's answer and our record leaves behind."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO sb_outbound_ledger (key, channel, state, owner, started_at, attempts) "
            "VALUES (%s, 'sms', 'sending', %s, now(), 1)",
            (key, owner or uuid.uuid4()),
        )


async def test_a_message_is_sent_once_and_a_second_delivery_does_not_send_it_again(ledger):
    provider = Provider("SM1")
    first = await deliver(ledger, "reply:a", "sms", provider)
    again = await deliver(ledger, "reply:a", "sms", provider)
    assert (first.status, first.provider_message_id) == ("sent", "SM1")
    assert (again.status, again.provider_message_id) == ("sent", "SM1")
    assert provider.calls == 1
    assert ledger.state("reply:a") == "sent"


async def test_a_refusal_fails_for_good_and_an_outage_is_tried_again(ledger):
    refused = Provider(ProviderError(False, "twilio answered HTTP 400 (code 21211)"))
    result = await deliver(ledger, "reply:r", "sms", refused)
    assert (result.status, result.reason) == ("failed", "twilio answered HTTP 400 (code 21211)")
    assert (await deliver(ledger, "reply:r", "sms", refused)).status == "failed"
    assert refused.calls == 1

    outage = Provider(ProviderError(True, "twilio answered HTTP 503"), "SM9")
    assert (await deliver(ledger, "reply:o", "sms", outage)).status == "retry"
    assert ledger.state("reply:o") == "pending"  # an answer: surely not sent, no doubt
    result = await deliver(ledger, "reply:o", "sms", outage)
    assert (result.status, result.provider_message_id, outage.calls) == ("sent", "SM9", 2)


async def test_an_attempt_in_doubt_found_at_the_provider_is_recorded_not_resent(ledger, database_url):
    crashed_attempt(database_url, "reply:found")
    provider = Provider()
    asked = []

    async def lookup(since):
        asked.append(since)
        return "SMfound"

    result = await deliver(ledger, "reply:found", "sms", provider, lookup=lookup)
    assert (result.status, result.provider_message_id) == ("sent", "SMfound")
    assert provider.calls == 0 and len(asked) == 1


async def test_an_attempt_in_doubt_the_provider_never_saw_is_sent_once(ledger, database_url):
    crashed_attempt(database_url, "reply:lost")
    provider = Provider("SMnew")

    async def lookup(since):
        return None

    result = await deliver(ledger, "reply:lost", "sms", provider, lookup=lookup)
    assert (result.status, result.provider_message_id, provider.calls) == ("sent", "SMnew", 1)


async def test_without_a_lookup_an_attempt_in_doubt_fails_with_its_reason(ledger, database_url):
    crashed_attempt(database_url, "reply:meta")
    provider = Provider()
    result = await deliver(ledger, "reply:meta", "messenger", provider)
    assert (result.status, result.reason) == ("failed", UNKNOWN_OUTCOME)
    assert provider.calls == 0
    # ... unless the provider drops a resend itself (chat's outbox, email's Message-ID)
    crashed_attempt(database_url, "reply:mail")
    mail = Provider("<id@x>")
    assert (await deliver(ledger, "reply:mail", "email", mail, resend_safe=True)).status == "sent"
    assert mail.calls == 1


async def test_a_timeout_stays_in_doubt_and_an_owner_still_alive_is_waited_for(ledger, database_url):
    timed_out = Provider(ProviderError(True, "twilio: ReadTimeout", in_doubt=True))
    assert (await deliver(ledger, "reply:t", "sms", timed_out)).status == "retry"
    assert ledger.state("reply:t") == "sending"
    # Our own attempt that timed out is in doubt at once: the provider is asked.
    result = await deliver(ledger, "reply:t", "sms", timed_out, lookup=_found("SMt"))
    assert (result.status, result.provider_message_id, timed_out.calls) == ("sent", "SMt", 1)

    # Another process's attempt, that process still alive (it holds its lock): not touched.
    other = uuid.uuid4()
    crashed_attempt(database_url, "reply:busy", owner=other)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (owner_lock_key(other),))
        provider = Provider()
        result = await deliver(ledger, "reply:busy", "sms", provider, lookup=_found("SMx"))
        assert result.status == "retry" and provider.calls == 0
    # ... and once it is gone, settled.
    result = await deliver(ledger, "reply:busy", "sms", provider, lookup=_found("SMx"))
    assert (result.status, result.provider_message_id) == ("sent", "SMx")


def _found(sid):
    async def lookup(since):
        return sid

    return lookup


async def test_giving_up_on_an_attempt_in_doubt_says_the_outcome_is_unknown(ledger, database_url):
    crashed_attempt(database_url, "reply:g")
    assert ledger.give_up("reply:g", "sms", "twilio answered HTTP 503") == UNKNOWN_OUTCOME
    assert ledger.give_up("reply:h", "sms", "outbound sms is not configured") == "outbound sms is not configured"
