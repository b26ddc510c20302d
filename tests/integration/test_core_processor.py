"""The core on a real PostgreSQL: redelivery, identity resolution and merges, claims, concurrency, poison."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import nats
import psycopg
import pytest

from events.interactions import ENCODER, Identity, Interaction, interaction_id
from projections.runner import ProjectionRunner
from services.bootstrap import Switchboard
from services.core.commands import run_case_command
from services.core.processor import CoreProcessor

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def message(channel: str, *identities: Identity, at: int = 0, text: str = "hello", **fields) -> Interaction:
    provider_id = uuid.uuid4().hex
    return Interaction(
        id=interaction_id(channel, provider_id),
        channel=channel,
        direction="inbound",
        occurred_at=T0 + timedelta(seconds=at),
        identities=list(identities),
        text=text,
        provider_message_id=provider_id,
        **fields,
    )


def rows(database_url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def events_of(database_url: str, topic: str) -> int:
    return rows(database_url, "SELECT count(*) FROM sb_events WHERE topic = %s", topic)[0][0]


def process(processor: CoreProcessor, *interactions: Interaction, first_seq: int = 1):
    return processor.process([(i, first_seq + n) for n, i in enumerate(interactions)])


def test_a_redelivered_batch_records_nothing_twice(store, database_url):
    processor = CoreProcessor(store)
    batch = [message("sms", Identity("phone", "+44 7700 900001"), at=n) for n in range(5)]
    first = process(processor, *batch)
    count = rows(database_url, "SELECT count(*) FROM sb_events")[0][0]
    assert len(first.recorded) == 5 and first.events == count
    # The same messages again, in another order and mixed with a new one (a redelivery after a crash).
    extra = message("sms", Identity("phone", "+447700900001"), at=9)
    again = process(CoreProcessor(store), batch[3], extra, batch[0], *batch)
    assert again.recorded == [extra.id] and set(again.duplicates) == {i.id for i in batch}
    assert events_of(database_url, "customer.InteractionRecorded") == 6
    assert rows(database_url, "SELECT count(*), count(DISTINCT interaction_id) FROM sb_processed")[0] == (6, 6)


def test_a_new_message_joins_the_open_case_of_its_thread_or_opens_one(store, database_url):
    processor = CoreProcessor(store)
    phone = Identity("phone", "+447700900002")
    a, b = message("sms", phone, at=0), message("sms", phone, at=1)
    mail = message("email", Identity("email", "x@example.org"), at=2, thread_key="email:<t1@example.org>")
    process(processor, a, b, mail)
    cases = rows(database_url, "SELECT originator_id FROM sb_events WHERE topic = 'case.Opened'")
    assert len(cases) == 2  # the two SMS share one conversation; the email is another customer's
    assert events_of(database_url, "case.MessageAdded") == 1  # b; each case's opening message is in Opened


@pytest.fixture
async def published(settings, names, nats_url):
    nc = await nats.connect(nats_url)
    js = nc.jetstream()

    async def publish(*interactions: Interaction) -> None:
        for i in interactions:
            await js.publish(
                names.interaction_subject(i.channel, i.direction), ENCODER.encode(i), headers={"Nats-Msg-Id": str(i.id)}
            )

    yield publish
    await nc.close()


async def _eventually(fetch, predicate, timeout: float = 15.0):
    import asyncio  # noqa: PLC0415

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await fetch()
        if predicate(result):
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {result!r}")
        await asyncio.sleep(0.05)


async def test_a_chat_with_the_verified_email_of_a_known_customer_merges_them(server, admin_headers, published):
    email = Identity("email", "Ada@Example.org")
    session = Identity("chat", f"session-{uuid.uuid4()}")
    by_mail = message("email", email, at=0, text="my order?", thread_key="email:<o1@example.org>")
    anonymous = message("chat", session, at=60, text="hi, anyone?", thread_key=f"chat:{session.value}")
    logged_in = message(
        "chat",
        session,
        Identity("external", "user-ada"),
        Identity("email", "ada@example.org"),
        at=120,
        text="it's me, logged in now",
        thread_key=f"chat:{session.value}",
    )
    await published(by_mail, anonymous)
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:

        async def lookup(kind: str, value: str):
            return await client.get("/api/v1/customers/lookup", params={"kind": kind, "value": value})

        first = (await _eventually(lambda: lookup("email", "ada@example.org"), lambda r: r.status_code == 200)).json()
        visitor = (await _eventually(lambda: lookup("chat", session.value), lambda r: r.status_code == 200)).json()
        assert first["id"] != visitor["id"]
        await published(logged_in)

        async def timeline():
            return (await client.get(f"/api/v1/customers/{first['id']}/timeline")).json()["items"]

        items = await _eventually(timeline, lambda items: len(items) == 3)
        assert [i["text"] for i in items] == ["it's me, logged in now", "hi, anyone?", "my order?"]
        # The projector commits the timeline before the other read models (projections/runner.py):
        # the profile follows in its own transaction.
        absorbed = (
            await _eventually(
                lambda: client.get(f"/api/v1/customers/{visitor['id']}"),
                lambda r: r.status_code == 200 and r.json()["interaction_count"] == 3,
            )
        ).json()
        assert absorbed["id"] == first["id"]  # the absorbed id resolves to the survivor
        assert {"kind": "chat", "value": session.value} in absorbed["identities"]
        assert {"kind": "external", "value": "user-ada"} in absorbed["identities"]
        assert absorbed["interaction_count"] == 3 and absorbed["channels"] == ["chat", "email"]
        assert (await lookup("chat", session.value)).json()["id"] == first["id"]


def test_two_different_external_ids_make_a_suggested_merge_not_a_merge(store, database_url):
    processor = CoreProcessor(store)
    x = message(
        "chat", Identity("chat", "s-x"), Identity("external", "user-1"), Identity("email", "x@example.org"), at=0
    )
    y = message("chat", Identity("chat", "s-y"), Identity("external", "user-2"), at=1)
    # User 2, logged in, says (verified by the website) that their email is user 1's.
    conflict = message(
        "chat", Identity("chat", "s-y"), Identity("external", "user-2"), Identity("email", "x@example.org"), at=2
    )
    outcome = process(processor, x, y, conflict)
    assert len(outcome.recorded) == 3
    assert events_of(database_url, "customer.Merged") == 0 and events_of(database_url, "customer.Absorbed") == 0
    suggested = rows(database_url, "SELECT originator_id FROM sb_events WHERE topic = 'customer.MergeSuggested'")
    assert len({r[0] for r in suggested}) == 2  # each side knows about the other
    owners = rows(
        database_url, "SELECT kind, count(DISTINCT customer_id) FROM sb_identities GROUP BY kind ORDER BY kind"
    )
    assert owners == [("chat", 2), ("email", 1), ("external", 2)]  # the email stayed with user 1
    assert events_of(database_url, "customer.InteractionRecorded") == 3


def test_a_new_external_id_is_not_linked_to_a_customer_who_has_another_one(store, database_url):
    processor = CoreProcessor(store)
    known = message(
        "chat", Identity("chat", "s-1"), Identity("external", "user-1"), Identity("email", "x@example.org"), at=0
    )
    # Another logged-in user whose (signed) email is user 1's: the email leads to user 1's customer,
    # whose one external id is user-1; user-2 must not become their second one.
    other = message(
        "chat", Identity("chat", "s-2"), Identity("external", "user-2"), Identity("email", "x@example.org"), at=1
    )
    again = message(
        "chat", Identity("chat", "s-2"), Identity("external", "user-2"), Identity("email", "x@example.org"), at=2
    )
    outcome = process(processor, known, other, again)
    assert len(outcome.recorded) == 3
    owners = rows(
        database_url,
        "SELECT kind, count(DISTINCT customer_id), count(*) FROM sb_identities GROUP BY kind ORDER BY kind",
    )
    assert owners == [("chat", 2, 2), ("email", 1, 1), ("external", 2, 2)]
    per_customer = rows(database_url, "SELECT count(*) FROM sb_identities WHERE kind = 'external' GROUP BY customer_id")
    assert sorted(n for (n,) in per_customer) == [1, 1]
    assert events_of(database_url, "customer.Merged") == 0
    suggested = rows(database_url, "SELECT originator_id FROM sb_events WHERE topic = 'customer.MergeSuggested'")
    assert len(suggested) == 2 and len({r[0] for r in suggested}) == 2  # once each way, not again on `again`


def test_unverified_claims_are_kept_but_never_link(store, database_url):
    processor = CoreProcessor(store)
    known = message("email", Identity("email", "ada@example.org"), at=0)
    visitor = message(
        "chat",
        Identity("chat", "s-1"),
        Identity("email", "ada@example.org", verified=False),
        Identity("phone", "+44 7700 900003", verified=False),
        at=1,
    )
    process(processor, known, visitor)
    assert events_of(database_url, "customer.Registered") == 2 and events_of(database_url, "customer.Merged") == 0
    assert events_of(database_url, "customer.IdentityClaimed") == 2
    assert rows(database_url, "SELECT kind FROM sb_identities ORDER BY kind") == [("chat",), ("email",)]
    ProjectionRunner(store).catch_up()
    claims = rows(database_url, "SELECT kind, value, verified FROM proj_identities WHERE NOT verified ORDER BY kind")
    assert claims == [("email", "ada@example.org", False), ("phone", "+447700900003", False)]


def test_two_cores_on_one_customer_lose_and_fork_nothing(store, settings, database_url):
    phone = Identity("phone", "+447700900004")
    interactions = [message("sms" if n % 2 else "whatsapp", phone, at=n, text=f"message {n}") for n in range(300)]
    # Two core processes: their own stores, caches and connections, on the same database.
    other = Switchboard(settings).open_store()
    cores = [CoreProcessor(store), CoreProcessor(other)]
    shares = [interactions[:200], interactions[100:]]  # 100 interactions delivered to both
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            share = shares[index]
            for start in range(0, len(share), 10):
                chunk = share[start : start + 10]
                outcome = cores[index].process([(i, interactions.index(i) + 1) for i in chunk])
                assert not outcome.poison and not outcome.failed
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    other.datastore.close()
    assert not errors, errors
    recorded = rows(database_url, "SELECT state FROM sb_events WHERE topic = 'customer.InteractionRecorded'")
    assert len(recorded) == 300
    assert events_of(database_url, "customer.Registered") == 1
    assert rows(database_url, "SELECT count(DISTINCT interaction_id) FROM sb_processed")[0][0] == 300
    # Every stream's versions run 1..n without a gap or a fork.
    for stream, versions in rows(
        database_url,
        "SELECT originator_id, array_agg(originator_version ORDER BY "
        "originator_version) FROM sb_events GROUP BY originator_id",
    ):
        assert versions == list(range(1, len(versions) + 1)), stream
    ProjectionRunner(store).catch_up()
    timeline = rows(
        database_url, "SELECT count(*), count(DISTINCT interaction_id), count(DISTINCT customer_id) FROM proj_timeline"
    )
    assert timeline == [(300, 300, 1)]
    texts = {r[0] for r in rows(database_url, "SELECT text FROM proj_timeline")}
    assert texts == {f"message {n}" for n in range(300)}


def test_poison_interactions_are_set_aside_with_their_reason_and_the_rest_recorded(store, database_url):
    processor = CoreProcessor(store)
    good = [message("sms", Identity("phone", f"+4477009000{n:02d}"), at=n) for n in range(3)]
    bad_phone = message("sms", Identity("phone", "12"), at=10)
    nobody = message("chat", Identity("email", "who@example.org", verified=False), at=11)
    outcome = process(processor, good[0], bad_phone, good[1], nobody, good[2])
    assert outcome.recorded == [g.id for g in good]
    assert set(outcome.poison) == {bad_phone.id, nobody.id}
    assert "invalid verified phone" in outcome.poison[bad_phone.id]
    assert "no verified identity" in outcome.poison[nobody.id]
    assert events_of(database_url, "customer.InteractionRecorded") == 3
    assert rows(database_url, "SELECT count(*) FROM sb_processed")[0][0] == 3


def test_an_unexpected_error_is_pinned_to_its_interaction(store, database_url, monkeypatch):
    processor = CoreProcessor(store)
    batch = [message("sms", Identity("phone", f"+4477009001{n:02d}"), at=n) for n in range(8)]
    handle = processor._handle

    def flaky(b, interaction):
        if interaction.id == batch[5].id:
            raise RuntimeError("a bug")
        return handle(b, interaction)

    monkeypatch.setattr(processor, "_handle", flaky)
    outcome = process(processor, *batch)
    assert outcome.failed == {batch[5].id: "RuntimeError: a bug"}
    assert sorted(outcome.recorded) == sorted(i.id for n, i in enumerate(batch) if n != 5)
    assert events_of(database_url, "customer.InteractionRecorded") == 7


def test_an_outbound_reply_and_its_delivery_status_land_on_the_case(store, database_url):
    processor = CoreProcessor(store)
    inbound = message("sms", Identity("phone", "+447700900200"), at=0)
    process(processor, inbound)
    case_id = rows(database_url, "SELECT originator_id FROM sb_events WHERE topic = 'case.Opened'")[0][0]

    reply_id = uuid.uuid4()
    run_case_command(store, case_id, lambda c: c.request_reply(reply_id, "On its way", "agent-1", T0))
    outbound = Interaction(
        id=uuid.uuid4(),
        channel="sms",
        direction="outbound",
        occurred_at=T0 + timedelta(seconds=5),
        text="On its way",
        case_id=case_id,
        reply_id=reply_id,
        provider_message_id="SM1",
    )
    status = Interaction(
        id=uuid.uuid4(),
        channel="sms",
        direction="outbound",
        kind="status",
        status="delivered",
        occurred_at=T0 + timedelta(seconds=9),
        provider_message_id="SM1",
    )
    outcome = process(processor, outbound, status, first_seq=10)  # the same core: its cached case is stale
    assert len(outcome.recorded) == 2 and not outcome.poison
    topics = [
        r[0]
        for r in rows(
            database_url, "SELECT topic FROM sb_events WHERE originator_id = %s ORDER BY originator_version", case_id
        )
    ]
    assert topics == [
        "case.Opened",
        "case.ReplyRequested",
        "case.MessageAdded",
        "case.ReplySent",
        "case.ReplyDelivered",
    ]
    ProjectionRunner(store).catch_up()
    assert rows(database_url, "SELECT status FROM proj_replies WHERE reply_id = %s", reply_id) == [("delivered",)]
    assert rows(
        database_url, "SELECT direction FROM proj_timeline WHERE case_id = %s ORDER BY occurred_at", case_id
    ) == [("inbound",), ("outbound",)]


def test_an_interaction_is_sealed_with_its_customers_key(store, database_url):
    process(CoreProcessor(store), message("email", Identity("email", "secret@example.org"), text="my secret order"))
    raw = b"".join(bytes(r[0]) for r in rows(database_url, "SELECT state FROM sb_events"))
    assert b"secret" not in raw  # text and identity values are encrypted at rest
    decoded = [msgspec.to_builtins(e) for _, e, _ in store.read(0, 100)]
    assert any(e.get("text") == "my secret order" for e in decoded)


def test_a_refused_reply_is_recorded_as_failed_although_the_core_had_the_case_cached(store, database_url):
    processor = CoreProcessor(store)
    process(processor, message("sms", Identity("phone", "+447700900201"), at=0))
    case_id = rows(database_url, "SELECT originator_id FROM sb_events WHERE topic = 'case.Opened'")[0][0]

    reply_id = uuid.uuid4()  # the API appends ReplyRequested: the core's cached case does not know it
    run_case_command(store, case_id, lambda c: c.request_reply(reply_id, "Hi", "agent-1", T0))
    refused = Interaction(
        id=uuid.uuid4(),
        channel="sms",
        direction="outbound",
        kind="status",
        status="failed",
        occurred_at=T0 + timedelta(seconds=3),
        case_id=case_id,
        reply_id=reply_id,
        meta={"error": "21211 invalid To number"},
    )
    assert process(processor, refused, first_seq=5).recorded == [refused.id]
    topics = [
        r[0]
        for r in rows(
            database_url, "SELECT topic FROM sb_events WHERE originator_id = %s ORDER BY originator_version", case_id
        )
    ]
    assert topics == ["case.Opened", "case.ReplyRequested", "case.ReplyFailed"]


def test_a_case_another_role_wrote_to_is_brought_up_to_date_without_a_conflict(store, database_url):
    """The classifier, the router and agents write to the cases the core has cached: the core reads
    what they appended before deciding, instead of meeting it as a version conflict (a retry of the
    whole batch)."""
    processor = CoreProcessor(store)
    phone = Identity("phone", "+44 7700 900123")
    first = process(processor, message("sms", phone, at=0, text="my parcel is late"))
    assert not first.poison
    [(case_id,)] = rows(database_url, "SELECT originator_id FROM sb_events WHERE topic = 'case.Opened'")
    # Another process (a store of its own) tags the case the core holds in its cache.
    run_case_command(store, case_id, lambda case: case.tag(["late"], "agent:a", T0 + timedelta(seconds=1)))
    second = process(processor, message("sms", phone, at=2, text="still waiting"), first_seq=2)
    assert not second.poison and second.conflicts == 0
    assert len(second.recorded) == 1
    # The tag is kept, and the case's versions run 1..n without a gap or a fork.
    versions = [
        v
        for (v,) in rows(
            database_url,
            "SELECT originator_version FROM sb_events WHERE originator_id = %s ORDER BY originator_version",
            case_id,
        )
    ]
    assert versions == list(range(1, len(versions) + 1))
    assert events_of(database_url, "case.Tagged") == 1
