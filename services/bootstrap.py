"""The composition root: settings in, a running Switchboard out. Every entry point and test uses it.

Nothing connects at import time. Dependencies live at two lifetimes, and this module builds both:

- `Switchboard`, one per process (or per one-off CLI verb): the settings, the NATS connection and its
  JetStream context, the event store on PostgreSQL, and the roles it is asked to start, each a task
  or thread of this one process:

  - gateway:   channel endpoints (HTTP, WebSocket, SMTP) → SB_INTERACTIONS
  - core:      SB_INTERACTIONS → customer and case events in the event store
  - projector: event store → read models (timeline, profile, cases)
  - api:       agent API and console over the read models; case commands into the event store
  - relay:     event store → SB_EVENTS, in order, once; agents' replies out to the providers
  - router:    event store → case.Assigned by "routing" for the cases of routed queues
  - timer:     event store → the SLA clocks of cases, breaches and snoozed cases' wake-ups on time,
               and the CSAT survey of resolved cases (services.timer.sla, services.timer.csat)
  - classifier: event store → case.Classified (language, sentiment, intent) for every inbound
               message of a case (services.core.classifier)
  - automation: event store → the automation rules' actions on cases, once per rule and event,
               and their webhooks, signed and retried (services.automation)
  - campaigner: running campaigns out to their segments' members, each once, through the outbound
               ledger (services.campaigns.campaigner)

- `Services` (services.api.app), one per HTTP application: what request handlers reach as
  `app.state.services`. `open_http_services` builds it over a Switchboard (sharing its NATS
  connection and event store) and adds what only the listeners use: an async PostgreSQL pool, the
  chat session store, the interaction publisher, the AsyncAPI document. The listeners' owner
  (services.server.Server) opens it after the Switchboard and closes it before.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from channels.chat import ChatSessions
from channels.publish import Publisher
from projections.runner import ProjectionRunner, all_projections
from services.api.context import Services
from services.api.principals import PrincipalCache
from services.asyncapi import asyncapi_document
from services.automation.role import start_automation
from services.campaigns.campaigner import Campaigner
from services.core.activities import hand_on_forever
from services.core.classifier import classifier_follower
from services.core.consumer import CoreConsumer, start_core_consumer
from services.core.processor import CoreProcessor
from services.core.room import make_room_forever
from services.intelligence.classify import check_training
from services.intelligence.worker import shared_process
from services.platform.clock import Clock
from services.platform.database import Database, PromptAsyncPool, parse_database_url
from services.platform.eventstore.keys import MasterKey
from services.platform.eventstore.store import EventStore
from services.platform.logs import get_logger
from services.platform.nats_client import connect
from services.platform.schema import bring_up_to_date
from services.platform.settings import Settings
from services.platform.streams import Names, StreamLimits, ensure_streams
from services.relay.relay import start_relay
from services.routing.router import router_follower
from services.timer.csat import start_csat_surveys
from services.timer.sla import SlaTimer

log = get_logger(__name__)

ROLES = ("gateway", "core", "projector", "api", "relay", "router", "timer", "classifier", "automation", "campaigner")
# Roles that work on PostgreSQL alone (process managers of the event log): a process running only
# these connects to no NATS server, so needs no NATS user either.
DATABASE_ONLY_ROLES = ("router", "timer", "classifier", "automation", "campaigner")


class NotConnected(RuntimeError):
    """A part of Switchboard asked for NATS before `connect_nats` (or `connect_nats_only`) ran."""


@dataclass
class Switchboard:
    """The process-wide dependencies and the roles running on them; `stop` closes everything it opened."""

    settings: Settings
    names: Names = field(default_factory=Names)
    nc: NatsClient | None = None
    js: JetStreamContext | None = None
    store: EventStore | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    core_consumer: CoreConsumer | None = None

    # -- connections ---------------------------------------------------------------------------

    @property
    def database(self) -> Database:
        """SWITCHBOARD_DATABASE_URL, parsed by libpq: every PostgreSQL client here connects with it."""
        if not self.settings.database_url:
            raise RuntimeError("no database: set SWITCHBOARD_DATABASE_URL or run `switchboard up`")
        return parse_database_url(self.settings.database_url)

    def open_store(self) -> EventStore:
        if self.store is None:
            database = self.database
            # One plain connection first: a refused or unreachable database is reported with its
            # host and libpq's reason (DatabaseUnavailable), not as a pool timeout.
            schema = database.check()
            datastore = database.datastore(
                pool_size=8, max_overflow=8, connect_timeout=10.0, pre_ping=True, schema=schema
            )
            self.store = EventStore(
                datastore,
                MasterKey(self.settings.master_key_bytes),
                recent_max_bytes=self.settings.recent_events_max_bytes,
            )
        return self.store

    def create_schema(self) -> None:
        """Brings the database up to date: the platform's tables and upgrades (services.platform.schema),
        then the read models' own tables; safe to run again and from many processes at once."""
        store = self.open_store()
        bring_up_to_date(store, read_models=[p.schema for p in all_projections()])

    async def connect_nats(self) -> None:
        """The service's connection: reconnects for ever; streams, buckets and consumers made to match."""
        if self.nc is not None:
            return
        # Credentials in the URL (user:password@, token@) and SWITCHBOARD_NATS_CREDS go to nats-py as is.
        self.nc = await connect(self.settings, name="switchboard", max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self.js = self.nc.jetstream()
        await ensure_streams(
            self.js,
            self.names,
            self.settings.nats_retention_seconds,
            self.settings.nats_replicas,
            chat_sessions={
                "max_bytes": self.settings.chat_session_store_max_bytes,
                "ttl_seconds": self.settings.chat_session_ttl_seconds,
            },
            limits=StreamLimits.of(self.settings),
        )

    async def connect_nats_only(self, name: str) -> None:
        """NATS for a one-off command: no streams created or updated (that is the service's business)."""
        if self.nc is not None:
            return
        self.nc = await connect(self.settings, name=name, connect_timeout=5, allow_reconnect=False)
        self.js = self.nc.jetstream()

    def jetstream(self) -> JetStreamContext:
        if self.js is None:
            raise NotConnected("NATS is not connected")
        return self.js

    async def close_nats(self) -> None:
        """Closes the connection of `connect_nats`/`connect_nats_only` (a one-off command's)."""
        if self.nc is not None:
            await self.nc.close()
            self.nc = self.js = None

    # -- roles ---------------------------------------------------------------------------------

    async def start(self, roles: tuple[str, ...]) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles: {', '.join(sorted(unknown))}")
        if set(roles) - set(DATABASE_ONLY_ROLES):
            await self.connect_nats()
        await asyncio.to_thread(self.create_schema)
        if "core" in roles:
            await self._start_core()
        if "projector" in roles:
            self._start_projector()
        if "relay" in roles:
            await start_relay(self)
        if "router" in roles:
            self._start_follower(router_follower(self.open_store()).run_forever, "router")
        if "timer" in roles:
            self._start_timer()
            start_csat_surveys(self)
        if "classifier" in roles:
            self._start_classifier()
        if "automation" in roles:
            start_automation(self)
        if "campaigner" in roles:
            self._start_follower(Campaigner(self.open_store(), self.settings).run_forever, "campaigner")

    async def _start_core(self) -> None:
        processor = CoreProcessor(self.open_store(), cache_max_bytes=self.settings.core_cache_max_bytes)
        self.core_consumer = await start_core_consumer(
            self.nc,
            self.jetstream(),
            processor,
            self.names,
            max_deliveries=self.settings.max_deliveries,
            ack_wait=self.settings.core_ack_wait_seconds,
        )
        self.tasks.append(asyncio.create_task(make_room_forever(self.jetstream(), self.names, self.stop_event)))
        self.tasks.append(
            asyncio.create_task(hand_on_forever(self.jetstream(), self.names, self.stop_event), name="activities")
        )

    def _start_projector(self) -> None:
        loop = asyncio.get_running_loop()
        nc = self.nc
        if nc is None:
            raise NotConnected("the projector publishes live updates on NATS")

        def publish_live(items: list[dict[str, Any]]) -> None:
            import msgspec  # noqa: PLC0415

            payload = msgspec.json.encode(items)
            asyncio.run_coroutine_threadsafe(nc.publish(self.names.live_subject, payload), loop)

        runner = ProjectionRunner(self.open_store(), on_live=publish_live)
        thread = threading.Thread(target=runner.run_forever, args=(self.stop_event,), name="projector", daemon=True)
        thread.start()
        self.threads.append(thread)

    def _start_follower(self, run_forever: Callable[[threading.Event], None], name: str) -> None:
        """A process manager of the log (services.platform.follower) on a thread of its own."""
        thread = threading.Thread(target=run_forever, args=(self.stop_event,), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _start_timer(self) -> None:
        """The SLA timer (services.timer.sla): one active per database, the others standing by."""
        timer = SlaTimer(self.open_store(), Clock(self.settings.clock_file).now)
        self._start_follower(timer.follower().run_forever, "timer")

    def _start_classifier(self) -> None:
        """The classifier (services.core.classifier): one active per database, its model in a
        worker process of lower priority (services.intelligence.worker), shared by this process's
        Switchboards. A custom training file (SWITCHBOARD_CLASSIFIER_DATA) is checked here, so a
        bad one stops the start with its line."""
        data = self.settings.classifier_data
        if data:
            check_training(Path(data))
        process = shared_process(data, self.settings.classifier_nice)
        process.start()  # trains while the rest starts up
        worker = process.bound(self.stop_event)
        self._start_follower(classifier_follower(self.open_store(), lambda: worker).run_forever, "classifier")

    async def stop(self) -> None:
        self.stop_event.set()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self.core_consumer is not None:
            await self.core_consumer.stop()  # the batch being written is committed and acked
        for thread in self.threads:
            await asyncio.to_thread(thread.join, 15)
        if self.nc is not None:
            # Every publish was awaited to its JetStream ack already; drain would wait on the pull
            # consumers' open fetch requests for its whole timeout.
            try:
                await self.nc.flush(timeout=2)
            except Exception:  # noqa: BLE001
                pass
            try:
                await self.nc.close()
            except OSError as exc:  # NATS went away under us: nothing left to flush, stop the rest
                log.warning("nats_close_failed", error=type(exc).__name__)
        if self.store is not None:
            self.store.datastore.close()


# -- the HTTP application's dependencies -----------------------------------------------------------


async def open_http_services(sb: Switchboard) -> Services:
    """`Services` for one HTTP application, over the connections of a started Switchboard.

    Its PostgreSQL pool is its own (closed by `close_http_services`); NATS and the event store are sb's.
    """
    settings = sb.settings
    js = sb.jetstream()
    pool = PromptAsyncPool(sb.database.conninfo, min_size=1, max_size=10, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=30)
    principals = PrincipalCache()
    await principals.start(sb.database.conninfo)
    kv = await js.key_value(sb.names.chat_sessions_bucket)
    token_key = hmac.new(settings.master_key_bytes, b"switchboard/chat-token/v1", hashlib.sha256).digest()
    return Services(
        settings=settings,
        names=sb.names,
        nc=sb.nc,
        js=js,
        pool=pool,
        store=sb.open_store(),
        publisher=Publisher(js, sb.names),
        chat=ChatSessions(kv, token_key, settings.chat_identity_secret or ""),
        asyncapi=asyncapi_document(sb.names),
        principals=principals,
    )


async def close_http_services(services: Services) -> None:
    """Closes what `open_http_services` opened (after the HTTP server stopped)."""
    if services.principals is not None:
        await services.principals.stop()
    if services.pool is not None:
        await services.pool.close()
