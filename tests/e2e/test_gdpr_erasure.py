"""Crypto-shredding end to end: after `switchboard customer erase`, nothing personal is left anywhere.

Switchboard runs as operators run it (`switchboard serve` with every role, in a subprocess, its log
written to a file), on its own NATS server, so that every stream it wrote can be read back in full.
A customer reaches it through a verified chat session and through a connector publishing to
JetStream directly, merges with a second customer, gets an agent's reply and a note, sends an
attachment, and has an interaction dead-lettered. Then `switchboard customer erase ID --yes`, and
the whole PostgreSQL database (pg_dump), every message of every NATS stream, the KV bucket, the
object store and all log output are searched for the name, the email address, the phone numbers
(as typed and in E.164), the external id, the message texts and the attachment: none is found.
Before the erasure, the same search finds them in the read models but never in the event log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import nats
import psycopg
import pytest
import websockets
from nats.js.api import ObjectMeta
from nats.js.errors import KeyNotFoundError, NotFoundError

from events.interactions import Attachment, Identity, Interaction, interaction_id
from services.platform.embedded import EmbeddedNats, free_port

pytestmark = pytest.mark.e2e

SWITCHBOARD = Path(sys.executable).with_name("switchboard")
RETENTION = 3 * 3600

NAME = "Zebulon Quixwhistle"
EMAIL_TYPED = "Zebulon.Quixwhistle@Example.ORG"
EMAIL = "zebulon.quixwhistle@example.org"
PHONE_TYPED = "+1 (415) 555-0199"
PHONE_SPACED = "+1 415 555 0199"
PHONE = "+14155550199"
OTHER_PHONE_TYPED = "+44 7700 900461"
OTHER_PHONE = "+447700900461"
USER_ID = "zq-member-3141592"
CHAT_TEXT = "My marmalade-scented parcel ZQ-7781 never arrived"
SMS_TEXT = "Quixwhistle again: the courier left ZQ-7781 at number 42"
OTHER_TEXT = "Texting from my work phone about the marmalade parcel"
DEAD_TEXT = "Unverifiable note from Quixwhistle about the marmalade"
REPLY = "Dear Zebulon, we are sorry about parcel ZQ-7781"
NOTE = "Zebulon prefers calls on his work phone after 6pm"
ATTACHMENT_NAME = "zebulon-quixwhistle-receipt.pdf"
ATTACHMENT_BYTES = b"%PDF-1.4 receipt of Zebulon Quixwhistle for parcel ZQ-7781 " * 20
DEAD_ATTACHMENT_BYTES = b"GIF89a photo of the squashed marmalade parcel, taken by Zebulon " * 20
# Provider ids that embed the person. A wamid is base64 of a protobuf holding the number; a Telegram
# message id starts with the chat id (the user's id); a Messenger PSID; the widget's client_id; an
# email Message-ID with the sender's own host. And a tag an agent wrote.
PHONE_DIGITS = PHONE[1:]
WAMID = (
    "wamid."
    + base64.b64encode(
        b"\x15\x02\x00\x11\x18\x0b" + PHONE_DIGITS.encode() + b"\x15\x02\x00\x12\x18\x14" + b"3EB0C4A5F1E2D3C4B5A6"
    ).decode()
)
WAMID_OUT = (
    "wamid."
    + base64.b64encode(
        b"\x15\x02\x00\x11\x18\x0b" + PHONE_DIGITS.encode() + b"\x15\x02\x00\x11\x18\x12" + b"HBgLMTQxNTU1NTAxOT"
    ).decode()
)
TELEGRAM_CHAT_ID = "8316402975"
PSID = "27184930561234567"
CLIENT_ID = "zq-widget-client-5be1d0"
SENDER_HOST = "mx1.quixwhistle-family.example"
MESSAGE_ID = f"<CAzq.7781.1700000000@{SENDER_HOST}>"
TAG = "zq-marmalade-dispute"

NEEDLES = [
    NAME,
    EMAIL_TYPED,
    EMAIL,
    PHONE_TYPED,
    PHONE_SPACED,
    PHONE,
    OTHER_PHONE_TYPED,
    OTHER_PHONE,
    USER_ID,
    CHAT_TEXT,
    SMS_TEXT,
    OTHER_TEXT,
    DEAD_TEXT,
    REPLY,
    NOTE,
    ATTACHMENT_NAME,
    ATTACHMENT_BYTES[:60].decode(),
    DEAD_ATTACHMENT_BYTES[:60].decode(),
    WAMID,
    WAMID[6:30],
    WAMID_OUT,
    PHONE_DIGITS,
    TELEGRAM_CHAT_ID,
    PSID,
    CLIENT_ID,
    SENDER_HOST,
    TAG,
]


def _forms(needle: str) -> dict[bytes, str]:
    """The needle as text, JSON-escaped, and as the hex pg_dump writes for bytea."""
    return {needle.encode(): needle, json.dumps(needle)[1:-1].encode(): needle, needle.encode().hex().encode(): needle}


FORMS: dict[bytes, str] = {k: v for needle in NEEDLES for k, v in _forms(needle).items()}


def found_in(data: bytes) -> set[str]:
    lowered = data.lower()
    return {needle for form, needle in FORMS.items() if form.lower() in lowered}


# -- the running service -----------------------------------------------------------------------------


class Service(msgspec.Struct):
    settings: object
    env: dict
    url: str
    log: Path
    outputs: list  # stdout and stderr of every CLI run
    proc: object

    def cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(SWITCHBOARD), *args], env=self.env, cwd=self.settings.data_dir, capture_output=True, timeout=timeout
        )
        self.outputs.append(result.stdout + result.stderr)
        return result

    def pg_dump(self, bin_dir: Path) -> bytes:
        return subprocess.run(
            [str(bin_dir / "pg_dump"), "--no-owner", self.settings.database_url], check=True, capture_output=True
        ).stdout

    def sql(self, query: str, params=()) -> list:
        with psycopg.connect(self.settings.database_url) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture
def service(settings, tmp_path):
    nats_server = EmbeddedNats(tmp_path / "nats").start()
    settings = settings.with_(nats_url=nats_server.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    for name in (
        "data_dir",
        "nats_url",
        "database_url",
        "admin_token",
        "master_key",
        "ingest_token",
        "twilio_auth_token",
        "meta_app_secret",
        "meta_verify_token",
        "telegram_secret_token",
        "chat_identity_secret",
    ):
        env["SWITCHBOARD_" + name.upper()] = str(getattr(settings, name))
    env.update(
        SWITCHBOARD_LOG_FORMAT="json", SWITCHBOARD_LOG_LEVEL="debug", SWITCHBOARD_NATS_RETENTION_SECONDS=str(RETENTION)
    )
    http = free_port()
    log = tmp_path / "switchboard.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [
                str(SWITCHBOARD),
                "serve",
                "gateway",
                "core",
                "projector",
                "api",
                "relay",
                "--http",
                f"127.0.0.1:{http}",
                "--smtp",
                f"127.0.0.1:{free_port()}",
            ],
            env=env,
            cwd=settings.data_dir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "switchboard serve did not become ready"
        time.sleep(0.1)
    yield Service(settings, env, url, log, [], proc)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    nats_server.stop()


async def _eventually(fetch, predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = await fetch()
        if predicate(result):
            return result
        shown = getattr(result, "text", result)
        assert time.monotonic() < deadline, f"{what} not met within {timeout}s; last: {shown!r}"
        await asyncio.sleep(0.1)


async def _caught_up(service: Service) -> None:
    """Every stored event projected and relayed."""

    def positions():
        return service.sql(
            "SELECT (SELECT coalesce(max(notification_id), 0) FROM sb_events), "
            "(SELECT coalesce(min(notification_id), 0) FROM sb_tracking WHERE application_name LIKE 'projection:%%'), "
            "(SELECT coalesce(max(notification_id), 0) FROM sb_tracking WHERE application_name = 'relay:sb-events')"
        )[0]

    async def fetch():
        return await asyncio.to_thread(positions)

    await _eventually(fetch, lambda p: p[0] > 0 and p[0] == p[1] == p[2], what="projections and relay caught up")


async def _publish(js, interaction: Interaction) -> None:
    await js.publish(
        f"sb.interactions.{interaction.channel}.{interaction.direction}",
        msgspec.json.encode(interaction),
        headers={"Nats-Msg-Id": str(interaction.id)},
    )


async def _all_messages(js) -> dict[str, list[bytes]]:
    """Every message (headers and body) of every stream on the server, the KV and object stores included."""
    out: dict[str, list[bytes]] = {}
    async for info in _streams(js):
        name = info.config.name
        out[name] = []
        if not info.state.messages:
            continue
        seq = info.state.first_seq
        while seq <= info.state.last_seq:
            try:
                msg = await js.get_msg(name, seq=seq, subject=">", next=True)
            except NotFoundError:
                break
            out[name].append(json.dumps(msg.headers or {}).encode() + b"\n" + (msg.data or b""))
            seq = msg.seq + 1
    return out


async def _streams(js):
    for info in await js.streams_info():
        yield info


def _dump_tables(dump: bytes) -> dict[str, bytes]:
    """The dump's data, by table (its COPY blocks)."""
    tables: dict[str, bytes] = {}
    for match in re.finditer(rb"^COPY public\.(\w+) .*?^\\\.$", dump, re.M | re.S):
        tables[match.group(1).decode()] = match.group(0)
    return tables


