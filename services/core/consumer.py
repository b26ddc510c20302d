"""The core's JetStream consumer: a durable pull consumer, in batches, acked by hand.

Ack policy, on purpose: a batch is acked only after its PostgreSQL transaction committed. A crash
before that means redelivery, which the processor recognises (nothing twice). An interaction that
cannot be decoded, or that the domain rejects, is dead-lettered at once with its reason; one that
fails for an unexpected reason is retried with backoff and dead-lettered after `max_deliveries`.

Infrastructure failures never count towards that limit (issue 13: an outage of 8–15 minutes used to
dead-letter pending interactions). When PostgreSQL is unreachable or hangs, the consumer stops
pulling and tries the same batch again, in place, with a capped backoff, until the database answers;
meanwhile every message it holds is kept with `in_progress()` (JetStream's "+WPI": the ack timer
starts again, the delivery count does not grow), so JetStream never redelivers work the core is
still holding, however long the outage. Only a message that fails on its own is dead-lettered.

Why not FastStream's (or nats-py's) `fetch()` loop: under load, with short fetch timeouts, we saw
deliveries go missing between the server and the handler; they came back only after `ack_wait`,
tens of seconds late. Here the deliveries of our pull requests go from the connection's reader
straight into our own buffer (a subscription callback: nothing can time out in between), pull
requests are kept outstanding so the buffer refills while a batch is written, and a batch is simply
whatever has arrived (up to `batch_size`), so batches grow with load and latency stays low when
traffic is light. `build_core_router` describes the same consumer to FastStream, for the AsyncAPI
document.

Batches are pipelined (see `submit`): while batch N commits, batch N+1 is decided and written in
its own transaction, which commits only after N did; if N does not commit, N+1 is aborted and both
are done again, one after the other. The event store is synchronous: both run in worker threads.

A failpoint for crash tests: when `SWITCHBOARD_FAILPOINT_FILE` names a file that exists, the core
deletes it and exits (code 137, as if SIGKILLed) right after a batch committed and before it is
acked, the one moment a crash could otherwise record something twice.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsMessage, NatsRouter, PullSub
from nats.aio.msg import Msg
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy
from nats.js.errors import BadRequestError

from events.interactions import INTERACTION_DECODER, Interaction
from events.sanitize import json_may_need_cleaning, sanitize
from services.core.processor import INFRASTRUCTURE_ERRORS, CoreProcessor, Outcome, Prepared
from services.platform.logs import get_logger
from services.platform.streams import Names
from services.platform.tuning import relax_garbage_collector

log = get_logger(__name__)

DURABLE = "sb-core"
FAILPOINT_ENV = "SWITCHBOARD_FAILPOINT_FILE"
# A message delivered this many times over `max_deliveries` without ever being acked or dead-lettered
# kept crashing (or hanging) the core: it is dead-lettered before it is tried again.
CRASH_LOOP_FACTOR = 4
PULL_EXPIRES = 5.0  # seconds a pull request waits on the server for messages
# Waiting for an unreachable database between attempts at the same batch: short enough that the core
# resumes within a couple of seconds of its return, long enough not to hammer it meanwhile.
OUTAGE_BACKOFF_FIRST = 0.25
OUTAGE_BACKOFF_MAX = 2.0
# A safety net: a message held this long (seconds) is no longer kept alive, so were it ever forgotten
# by a bug it would come back (one delivery more) rather than wait for ever. Half an hour: far longer
# than a batch takes, and an outage that long costs each waiting message one delivery of its limit.
KEEP_ALIVE_AT_MOST = 1800.0


async def dead_letter(js, names: Names, msg: Msg, reason: str) -> None:
    headers = {
        "Sb-Reason": reason[:500],
        "Sb-Original-Subject": msg.subject,
        "Sb-Original-Sequence": str(msg.metadata.sequence.stream),
        "Sb-Deliveries": str(msg.metadata.num_delivered),
    }
    msg_id = (msg.headers or {}).get("Nats-Msg-Id")
    if msg_id:
        headers["Nats-Msg-Id"] = f"dl:{msg_id}:{msg.metadata.sequence.stream}"
    await js.publish(names.deadletter_subject("interactions"), msg.data, headers=headers)
    await msg.term()


def delivery(msg: Msg) -> tuple[int, int]:
    """(times delivered, stream sequence) from the ack subject, without building nats-py's metadata
    (which also parses a timestamp): `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.…`, or
    with a domain and an account hash after `$JS.ACK` on newer servers."""
    tokens = msg.reply.split(".")
    if len(tokens) == 9:
        return int(tokens[4]), int(tokens[5])
    if len(tokens) >= 11:
        return int(tokens[6]), int(tokens[7])
    meta = msg.metadata
    return meta.num_delivered, meta.sequence.stream


def _timed(what: str, fn, *args):
    """`fn(*args)`, its duration in a debug line (a batch's stages, for the latency probe)."""
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        log.debug(what, ms=round((time.perf_counter() - t0) * 1000, 1))


def _backoff(deliveries: int) -> float:
    return float(min(2**deliveries, 30))


def outage_backoff(attempt: int) -> float:
    """Seconds before trying a batch again while its dependency is down (attempt 1, 2, ...)."""
    return min(OUTAGE_BACKOFF_FIRST * 2 ** (attempt - 1), OUTAGE_BACKOFF_MAX)


def consumer_config(names: Names, ack_wait: float) -> ConsumerConfig:
    # Deliveries are counted by the consumer, not capped by the server: a capped message would
    # silently stop coming back, where ours goes to the dead-letter stream with its reason.
    return ConsumerConfig(
        durable_name=DURABLE,
        filter_subject=names.subject("sb.interactions.>"),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=JsAckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=20_000,
        max_deliver=-1,
        max_waiting=64,
    )


@dataclass
class _InFlight:
    """A batch being committed: its messages are settled once the commit is through."""

    items: list[tuple[Interaction, int]]
    by_id: dict
    prepared: Prepared
    commit: asyncio.Future
    started: float


class CoreConsumer:
    """Pulls interactions from SB_INTERACTIONS, feeds them to the processor in batches, settles them."""

    def __init__(
        self,
        processor: CoreProcessor,
        names: Names,
        js_getter: Callable,
        max_deliveries: int = 5,
        failpoint: str | None = None,
        batch_size: int = 1000,
        ack_wait: float = 30.0,
    ):
        self.processor = processor
        self.names = names
        self.js_getter = js_getter
        self.max_deliveries = max_deliveries
        self.failpoint = failpoint
        self.batch_size = batch_size
        self.ack_wait = ack_wait
        self._inflight: _InFlight | None = None
        # Pulling.
        self._buffer: collections.deque[Msg] = collections.deque()
        self._arrived = asyncio.Event()
        self._outstanding = 0  # messages asked for and neither delivered nor expired yet
        self._requests_expire = 0.0
        self._task: asyncio.Task | None = None
        self._sub = None
        self._running = False
        # Every message delivered to us and not yet settled: (message, last kept alive, delivered).
        self._held: dict[int, tuple[Msg, float, float]] = {}
        self._keeper: asyncio.Task | None = None
        self.outage_since: float | None = None  # monotonic time the database went away, while it is

    # -- pulling -------------------------------------------------------------------------------

    async def start(self, nc) -> None:
        js = self.js_getter()
        config = consumer_config(self.names, self.ack_wait)
        try:
            await js.add_consumer(self.names.interactions, config=config)  # creates, or updates in place
        except BadRequestError as exc:  # a change the server cannot make in place: keep the existing one
            log.warning("core_consumer_config_kept", reason=str(exc)[:200])
        self._nc = nc
        self._inbox = nc.new_inbox()
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.names.interactions}.{DURABLE}"
        self._sub = await nc.subscribe(self._inbox, cb=self._delivered)
        self._running = True
        self._task = asyncio.create_task(self._run(), name="core-consumer")
        self._keeper = asyncio.create_task(self._keep_alive(), name="core-consumer-keeper")

    async def stop(self) -> None:
        self._running = False
        self._arrived.set()
        if self._task is not None:
            await self._task
        if self._keeper is not None:
            self._keeper.cancel()
            try:
                await self._keeper
            except asyncio.CancelledError:
                pass
        await self.drain()
        if self._sub is not None:
            await self._sub.unsubscribe()
        # Whatever was delivered and not taken comes back to another core at once.
        self._release(self._buffer)
        for m in self._buffer:
            await m.nak()
        self._buffer.clear()

    async def _delivered(self, msg: Msg) -> None:
        status = (msg.headers or {}).get("Status") if not msg.data else None
        if status:
            if status == "408":  # a pull request expired: what it did not deliver is no longer coming
                self._outstanding -= int((msg.headers or {}).get("Nats-Pending-Messages", 0) or 0)
                self._outstanding = max(self._outstanding, 0)
            elif status == "409":  # consumer changed, too many waiting requests…: ask again
                self._outstanding = 0
            self._arrived.set()
            return
        self._outstanding = max(self._outstanding - 1, 0)
        now = time.monotonic()
        self._held[id(msg)] = (msg, now, now)
        self._buffer.append(msg)
        self._arrived.set()

    async def _keep_alive(self) -> None:
        """Tells JetStream every held message is still being worked on, well within `ack_wait`.

        Without this, a batch waiting for the database (or a buffer waiting behind it) would be
        redelivered every `ack_wait`, each redelivery counting as a delivery, until the crash-loop
        guard dead-lettered it: an outage would be blamed on the messages.
        """
        every = max(self.ack_wait / 4, 0.2)
        while True:
            await asyncio.sleep(every / 2)
            now = time.monotonic()
            for key, (m, touched, since) in list(self._held.items()):
                if m.is_acked or now - since > KEEP_ALIVE_AT_MOST:  # settled, or (a safety net) forgotten
                    del self._held[key]
                elif now - touched >= every:
                    try:
                        await m.in_progress()
                    except Exception:  # noqa: BLE001 — NATS is away: the next round tries again
                        break
                    self._held[key] = (m, now, since)

    async def _pull(self) -> None:
        """Keeps enough messages asked for that the buffer refills while a batch is written."""
        now = time.monotonic()
        if now > self._requests_expire + 1.0:
            self._outstanding = 0  # every request is long expired (or lost in a reconnect)
        want = 2 * self.batch_size - len(self._buffer) - self._outstanding
        if want < self.batch_size // 2 and (self._outstanding or self._buffer):
            return
        want = max(want, 1)
        request = b'{"batch":%d,"expires":%d}' % (want, int(PULL_EXPIRES * 1e9))
        await self._nc.publish(self._next_subject, request, reply=self._inbox)
        self._outstanding += want
        self._requests_expire = now + PULL_EXPIRES

    async def _run(self) -> None:
        while self._running:
            batch: list[Msg] = []
            try:
                await self._pull()
                if not self._buffer and self._inflight is not None:
                    await self.drain()  # nothing else to do meanwhile: settle the batch in flight now
                    continue
                if not self._buffer:
                    self._arrived.clear()
                    try:
                        # Waiting on an event (not a queue) cannot lose a message when it times out.
                        await asyncio.wait_for(self._arrived.wait(), PULL_EXPIRES / 2)
                    except TimeoutError:
                        pass
                    continue
                batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
                await self.submit(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 — a NATS hiccup: keep consuming
                log.exception("core_consumer_error")
                # What this batch did not get to settle is no longer kept alive: JetStream brings it back.
                inflight = self._inflight.by_id.values() if self._inflight is not None else []
                kept = {id(m) for ms in inflight for m in ms}
                self._release([m for m in batch if id(m) not in kept])
                await asyncio.sleep(0.5)

    # -- processing ----------------------------------------------------------------------------
    #
    # Batch N+1 is prepared (decided, sealed, written: everything but the commit) while batch N
    # commits. N+1 is committed only after N committed; if N did not, N+1 is aborted and both are
    # done again one after the other. Messages are acked only after their batch committed.

    async def submit(self, raw: list[Msg]) -> None:
        """Prepares a batch while the previous one commits, then settles the previous one."""
        items, by_id = await self._decode(raw)
        if not items:
            return
        previous, self._inflight = self._inflight, None
        started = time.perf_counter()
        now = time.monotonic()
        oldest = min((self._held.get(id(m), (m, now, now))[2] for m in raw), default=now)
        log.debug("core_batch_started", size=len(items), waited_ms=round((now - oldest) * 1000, 1))
        preparing = asyncio.ensure_future(
            asyncio.to_thread(_timed, "core_batch_prepared", self.processor.prepare, items)
        )
        committed = await self._committed(previous) if previous is not None else None
        try:
            prepared = await preparing
        except Exception:  # noqa: BLE001 — done again below, one interaction at a time if need be
            prepared = None
        if previous is not None and committed is None:
            # The previous batch did not commit, and this one may have built on it: both again, in order.
            if prepared is not None:
                try:
                    # In a worker thread: a rollback on a hung PostgreSQL must not stall the event loop.
                    await asyncio.to_thread(prepared.abort)
                except INFRASTRUCTURE_ERRORS:
                    pass  # the connection is gone, and its transaction with it
                self.processor.forget(prepared.touched)
            self.processor.forget(previous.prepared.touched)
            await self._one_by_one(previous.items, previous.by_id, previous.started)
            await self._one_by_one(items, by_id, started)
            return
        if prepared is not None:  # committed while the previous batch's messages are settled
            commit = asyncio.ensure_future(asyncio.to_thread(_timed, "core_batch_commit", prepared.commit))
            self._inflight = _InFlight(items, by_id, prepared, commit, started)
        if previous is not None:
            await self._settle(previous.by_id, committed, previous.started)
        if prepared is None:
            await self._one_by_one(items, by_id, started)

    async def drain(self) -> None:
        """Waits until the batch being committed (if any) is committed and settled."""
        previous, self._inflight = self._inflight, None
        if previous is None:
            return
        committed = await self._committed(previous)
        if committed is None:
            self.processor.forget(previous.prepared.touched)
            await self._one_by_one(previous.items, previous.by_id, previous.started)
        else:
            await self._settle(previous.by_id, committed, previous.started)

    async def _decode(self, raw: list[Msg]) -> tuple[list[tuple[Interaction, int]], dict]:
        js = self.js_getter()
        items: list[tuple[Interaction, int]] = []
        by_id: dict = {}
        for m in raw:
            deliveries, seq = delivery(m)
            if deliveries > self.max_deliveries * CRASH_LOOP_FACTOR:
                self._release([m])
                await dead_letter(
                    js,
                    self.names,
                    m,
                    f"delivered {deliveries} times and never settled: it keeps crashing or stalling the core",
                )
                continue
            try:
                interaction = INTERACTION_DECODER.decode(m.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("interaction_undecodable", subject=m.subject, seq=seq)
                self._release([m])
                await dead_letter(js, self.names, m, f"undecodable: {exc}")
                continue
            if json_may_need_cleaning(m.data):
                # Connectors publish here directly, past the gateway's sanitiser: the same one again.
                interaction = sanitize(interaction)
            items.append((interaction, seq))
            by_id.setdefault(interaction.id, []).append(m)
        return items, by_id

    @staticmethod
    async def _committed(inflight: _InFlight) -> Outcome | None:
        try:
            return await inflight.commit
        except Exception as exc:  # noqa: BLE001 — a conflict with another core, or the database went away
            log.info("core_batch_commit_failed", size=len(inflight.items), error=type(exc).__name__)
            return None

    async def _one_by_one(self, items: list[tuple[Interaction, int]], by_id: dict, started: float) -> None:
        """The batch on its own, committed before anything else runs (splitting it to find a bad message).

        While the database is unreachable the same batch is tried again here, with a capped backoff,
        and nothing else is pulled: no message is nak'ed or blamed for an outage (the keeper keeps
        them all). Only when the consumer stops are they handed back, without delay.
        """
        attempt = 0
        while True:
            try:
                outcome: Outcome = await asyncio.to_thread(self.processor.process, items)
                break
            except INFRASTRUCTURE_ERRORS as exc:
                attempt += 1
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                    log.warning("core_database_unavailable", size=len(items), error=type(exc).__name__)
                if not self._running:
                    await self._hand_back(by_id)
                    return
                await asyncio.sleep(outage_backoff(attempt))
            except Exception as exc:  # noqa: BLE001 — nothing was recorded: every message comes back later
                log.warning("core_batch_failed", size=len(items), error=type(exc).__name__, infrastructure=False)
                for ms in by_id.values():
                    self._release(ms)
                    for m in ms:
                        await m.nak(delay=_backoff(m.metadata.num_delivered))
                return
        if self.outage_since is not None:
            log.warning("core_database_back", after_s=round(time.monotonic() - self.outage_since, 1))
            self.outage_since = None
        await self._settle(by_id, outcome, started)

    async def _hand_back(self, by_id: dict) -> None:
        """Returns held messages to JetStream for another core (a nak without delay: not a failure)."""
        for ms in by_id.values():
            self._release(ms)
            for m in ms:
                try:
                    await m.nak()
                except Exception:  # noqa: BLE001 — unacked, they come back after ack_wait anyway
                    return

    async def _settle(self, by_id: dict, outcome: Outcome, started: float) -> None:
        """After the commit: dead letters, retries, one log line per interaction, then the acks."""
        settling = [m for ms in by_id.values() for m in ms]
        try:
            await self._settle_messages(by_id, outcome, started)
        except Exception:  # noqa: BLE001 — unacked messages come back; never stop the consumer for it
            log.exception("core_batch_settle_failed", size=len(by_id))
        finally:
            # Settled, or an ack that did not go out: either way no longer kept alive, so JetStream
            # redelivers what it did not hear about (and the processor recognises it as done).
            self._release(settling)

    def _release(self, msgs) -> None:
        for m in msgs:
            self._held.pop(id(m), None)

    async def _settle_messages(self, by_id: dict, outcome: Outcome, started: float) -> None:
        js = self.js_getter()
        self._check_failpoint()
        for interaction_id, reason in outcome.poison.items():
            log.warning("interaction_dead_lettered", correlation_id=str(interaction_id), reason=reason[:200])
            for m in by_id.pop(interaction_id, []):
                await dead_letter(js, self.names, m, reason)
        for interaction_id, reason in outcome.failed.items():
            for m in by_id.pop(interaction_id, []):
                if m.metadata.num_delivered >= self.max_deliveries:
                    log.warning("interaction_dead_lettered", correlation_id=str(interaction_id), reason=reason[:200])
                    await dead_letter(js, self.names, m, f"failed {m.metadata.num_delivered} times: {reason}")
                else:
                    await m.nak(delay=_backoff(m.metadata.num_delivered))
        # One line per interaction (grep a correlation id to follow a message end to end): through a
        # logger bound once per batch and without context variables, as this runs thousands of times
        # a second (about 7 µs a line).
        info = log.bind().info
        for interaction_id in outcome.recorded:
            info("interaction_recorded", correlation_id=str(interaction_id))
        log.info(
            "core_batch_committed",
            recorded=len(outcome.recorded),
            duplicates=len(outcome.duplicates),
            poison=len(outcome.poison),
            failed=len(outcome.failed),
            events=outcome.events,
            conflicts=outcome.conflicts,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        for ms in by_id.values():
            for m in ms:
                await m.ack()

    def _check_failpoint(self) -> None:
        if self.failpoint and os.path.exists(self.failpoint):
            os.unlink(self.failpoint)
            log.warning("failpoint_exit", where="after commit, before ack")
            os._exit(137)


async def start_core_consumer(
    nc,
    js,
    processor: CoreProcessor,
    names: Names,
    *,
    max_deliveries: int = 5,
    ack_wait: float = 30.0,
    batch_size: int = 1000,
) -> CoreConsumer:
    relax_garbage_collector()
    consumer = CoreConsumer(
        processor,
        names,
        lambda: js,
        max_deliveries,
        os.environ.get(FAILPOINT_ENV),
        batch_size=batch_size,
        ack_wait=ack_wait,
    )
    await consumer.start(nc)
    return consumer


def build_core_router(
    processor: CoreProcessor | None,
    names: Names,
    js_getter,
    *,
    batch_size: int = 1000,
    max_deliveries: int = 5,
    ack_wait: float = 30.0,
) -> NatsRouter:
    """The core's consumer as FastStream sees it: for the AsyncAPI document (the core runs `CoreConsumer`)."""
    router = NatsRouter()

    @router.subscriber(
        names.subject("sb.interactions.>"),
        stream=JStream(names.interactions, declare=False),
        durable=DURABLE,
        config=consumer_config(names, ack_wait),
        pull_sub=PullSub(batch_size=batch_size, batch=True),
        ack_policy=AckPolicy.MANUAL,
        title="core: interactions → customer and case events",
        description="Normalized interactions from every channel, recorded once on the customer aggregate.",
    )
    async def record_interactions(msg: NatsMessage) -> None:
        raise RuntimeError("the core consumes with CoreConsumer; this router only documents it")

    return router
