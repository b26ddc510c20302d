"""Provider message ids and tags are sealed with the customer's key, and looked up by keyed hash only.

A WhatsApp wamid is base64 of the recipient's number, a Telegram message id starts with the user's
chat id, an email Message-ID names the sender's host, and tags are an agent's free text about the
customer: none of them may sit in clear in the log or in `sb_outbound`, where erasure cannot reach.
Status callbacks still find their reply (through the keyed hash), and events an older release stored
with these fields in clear still load, and read redacted once the customer is erased.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from events.base import DomainEvent, personal
from events.case import CaseTagged, ReplySent
from events.customer import InteractionRecorded
from events.interactions import Attachment, Identity, Interaction, interaction_id
from events.registry import REGISTRY, EventRegistry
from projections.runner import ProjectionRunner
from services.core.commands import run_case_command
from services.core.processor import CoreProcessor
from services.domain.case import Case
from services.platform.eventstore.codec import EventCodec
from services.platform.eventstore.store import EventStore
from services.platform.schema import bring_up_to_date
from services.replay import replay_events

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PHONE = "+447700900777"
# What Meta's wamids are: base64 of a protobuf holding the number (here, the number as Meta writes it).
WAMID_IN = "wamid." + base64.b64encode(b"\x15\x02\x00\x11\x18\x0c" + PHONE[1:].encode() + b"\x15\x02\x00").decode()
WAMID_OUT = "wamid." + base64.b64encode(b"\x15\x02\x00\x11\x18\x0c" + PHONE[1:].encode() + b"\x15\x02\x01").decode()
TAG = "awaiting-court-hearing"


def rows(database_url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def _whatsapp_conversation(store: EventStore) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """An inbound WhatsApp message, a tag, a reply sent by wamid; returns (customer, case, reply)."""
    inbound = Interaction(
        id=interaction_id("whatsapp", WAMID_IN),
        channel="whatsapp",
        direction="inbound",
        occurred_at=T0,
        identities=[Identity("phone", PHONE)],
        text="hello",
        provider_message_id=WAMID_IN,
        thread_key=f"whatsapp:1234:{PHONE[1:]}",
    )
    CoreProcessor(store).process([(inbound, 1)])
    opened = next(e for _, e, _ in store.read(0, 100) if e.NAME == "case.Opened")
    case_id, customer_id = opened.stream_id, opened.customer_id
    reply_id = uuid.uuid4()
    run_case_command(store, case_id, lambda c: c.tag([TAG], "agent-1", T0))
    run_case_command(store, case_id, lambda c: c.request_reply(reply_id, "On its way", "agent-1", T0))
    outbound = Interaction(
        id=uuid.uuid4(),
        channel="whatsapp",
        direction="outbound",
        occurred_at=T0 + timedelta(seconds=5),
        text="On its way",
        case_id=case_id,
        reply_id=reply_id,
        provider_message_id=WAMID_OUT,
    )
    CoreProcessor(store).process([(outbound, 2)])
    return customer_id, case_id, reply_id


def test_provider_ids_and_tags_are_sealed_and_statuses_still_find_their_reply(store, database_url) -> None:
    customer_id, case_id, reply_id = _whatsapp_conversation(store)
    # Another core (nothing cached): the status finds the reply through the keyed hash in sb_outbound.
    status = Interaction(
        id=uuid.uuid4(),
        channel="whatsapp",
        direction="outbound",
        kind="status",
        status="delivered",
        occurred_at=T0 + timedelta(seconds=9),
        provider_message_id=WAMID_OUT,
    )
    assert CoreProcessor(store).process([(status, 3)]).recorded == [status.id]
    assert Case.replay(case_id, store.load(case_id)).replies[reply_id] == "delivered"

    stored = b"".join(bytes(r[0]) for r in rows(database_url, "SELECT state FROM sb_events"))
    outbound = rows(database_url, "SELECT provider_message_id FROM sb_outbound")
    for needle in (WAMID_IN, WAMID_OUT, TAG, PHONE[1:]):
        assert needle.encode() not in stored
        assert all(needle not in r[0] for r in outbound)
    assert len(outbound) == 1 and len(outbound[0][0]) == 64  # a keyed hash, hex

    # With the key, everything reads as it was.
    events = store.load(customer_id) + store.load(case_id)
    assert WAMID_IN in [e.provider_message_id for e in events if isinstance(e, InteractionRecorded)]
    assert [e.provider_message_id for e in events if isinstance(e, ReplySent)] == [WAMID_OUT]
    assert [e.tags for e in events if isinstance(e, CaseTagged)] == [[TAG]]
    ProjectionRunner(store).catch_up()
    assert rows(database_url, "SELECT tags FROM proj_cases WHERE id = %s", case_id) == [([TAG],)]


def test_a_database_an_older_release_wrote_is_brought_up_to_date_at_start(store, database_url) -> None:
    customer_id, case_id, reply_id = _whatsapp_conversation(store)
    with psycopg.connect(database_url, autocommit=True) as conn:  # as the older release stored it
        conn.execute("UPDATE sb_outbound SET provider_message_id = %s", (WAMID_OUT,))
        conn.execute("ALTER TABLE sb_processed DROP COLUMN case_id")
        conn.execute("DROP TABLE sb_schema_migrations")
    bring_up_to_date(store)
    assert rows(
        database_url,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'sb_processed' AND column_name = 'case_id'",
    ) == [("case_id",)]
    ((held,),) = rows(database_url, "SELECT provider_message_id FROM sb_outbound")
    assert held == CoreProcessor(store).outbound_blind("whatsapp", WAMID_OUT)
    status = Interaction(
        id=uuid.uuid4(),
        channel="whatsapp",
        direction="outbound",
        kind="status",
        status="read",
        occurred_at=T0 + timedelta(seconds=9),
        provider_message_id=WAMID_OUT,
    )
    CoreProcessor(store).process([(status, 3)])
    assert Case.replay(case_id, store.load(case_id)).replies[reply_id] == "delivered"


# -- events stored before the ids were sealed ------------------------------------------------------


class InteractionRecordedV1(DomainEvent, frozen=True, kw_only=True):
    NAME = "customer.InteractionRecorded"
    VERSION = 1
    PERSONAL = personal("text", "attachments", "thread_key", "meta")
    interaction_id: uuid.UUID
    channel: str
    direction: str
    kind: str
    case_id: uuid.UUID | None
    text: str
    provider_message_id: str | None = None
    thread_key: str | None = None
    attachments: list[Attachment] = []
    meta: dict[str, str] = {}
    reply_id: uuid.UUID | None = None


class CaseTaggedV1(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.Tagged"
    tags: list[str]
    by: str


class ReplySentV1(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.ReplySent"
    reply_id: uuid.UUID
    provider_message_id: str | None


def _v1_registry() -> EventRegistry:
    older = {c.NAME: c for c in (InteractionRecordedV1, CaseTaggedV1, ReplySentV1)}
    registry = EventRegistry()
    for cls in REGISTRY:
        registry.register(older.get(cls.NAME, cls))
    return registry


def test_events_stored_with_clear_ids_still_load_and_read_redacted_after_erasure(store, database_url) -> None:
    old = EventStore(store.datastore, store.master, codec=EventCodec(registry=_v1_registry()))
    customer_id, case_id = uuid.uuid4(), uuid.uuid4()
    common = {"customer_id": customer_id, "occurred_at": T0}
    with old.transaction() as tx:
        tx.append(
            [
                InteractionRecordedV1(
                    id=uuid.uuid4(),
                    stream_id=customer_id,
                    version=1,
                    interaction_id=uuid.uuid4(),
                    channel="whatsapp",
                    direction="inbound",
                    kind="message",
                    case_id=case_id,
                    text="hello",
                    provider_message_id=WAMID_IN,
                    **common,
                ),
                CaseTaggedV1(id=uuid.uuid4(), stream_id=case_id, version=1, tags=[TAG], by="agent-1", **common),
                ReplySentV1(
                    id=uuid.uuid4(),
                    stream_id=case_id,
                    version=2,
                    reply_id=uuid.uuid4(),
                    provider_message_id=WAMID_OUT,
                    **common,
                ),
            ]
        )
    assert WAMID_IN.encode() in bytes(rows(database_url, "SELECT state FROM sb_events WHERE notification_id = 1")[0][0])
    (recorded,) = store.load(customer_id)
    tagged, sent = store.load(case_id)
    assert isinstance(recorded, InteractionRecorded) and recorded.provider_message_id == WAMID_IN
    assert isinstance(tagged, CaseTagged) and tagged.tags == [TAG]
    assert isinstance(sent, ReplySent) and sent.provider_message_id == WAMID_OUT

    store.erase_keys([customer_id])
    (recorded,) = store.load(customer_id)
    tagged, sent = store.load(case_id)
    assert recorded.provider_message_id is None and recorded.text == "[erased]"
    assert tagged.tags == [] and sent.provider_message_id is None
    out = io.BytesIO()  # and so does replay, marking them redacted
    replay_events(store, out, conninfo=database_url)
    lines = {line["type"]: line for line in map(json.loads, out.getvalue().splitlines())}
    assert lines["case.Tagged"]["redacted"] is True and lines["case.Tagged"]["payload"]["tags"] == []
    assert (
        lines["case.ReplySent"]["redacted"] is True
        and lines["case.ReplySent"]["payload"]["provider_message_id"] is None
    )
    assert lines["customer.InteractionRecorded"]["payload"]["provider_message_id"] is None
    assert WAMID_IN.encode() not in out.getvalue() and TAG.encode() not in out.getvalue()