# -- the test ----------------------------------------------------------------------------------------


async def test_erasure_leaves_nothing_personal_anywhere(service: Service, embedded_pg_bin) -> None:
    settings = service.settings
    headers = {"Authorization": f"Bearer {settings.admin_token}"}
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    try:
        async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=10) as api:
            # 1. A verified chat visitor: the website signed its logged-in user.
            # It signs user_id|email|phone, so the email and the phone are verified too.
            signed = f"{USER_ID}|{EMAIL_TYPED}|{PHONE_TYPED}"
            signature = hmac.new(settings.chat_identity_secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
            session = (
                await api.post(
                    "/channels/chat/sessions",
                    json={
                        "name": NAME,
                        "email": EMAIL_TYPED,
                        "phone": PHONE_TYPED,
                        "user_id": USER_ID,
                        "identity_hash": signature,
                    },
                )
            ).json()
            ws_url = service.url.replace("http://", "ws://") + f"/channels/chat/ws?token={session['token']}"
            async with websockets.connect(ws_url) as ws:
                await ws.send(json.dumps({"type": "message", "text": CHAT_TEXT, "client_id": CLIENT_ID}))
                assert json.loads(await ws.recv())["type"] == "ack"

                async def lookup(kind: str, value: str):
                    return await api.get("/api/v1/customers/lookup", params={"kind": kind, "value": value})

                customer = (
                    await _eventually(
                        lambda: lookup("chat", session["session_id"]),
                        lambda r: r.status_code == 200,
                        what="chat customer",
                    )
                ).json()
                customer_id = customer["id"]
                assert customer["name"] == NAME

                # 2. A connector of its own, straight to JetStream: an SMS from the same number, typed
                #    differently; then a second customer, merged in by a message carrying both numbers.
                #    The attachment's bytes go to the object store first, as channel adapters do.
                sha256 = hashlib.sha256(ATTACHMENT_BYTES).hexdigest()
                obs = (
                    await js.object_store("SB_BLOBS")
                    if await _has_stream(js, "OBJ_SB_BLOBS")
                    else await js.create_object_store("SB_BLOBS")
                )
                await obs.put(sha256, ATTACHMENT_BYTES, meta=ObjectMeta(name=sha256))
                now = datetime.now(UTC)
                await _publish(
                    js,
                    Interaction(
                        id=interaction_id("sms", "SMzq1"),
                        channel="sms",
                        direction="inbound",
                        occurred_at=now,
                        identities=[Identity("phone", PHONE_SPACED)],
                        text=SMS_TEXT,
                        provider_message_id="SMzq1",
                        attachments=[
                            Attachment(
                                name=ATTACHMENT_NAME,
                                content_type="application/pdf",
                                size=len(ATTACHMENT_BYTES),
                                sha256=sha256,
                                ref=f"blob:{sha256}",
                            )
                        ],
                    ),
                )
                await _publish(
                    js,
                    Interaction(
                        id=interaction_id("sms", "SMzq2"),
                        channel="sms",
                        direction="inbound",
                        occurred_at=now,
                        identities=[Identity("phone", OTHER_PHONE_TYPED)],
                        text=OTHER_TEXT,
                        provider_message_id="SMzq2",
                    ),
                )
                other = (
                    await _eventually(
                        lambda: lookup("phone", OTHER_PHONE), lambda r: r.status_code == 200, what="second customer"
                    )
                ).json()
                assert other["id"] != customer_id
                await _publish(
                    js,
                    Interaction(
                        id=interaction_id("sms", "SMzq3"),
                        channel="sms",
                        direction="inbound",
                        occurred_at=now,
                        identities=[Identity("phone", PHONE_TYPED), Identity("phone", OTHER_PHONE_TYPED)],
                        text="both my numbers",
                        provider_message_id="SMzq3",
                    ),
                )
                # Only a claim, no verified identity: the core dead-letters it (and its attachment).
                dead_sha256 = hashlib.sha256(DEAD_ATTACHMENT_BYTES).hexdigest()
                await obs.put(dead_sha256, DEAD_ATTACHMENT_BYTES, meta=ObjectMeta(name=dead_sha256))
                await _publish(
                    js,
                    Interaction(
                        id=interaction_id("sms", "SMzq4"),
                        channel="sms",
                        direction="inbound",
                        occurred_at=now,
                        identities=[Identity("email", EMAIL_TYPED, verified=False)],
                        text=DEAD_TEXT,
                        provider_message_id="SMzq4",
                        attachments=[
                            Attachment(
                                name="parcel.gif",
                                content_type="image/gif",
                                size=len(DEAD_ATTACHMENT_BYTES),
                                sha256=dead_sha256,
                                ref=f"blob:{dead_sha256}",
                            )
                        ],
                    ),
                )
                # The same person on WhatsApp, Telegram, Messenger and email, through a connector that
                # asserts their number too; the provider ids embed them.
                for channel, provider_id, identity, thread_key in (
                    ("whatsapp", WAMID, Identity("phone", PHONE), f"whatsapp:106540352242922:{PHONE_DIGITS}"),
                    (
                        "telegram",
                        f"{TELEGRAM_CHAT_ID}:311",
                        Identity("telegram", TELEGRAM_CHAT_ID),
                        f"telegram:{TELEGRAM_CHAT_ID}",
                    ),
                    ("messenger", "m_zq8UvB3kqN1", Identity("messenger", PSID), f"messenger:1047:{PSID}"),
                    ("email", MESSAGE_ID, Identity("email", EMAIL), MESSAGE_ID),
                ):
                    await _publish(
                        js,
                        Interaction(
                            id=interaction_id(channel, provider_id),
                            channel=channel,
                            direction="inbound",
                            occurred_at=now,
                            identities=list(dict.fromkeys([identity, Identity("phone", PHONE)])),
                            text=f"about the parcel, on {channel}",
                            provider_message_id=provider_id,
                            thread_key=thread_key,
                            meta={"message_id": provider_id},
                        ),
                    )
                merged = await _eventually(
                    lambda: lookup("phone", OTHER_PHONE),
                    lambda r: r.status_code == 200 and r.json()["id"] == customer_id,
                    what="merge",
                )
                assert {"kind": "phone", "value": PHONE} in merged.json()["identities"]

                # 3. An agent replies (pushed to the visitor), leaves a note and a tag.
                async def channels():
                    items = (await api.get(f"/api/v1/customers/{customer_id}/timeline")).json()["items"]
                    return {i["channel"]: i["case_id"] for i in items}

                cases = await _eventually(
                    channels,
                    lambda c: {"chat", "whatsapp", "telegram", "messenger", "email"} <= set(c),
                    what="every channel on the timeline",
                )
                case_id = cases["chat"]
                assert (await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": REPLY})).status_code == 200
                assert (await api.post(f"/api/v1/cases/{case_id}/notes", json={"text": NOTE})).status_code == 200
                assert (await api.post(f"/api/v1/cases/{case_id}/tags", json={"tags": [TAG]})).status_code == 200
                pushed = json.loads(await asyncio.wait_for(ws.recv(), 15))
                assert pushed["text"] == REPLY
                # A message sent on WhatsApp from the provider's own console, and Meta's status for it
                # (which names the recipient's number): the status finds its case by a keyed hash.
                await _publish(
                    js,
                    Interaction(
                        id=interaction_id("whatsapp", WAMID_OUT),
                        channel="whatsapp",
                        direction="outbound",
                        occurred_at=now,
                        text="sent from the WhatsApp console",
                        case_id=cases["whatsapp"],
                        provider_message_id=WAMID_OUT,
                    ),
                )

                async def texts_now():
                    items = (await api.get(f"/api/v1/customers/{customer_id}/timeline")).json()["items"]
                    return {i["text"] for i in items}

                await _eventually(texts_now, lambda t: "sent from the WhatsApp console" in t, what="console message")
                await _publish(
                    js,
                    Interaction(
                        id=interaction_id("whatsapp", f"{WAMID_OUT}:status:delivered"),
                        channel="whatsapp",
                        direction="outbound",
                        occurred_at=now,
                        kind="status",
                        status="delivered",
                        identities=[Identity("phone", PHONE_DIGITS)],
                        provider_message_id=WAMID_OUT,
                        thread_key=f"whatsapp:106540352242922:{PHONE_DIGITS}",
                    ),
                )

            async def texts():
                items = (await api.get(f"/api/v1/customers/{customer_id}/timeline")).json()["items"]
                return {i["text"] for i in items}

            await _eventually(
                texts,
                lambda t: {CHAT_TEXT, SMS_TEXT, OTHER_TEXT, REPLY, "sent from the WhatsApp console"} <= t,
                what="timeline",
            )
            # The status was matched to the case (the core records which case it reported on).
            await _eventually(
                lambda: asyncio.to_thread(
                    service.sql, "SELECT count(*) FROM sb_processed WHERE case_id = %s", (uuid.UUID(cases["whatsapp"]),)
                ),
                lambda r: r[0][0] == 1,
                what="status matched to its case",
            )
            await _eventually(lambda: _count(js, "SB_DEADLETTER"), lambda n: n == 1, what="dead letter")
            await _caught_up(service)

            # 4. Before: the read models hold the personal data; the event log never does.
            tables = _dump_tables(await asyncio.to_thread(service.pg_dump, embedded_pg_bin))
            assert "sb_events" in tables and "proj_timeline" in tables
            for table in (
                "sb_events",
                "sb_customer_keys",
                "sb_identities",
                "sb_processed",
                "sb_outbound",
                "sb_tracking",
            ):
                assert not found_in(tables.get(table, b"")), f"{table} holds {found_in(tables[table])}"
            in_views = found_in(b"".join(v for k, v in tables.items() if k.startswith("proj_")))
            assert {NAME, EMAIL, PHONE, OTHER_PHONE, CHAT_TEXT, SMS_TEXT, REPLY, NOTE, ATTACHMENT_NAME, TAG} <= in_views
            before_nats = found_in(b"".join(m for msgs in (await _all_messages(js)).values() for m in msgs))
            assert {
                NAME,
                CHAT_TEXT,
                SMS_TEXT,
                DEAD_TEXT,
                REPLY,
                WAMID,
                WAMID_OUT,
                TELEGRAM_CHAT_ID,
                PSID,
                CLIENT_ID,
                SENDER_HOST,
                DEAD_ATTACHMENT_BYTES[:60].decode(),
            } <= before_nats

            # 5. Erase, as an operator does.
            erased = service.cli("customer", "erase", customer_id, "--yes")
            assert erased.returncode == 0, erased.stderr.decode()
            summary = erased.stdout.decode()
            assert "2 customer record(s)" in summary and "1 chat session(s)" in summary, summary
            assert "1 dead letter(s)" in summary and "2 attachment(s)" in summary, summary
            await _caught_up(service)

            # 6. After: nothing, anywhere.
            dump = await asyncio.to_thread(service.pg_dump, embedded_pg_bin)
            assert not found_in(dump), {t: found_in(d) for t, d in _dump_tables(dump).items() if found_in(d)}
            leftovers = {name: found_in(b"".join(msgs)) for name, msgs in (await _all_messages(js)).items()}
            assert not any(leftovers.values()), leftovers
            with pytest.raises(KeyNotFoundError):
                await (await js.key_value("SB_CHAT_SESSIONS")).get(session["session_id"])
            assert await _count(js, "SB_DEADLETTER") == 0
            with pytest.raises(websockets.exceptions.InvalidStatus):
                async with websockets.connect(ws_url):
                    pass

            # The API: the profile is erased, the identities resolve to nobody, the texts are gone.
            profile = (await api.get(f"/api/v1/customers/{customer_id}")).json()
            assert profile["name"] is None and profile["identities"] == [] and profile["erased"] is True
            assert (await lookup("phone", PHONE)).status_code == 404
            assert (await lookup("email", EMAIL)).status_code == 404
            assert (await texts()) == {"[erased]"}

        # Replay: every event still there, personal fields redacted.
        replayed = service.cli("replay", "--customer", customer_id)
        assert replayed.returncode == 0
        lines = [json.loads(line) for line in replayed.stdout.splitlines()]
        assert not found_in(replayed.stdout)
        sealed_types = {
            "customer.IdentityLinked",
            "customer.ProfileUpdated",
            "customer.InteractionRecorded",
            "case.Opened",
            "case.NoteAdded",
            "case.ReplyRequested",
            "case.Tagged",
        }
        assert {line["type"] for line in lines} >= sealed_types | {"customer.Merged", "customer.Erased"}
        for line in lines:
            assert line["redacted"] is (
                line["type"] in sealed_types | {"customer.IdentityClaimed", "case.ReplySent"}
            ), line
        recorded = [line["payload"] for line in lines if line["type"] == "customer.InteractionRecorded"]
        assert recorded and all(p["text"] == "[erased]" and p["attachments"] == [] for p in recorded)
        assert len({line["stream_id"] for line in lines if line["type"] == "customer.Registered"}) == 2

        exported = service.cli("customer", "export", customer_id)
        assert exported.returncode == 0, exported.stderr.decode()
        document = json.loads(exported.stdout)
        assert document["erased"] is True and document["identities"] == [] and document["events"]
        assert not found_in(exported.stdout)

        # The classifier may append while the chain is verified: the count lies between the two.
        before = service.sql("SELECT count(*) FROM sb_events")[0][0]
        audited = service.cli("audit", "verify")
        assert audited.returncode == 0, audited.stderr.decode()
        after = service.sql("SELECT count(*) FROM sb_events")[0][0]
        verified = re.search(r"intact: (\d+) events", audited.stdout.decode())
        assert verified and before <= int(verified.group(1)) <= after, audited.stdout.decode()

        # Running the erasure again is harmless (and finishes any interrupted clean-up).
        again = service.cli("customer", "erase", customer_id, "--yes")
        assert again.returncode == 0, again.stderr.decode()

        # The streams keep anything missed for the configured retention, not forever; dead letters
        # until handled (erasure deleted this customer's above), unless their own limit is set.
        for name in ("SB_INTERACTIONS", "SB_EVENTS", "SB_CHAT_OUTBOX", "KV_SB_CHAT_SESSIONS"):
            assert (await js.stream_info(name)).config.max_age == RETENTION, name
        assert (await js.stream_info("SB_DEADLETTER")).config.max_age == 0
    finally:
        await nc.close()

    # Nothing personal in any log line, of the service or of the commands.
    service.proc.terminate()
    service.proc.wait(30)
    logs = service.log.read_bytes()
    assert b"interaction_recorded" in logs  # the log was written, at debug level
    assert not found_in(logs), found_in(logs)
    assert not found_in(b"".join(service.outputs)), found_in(b"".join(service.outputs))


async def _has_stream(js, name: str) -> bool:
    try:
        await js.stream_info(name)
        return True
    except NotFoundError:
        return False


async def _count(js, stream: str) -> int:
    try:
        return (await js.stream_info(stream)).state.messages
    except NotFoundError:
        return 0


def test_the_needles_are_distinct_from_everything_else() -> None:
    """A search that finds a needle in ids, tokens or boilerplate would prove nothing."""
    assert not found_in(str(uuid.uuid4()).encode() + b" erased [erased] redacted chat sms +1 +44")
