"""The core application: interactions in, customer and case events out, exactly once in effect.

A batch of interactions is handled in one PostgreSQL transaction that writes, together: the
domain events (hash-chained), new identity-index rows, merges, and one `sb_processed` row per
interaction carrying the JetStream stream sequence it came from. A redelivered interaction finds its
`sb_processed` row and changes nothing; a crash before commit leaves nothing behind and the
redelivery does the work. Two core processes touching one customer collide on the event store's
(stream, version) key, the identity index or `sb_processed`; the loser reloads and retries
(optimistic concurrency), so nothing is lost and no stream forks.

Aggregates are cached between batches (each is the state after the last commit); anything a failed
attempt touched is evicted, so a retry always starts from the store. A stale cache entry (another
writer appended since) is caught where it matters: every interaction appends to its customer's
stream, so acting on stale state is a version conflict; and where a decision could append nothing
(a reply's outcome, a message for a case that looks resolved), the case is first read up to date.

`prepare` + `Prepared.commit` split a batch at its commit, so that the consumer can decide batch
N+1 while batch N commits (N+1 sees what N linked before it is committed, and is committed only
after N); `process` does both, one batch at a time.

Outcomes per interaction: recorded, duplicate (seen before), poison (can never be recorded as it is:
dead-letter it now) or failed (an unexpected error: retry later, dead-letter after N deliveries). An
unexpected error is pinned to one interaction by splitting the batch, so one bad message never holds
back the rest.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import InterfaceError as ESInterfaceError
from eventsourcing.persistence import OperationalError as ESOperationalError
from eventsourcing.persistence import StoredEvent
from psycopg.errors import TransactionRollback

from events.base import DomainEvent
from events.interactions import Identity, Interaction
from services.domain.aggregate import Aggregate, DomainError
from services.domain.case import Case
from services.domain.customer import Customer
from services.domain.identity import InvalidIdentity, normalized_value, registers_on_claims_alone
from services.platform.eventstore.keys import KeyDestroyedError
from services.platform.eventstore.store import ConcurrencyError, EventStore, Transaction
from services.platform.logs import get_logger

log = get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sb_identities (
    blind bytea PRIMARY KEY,
    kind text NOT NULL,
    customer_id uuid NOT NULL
);
CREATE INDEX IF NOT EXISTS sb_identities_customer_idx ON sb_identities (customer_id);
CREATE TABLE IF NOT EXISTS sb_customer_aliases (
    absorbed_id uuid PRIMARY KEY,
    survivor_id uuid NOT NULL
);
CREATE TABLE IF NOT EXISTS sb_processed (
    interaction_id uuid PRIMARY KEY,
    stream_seq bigint,
    processed_at timestamptz NOT NULL DEFAULT now(),
    -- Set for delivery statuses and bounces: the case whose reply they report on. They record no
    -- interaction of the customer's, yet their messages in SB_INTERACTIONS name the customer (a
    -- WhatsApp status carries the recipient's number): erasure finds them by it.
    case_id uuid
);
CREATE TABLE IF NOT EXISTS sb_schema_migrations (
    name text PRIMARY KEY,
    done_at timestamptz NOT NULL DEFAULT now()
);
-- The messages we sent, by the provider's id, so that a status callback finds its reply. The id
-- itself is personal (a wamid encodes the recipient's number), so `provider_message_id` holds its
-- keyed hash (`outbound_blind`, 64 hex digits), like the identity index.
CREATE TABLE IF NOT EXISTS sb_outbound (
    channel text NOT NULL,
    provider_message_id text NOT NULL,
    case_id uuid NOT NULL,
    reply_id uuid,
    PRIMARY KEY (channel, provider_message_id)
);
"""

_CUSTOMER_NS = uuid.UUID("3d0c5f3e-6b0a-4a8e-8f55-0d9b7f0c2e10")
_CASE_NS = uuid.UUID("9a6f1d2c-4e3b-4c5a-8d7e-1f2a3b4c5d6e")

# Errors that say "the database is unreachable", not "this message is bad": the whole batch is
# retried later and no message is blamed for them.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError, psycopg.InterfaceError, ESOperationalError, ESInterfaceError, ConnectionError)

MERGE_HOPS = 16


def _uuid_array(ids: Iterable[UUID]) -> str:
    """A uuid[] literal: binding a list makes psycopg dump it element by element, far slower."""
    return "{" + ",".join(map(str, ids)) + "}"


def _bytea_array(values: Iterable[bytes]) -> str:
    """A bytea[] literal (hex escapes)."""
    return "{" + ",".join('"\\\\x%s"' % v.hex() for v in values) + "}"


def _copy(tx: Transaction, target: str, types: Sequence[str], rows: Sequence[tuple]) -> None:
    with tx.curs.copy(f"COPY {target} FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


class PoisonInteraction(Exception):
    """This interaction can never be processed as it is (bad data or a broken rule)."""

    def __init__(self, interaction_id: UUID | None, reason: str):
        super().__init__(reason)
        self.interaction_id = interaction_id
        self.reason = reason


@dataclass
class Outcome:
    recorded: list[UUID] = field(default_factory=list)
    duplicates: list[UUID] = field(default_factory=list)
    poison: dict[UUID, str] = field(default_factory=dict)  # rejected for good: dead-letter now
    failed: dict[UUID, str] = field(default_factory=dict)  # unexpected error: retry, then dead-letter
    events: int = 0
    positions: list[int] = field(default_factory=list)
    conflicts: int = 0

    def add(self, other: Outcome) -> None:
        self.recorded += other.recorded
        self.duplicates += other.duplicates
        self.poison.update(other.poison)
        self.failed.update(other.failed)
        self.events += other.events
        self.positions += other.positions
        self.conflicts += other.conflicts


class _Aborted(Exception):
    pass


class Prepared:
    """A batch whose events and records are written in a transaction that is still open."""

    def __init__(self, outcome: Outcome, context, tx: Transaction, touched: list[UUID]):
        self.outcome = outcome
        self.tx = tx
        self.touched = touched  # the aggregates it changed in memory: forget them if it never commits
        self.changed_owners: dict[bytes, UUID] = {}
        self._context = context

    def commit(self) -> Outcome:
        """Appends the events (under the log's lock) and commits; ConcurrencyError if another writer won."""
        context, self._context = self._context, None
        context.__exit__(None, None, None)
        self.outcome.positions = self.tx.positions
        return self.outcome

    def abort(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            try:
                context.__exit__(_Aborted, _Aborted(), None)
            except _Aborted:
                pass


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get(self, key, default=None):
        value = super().get(key, default)
        if value is not default:
            self.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class _Batch:
    """What one attempt at a batch has looked up and changed, in memory, before commit."""

    def __init__(self, core: CoreProcessor, tx: Transaction):
        self.core = core
        self.tx = tx
        self.owners: dict[bytes, UUID] = {}  # blind index → customer, as of this attempt
        self.changed_owners: dict[bytes, UUID] = {}  # what this batch links or moves (by a merge)
        self.new_identities: dict[bytes, tuple[str, UUID]] = {}
        self.merges: list[tuple[UUID, UUID]] = []  # (absorbed, survivor)
        self.outbound: list[tuple[str, str, UUID, UUID | None]] = []
        self.status_cases: dict[UUID, UUID] = {}  # status interaction → the case it reports on
        self.touched: dict[UUID, Aggregate] = {}
        self.current: dict[UUID, Aggregate] = {}  # touched by the interaction in hand
        self.caught_up: set[UUID] = set()  # cases read back to the store's latest version in this attempt
        self.events: list[DomainEvent] = []

    def customer(self, customer_id: UUID) -> Customer:
        """The customer, or the survivor it was merged into."""
        customer = self.core._load(Customer, customer_id, self)
        hops = 0
        while customer.survivor_id is not None and hops < MERGE_HOPS:
            customer = self.core._load(Customer, customer.survivor_id, self)
            hops += 1
        return customer

    def case(self, case_id: UUID) -> Case:
        return self.core._load(Case, case_id, self)

    def current_case(self, case_id: UUID) -> Case:
        """The case with every event other writers appended since it was cached.

        A stale aggregate is caught by a version conflict whenever we append to it; but a reply's
        outcome may append nothing when the case does not know the reply yet (the API appended
        ReplyRequested), so cases are caught up before a reply's outcome is decided.
        """
        case = self.case(case_id)
        if case_id not in self.caught_up and not case.pending:
            for event in self.core.store.load(case_id, after_version=case.version):
                case.apply(event)
            self.caught_up.add(case_id)
        return case

    def add(self, aggregate: Aggregate) -> None:
        self.touched[aggregate.id] = aggregate
        self.current[aggregate.id] = aggregate

    def flush(self) -> None:
        """Moves the interaction's new events to the batch, in the order they happened per stream."""
        for aggregate in self.current.values():
            if aggregate.pending:
                self.events.extend(aggregate.collect())
        self.current = {}


class CoreProcessor:
    def __init__(self, store: EventStore, cache_size: int = 50_000, max_conflicts: int = 25):
        self.store = store
        self.master = store.master
        self.max_conflicts = max_conflicts
        self._cache: _LRU = _LRU(cache_size)
        # Identities the last prepared batch linked or moved: seen by the next batch before they commit.
        self._uncommitted_owners: dict[bytes, UUID] = {}
        # Keyed hashes of identities: deterministic, and the same identities come back all the time.
        self._blind_index = functools.lru_cache(maxsize=262_144)(self.master.blind_index)

    def create_schema(self) -> None:
        with self.store.datastore.transaction(commit=True) as curs:
            curs.execute(SCHEMA)
            self._migrate(curs)

    def _migrate(self, curs) -> None:
        """Brings a database an older release created up to date; does nothing (and locks nothing) after.

        Every process runs this at start while cores are writing, and ALTER TABLE or CREATE INDEX lock
        the table even when there is nothing to do: so each step looks first.
        """
        curs.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                     "AND table_name = 'sb_processed' AND column_name = 'case_id'")
        if curs.fetchone() is None:
            curs.execute("ALTER TABLE sb_processed ADD COLUMN IF NOT EXISTS case_id uuid")
        curs.execute("SELECT to_regclass('sb_processed_case_idx') IS NULL AS missing")
        if curs.fetchone()["missing"]:
            curs.execute("CREATE INDEX IF NOT EXISTS sb_processed_case_idx ON sb_processed (case_id) "
                         "WHERE case_id IS NOT NULL")
        curs.execute("INSERT INTO sb_schema_migrations (name) VALUES ('sb_outbound: provider ids hashed') "
                     "ON CONFLICT DO NOTHING")
        if curs.rowcount:
            self._blind_outbound_rows(curs)

    def _blind_outbound_rows(self, curs) -> None:
        """Rows written before `sb_outbound` held keyed hashes: hashed now (a side table, not the log).

        Once per database. A row an older core writes during a rolling upgrade stays as it is: status
        lookups try its clear id too, and erasing the customer deletes it with the rest.
        """
        curs.execute("SELECT channel, provider_message_id FROM sb_outbound WHERE provider_message_id !~ '^[0-9a-f]{64}$'")
        clear = [(row["channel"], row["provider_message_id"]) for row in curs.fetchall()]
        if not clear:
            return
        curs.execute(
            "INSERT INTO sb_outbound SELECT o.channel, b.blind, o.case_id, o.reply_id FROM sb_outbound o "
            "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS b(channel, clear, blind) "
            "ON o.channel = b.channel AND o.provider_message_id = b.clear ON CONFLICT DO NOTHING",
            ([c for c, _ in clear], [p for _, p in clear], [self.outbound_blind(c, p) for c, p in clear]))
        curs.execute("DELETE FROM sb_outbound WHERE provider_message_id !~ '^[0-9a-f]{64}$'")

    def outbound_blind(self, channel: str, provider_message_id: str) -> str:
        """The keyed hash `sb_outbound` keeps instead of a provider's message id."""
        return self.master.blind_index(f"outbound:{channel}", provider_message_id).hex()

    # -- loading -------------------------------------------------------------------------------

    def _load(self, cls, aggregate_id: UUID, batch: _Batch):
        found = batch.touched.get(aggregate_id) or self._cache.get(aggregate_id)
        if found is None:
            events = self.store.load(aggregate_id)
            found = cls.replay(aggregate_id, events) if events else None
            if found is None:
                raise LookupError(f"{cls.__name__.lower()} {aggregate_id} not found")
            self._cache.put(aggregate_id, found)
        if not isinstance(found, cls):
            raise LookupError(f"{aggregate_id} is not a {cls.__name__.lower()}")
        batch.add(found)
        return found

    def _preload(self, tx: Transaction, ids: Iterable[UUID]) -> list[Aggregate]:
        """Loads the aggregates of these ids that are not cached, in one query (cold start, retries)."""
        cache = self._cache
        missing = [i for i in set(ids) if i not in cache]
        if not missing:
            return []
        tx.execute("SELECT originator_id, originator_version, topic, state FROM sb_events "
                   "WHERE originator_id = ANY(%s::uuid[]) ORDER BY originator_id, originator_version",
                   (_uuid_array(missing),))
        rows = tx.curs.fetchall()
        if not rows:
            return []
        stored = [StoredEvent(originator_id=r["originator_id"], originator_version=r["originator_version"],
                              topic=r["topic"], state=bytes(r["state"])) for r in rows]
        streams: dict[UUID, list[DomainEvent]] = {}
        for s, (event, _redacted) in zip(stored, self.store.open_stored(stored), strict=True):
            streams.setdefault(s.originator_id, []).append(event)
        loaded = []
        for stream_id, events in streams.items():
            cls = Customer if events[0].NAME.startswith("customer.") else Case
            aggregate = cls.replay(stream_id, events)
            self._cache.put(stream_id, aggregate)
            loaded.append(aggregate)
        return loaded

    def forget(self, ids) -> None:
        for i in ids:
            self._cache.pop(i, None)

    # -- processing ----------------------------------------------------------------------------

    def process(self, items: Sequence[tuple[Interaction, int | None]]) -> Outcome:
        """Records a batch (interaction, JetStream stream sequence) and says what became of each.

        Raises only for infrastructure errors (the database is unreachable) and for conflicts that
        outlast every retry; the caller then retries the whole batch later.
        """
        self._uncommitted_owners = {}  # one batch at a time: the store is the whole truth
        outcome = Outcome()
        self._process_into(list(items), outcome)
        return outcome

    def prepare(self, items: Sequence[tuple[Interaction, int | None]]) -> Prepared:
        """Writes a batch but leaves its transaction open: the caller commits it (or aborts it).

        This lets a caller decide batch N+1 while batch N commits. Until N has committed, N+1 must
        not be committed (it may build on N's state); if N fails, abort N+1 and `forget` what both
        touched. Only one `prepare` or `process` may run at a time; `commit` may run alongside.
        """
        prepared = self._with_retries(list(items), commit=False)
        self._uncommitted_owners = prepared.changed_owners  # type: ignore[union-attr]
        return prepared  # type: ignore[return-value]

    def _process_into(self, items: list[tuple[Interaction, int | None]], outcome: Outcome) -> None:
        if not items:
            return
        try:
            outcome.add(self._with_retries(items))  # type: ignore[arg-type]
        except INFRASTRUCTURE_ERRORS:
            raise
        except ConcurrencyError:
            raise
        except Exception as exc:  # noqa: BLE001 — a bug or a bad message: find out which message
            if len(items) == 1:
                log.warning("interaction_failed", correlation_id=str(items[0][0].id), error=type(exc).__name__)
                outcome.failed[items[0][0].id] = f"{type(exc).__name__}: {exc}"[:500]
                return
            middle = len(items) // 2
            self._process_into(items[:middle], outcome)
            self._process_into(items[middle:], outcome)

    def _with_retries(self, items: list[tuple[Interaction, int | None]], commit: bool = True) -> Outcome | Prepared:
        """One transaction for the batch; again without a poison interaction, or after a conflict."""
        poison: dict[UUID, str] = {}
        conflicts = 0
        while True:
            live = [(i, seq) for i, seq in items if i.id not in poison]
            try:
                prepared = self._prepare_attempt(live, poison)
                prepared.outcome.poison.update(poison)
                prepared.outcome.conflicts = conflicts
                if not commit:
                    return prepared
                try:
                    return prepared.commit()
                except BaseException:
                    self.forget(prepared.touched)
                    raise
            except PoisonInteraction as exc:
                poison[exc.interaction_id] = exc.reason
                continue
            except (ConcurrencyError, ESOperationalError) as exc:
                if isinstance(exc, ESOperationalError) and not isinstance(exc.__cause__, TransactionRollback):
                    raise  # the database is unreachable, not a conflict
                conflicts += 1
                if conflicts >= self.max_conflicts:
                    raise ConcurrencyError(f"still conflicting after {conflicts} attempts: {exc}") from exc
                log.info("core_batch_conflict", attempt=conflicts, size=len(live), reason=str(exc)[:120])
                # A little jitter, so that two cores on one customer stop colliding in lock-step.
                time.sleep(random.uniform(0, 0.002 * conflicts))

    def _prepare_attempt(self, items: Sequence[tuple[Interaction, int | None]], poison: dict[UUID, str]) -> Prepared:
        outcome = Outcome()
        batch: _Batch | None = None
        context = self.store.transaction()
        tx = context.__enter__()
        try:
            batch = _Batch(self, tx)
            seen = self._already_processed(tx, [i.id for i, _ in items])
            fresh: list[tuple[Interaction, int | None]] = []
            for interaction, seq in items:
                if interaction.id in seen:
                    outcome.duplicates.append(interaction.id)
                else:
                    seen.add(interaction.id)
                    fresh.append((interaction, seq))
            self._prefetch(batch, [i for i, _ in fresh])
            recorded: list[tuple[Interaction, int | None]] = []
            for interaction, seq in fresh:
                try:
                    self._handle(batch, interaction)
                except PoisonInteraction as exc:
                    if any(a.pending for a in batch.current.values()):
                        # It changed state before failing: start over without it.
                        raise PoisonInteraction(interaction.id, exc.reason) from exc
                    batch.current = {}  # rejected before it changed anything: carry on
                    poison[interaction.id] = exc.reason
                    continue
                except (DomainError, InvalidIdentity, LookupError, KeyDestroyedError) as exc:
                    raise PoisonInteraction(interaction.id, f"{type(exc).__name__}: {exc}") from exc
                batch.flush()
                recorded.append((interaction, seq))
                outcome.recorded.append(interaction.id)
            if batch.events:
                tx.append(batch.events)
            self._write_side_tables(batch, recorded)
            outcome.events = len(batch.events)
            prepared = Prepared(outcome, context, tx, list(batch.touched))
            prepared.changed_owners = batch.changed_owners
            return prepared
        except BaseException as exc:
            if batch is not None:
                self.forget(batch.touched)
            # Leave the transaction as `with` would: rolled back, the store's own error mapping applied.
            if not context.__exit__(type(exc), exc, exc.__traceback__):
                raise
            raise AssertionError("unreachable: the transaction swallowed an error") from exc

    def _already_processed(self, tx: Transaction, ids: list[UUID]) -> set[UUID]:
        tx.execute("SELECT interaction_id FROM sb_processed WHERE interaction_id = ANY(%s::uuid[])", (_uuid_array(ids),))
        return {row["interaction_id"] for row in tx.curs.fetchall()}

    def _blind(self, identity: Identity) -> bytes:
        return self._blind_index(identity.kind, identity.value)

    def _prefetch(self, batch: _Batch, interactions: list[Interaction]) -> None:
        """The owners of every identity of the batch (one query), and their aggregates if not cached."""
        blinds = set()
        case_ids = set()
        for interaction in interactions:
            if interaction.case_id is not None:
                case_ids.add(interaction.case_id)
            for identity in interaction.identities:
                if not identity.verified:
                    continue
                try:
                    blinds.add(self._blind_index(identity.kind, normalized_value(identity.kind, identity.value)))
                except InvalidIdentity:
                    continue
        if blinds:
            batch.tx.execute("SELECT blind, customer_id FROM sb_identities WHERE blind = ANY(%s::bytea[])",
                             (_bytea_array(blinds),))
            for row in batch.tx.curs.fetchall():
                batch.owners[bytes(row["blind"])] = row["customer_id"]
            # What the batch before this one linked or moved, in case it has not committed yet.
            for blind in blinds & self._uncommitted_owners.keys():
                batch.owners[blind] = self._uncommitted_owners[blind]
        loaded = self._preload(batch.tx, [*batch.owners.values(), *case_ids])
        # The cases of the customers that were not cached: their next message most likely joins one.
        thread_cases = [case_id for c in loaded if isinstance(c, Customer) for case_id in c.threads.values()]
        if thread_cases:
            self._preload(batch.tx, thread_cases)

    def _write_side_tables(self, batch: _Batch, recorded: list[tuple[Interaction, int | None]]) -> None:
        tx = batch.tx
        for absorbed, survivor in batch.merges:
            tx.execute("UPDATE sb_identities SET customer_id = %s WHERE customer_id = %s", (survivor, absorbed))
            tx.execute("UPDATE sb_customer_aliases SET survivor_id = %s WHERE survivor_id = %s", (survivor, absorbed))
            tx.execute("INSERT INTO sb_customer_aliases VALUES (%s, %s) ON CONFLICT (absorbed_id) DO UPDATE "
                       "SET survivor_id = EXCLUDED.survivor_id", (absorbed, survivor))
        if batch.new_identities:
            # Sorted: one order for every writer, so two of them wait on each other instead of deadlocking.
            # An identity another writer took meanwhile is a unique violation: a conflict, retried.
            _copy(tx, "sb_identities (blind, kind, customer_id)", ("bytea", "text", "uuid"),
                  [(b, *batch.new_identities[b]) for b in sorted(batch.new_identities)])
        if batch.outbound:
            rows = [(channel, self.outbound_blind(channel, provider_id), case_id, reply_id)
                    for channel, provider_id, case_id, reply_id in batch.outbound]
            tx.execute(
                "INSERT INTO sb_outbound SELECT * FROM unnest(%s::text[], %s::text[], %s::uuid[], %s::uuid[]) "
                "ON CONFLICT DO NOTHING", [list(col) for col in zip(*rows, strict=True)])
        if recorded:
            cases = batch.status_cases
            _copy(tx, "sb_processed (interaction_id, stream_seq, case_id)", ("uuid", "int8", "uuid"),
                  [(i.id, seq, cases.get(i.id)) for i, seq in recorded])

    # -- one interaction -----------------------------------------------------------------------

    def _handle(self, batch: _Batch, interaction: Interaction) -> None:
        if interaction.kind == "status":
            self._handle_status(batch, interaction)
            return
        if interaction.kind == "bounce":
            # A bounce is written by a mail server, not a customer: it reports on a message we sent.
            self._handle_bounce(batch, interaction)
            return
        if interaction.direction == "outbound" and interaction.case_id is not None:
            self._handle_outbound(batch, interaction)
            return
        identities = [self._normalized(i) for i in interaction.identities]  # may reject: nothing changed yet
        verified = [i for i in identities if i.verified]
        if not verified and not registers_on_claims_alone(interaction.channel, interaction.direction, identities):
            raise PoisonInteraction(interaction.id, "no verified identity: nobody to record this for")
        at = interaction.occurred_at
        customer = self._resolve(batch, interaction, verified)
        for identity in verified:
            blind = self._blind(identity)
            owner = batch.owners.get(blind)
            if owner is None:
                batch.owners[blind] = batch.changed_owners[blind] = customer.id
                batch.new_identities[blind] = (identity.kind, customer.id)
            elif owner != customer.id:
                # Held by a customer that could not be merged in (a suggested merge): it stays theirs.
                continue
            customer.link(identity.kind, identity.value, at)
        for identity in identities:
            if not identity.verified:
                customer.claim(identity.kind, identity.value, at)
        if interaction.profile:
            # What the sender calls themselves is as verified as the sender: an unverified From's
            # display name is a claim too.
            verified_profile = ((interaction.channel != "chat" and bool(verified))
                                or any(i.kind == "external" for i in verified))
            customer.update_profile(interaction.profile, verified_profile, at)
        thread_key = self._thread_key(customer, interaction)
        case_id = self._case_for(batch, customer, interaction, thread_key)
        # Recorded under the effective thread key, so the next message of the conversation finds the case.
        customer.record(interaction, case_id, thread_key)

    @staticmethod
    def _normalized(identity: Identity) -> Identity:
        try:
            value = normalized_value(identity.kind, identity.value)
        except InvalidIdentity as exc:
            if identity.verified:
                raise PoisonInteraction(None, f"invalid verified {identity.kind} identity: {exc}") from exc
            return identity  # a visitor's claim is kept as typed: it never links anyone
        if value == identity.value:
            return identity
        return Identity(identity.kind, value, identity.verified)

    def _resolve(self, batch: _Batch, interaction: Interaction, verified: list[Identity]) -> Customer:
        """The customer this touchpoint belongs to, merging the verified owners where allowed.

        An `external` id nobody holds yet is never linked to a customer who has another one: the
        touchpoint starts a customer of its own, and the two are suggested for a supervisor to merge.
        """
        unheld_external = {i.value for i in verified
                           if i.kind == "external" and batch.owners.get(self._blind(i)) is None}
        customer = self._resolve_owners(batch, interaction, verified)
        if not customer.would_hold_two_external_ids(unheld_external):
            return customer
        at = interaction.occurred_at
        separate = Customer.register(uuid.uuid5(_CUSTOMER_NS, str(interaction.id)), at)
        batch.add(separate)
        self._cache.put(separate.id, separate)
        separate.suggest_merge(customer.id, "different external ids", at, interaction.id)
        customer.suggest_merge(separate.id, "different external ids", at, interaction.id)
        return separate

    def _resolve_owners(self, batch: _Batch, interaction: Interaction, verified: list[Identity]) -> Customer:
        owner_ids: list[UUID] = []
        for identity in verified:
            owner = batch.owners.get(self._blind(identity))
            if owner is not None:
                survivor = batch.customer(owner).id
                if survivor not in owner_ids:
                    owner_ids.append(survivor)
        at = interaction.occurred_at
        if not owner_ids:
            customer = Customer.register(uuid.uuid5(_CUSTOMER_NS, str(interaction.id)), at)
            batch.add(customer)
            self._cache.put(customer.id, customer)
            return customer
        customers = [batch.customer(i) for i in owner_ids]
        # The channel's own sender identity comes first: it decides whose touchpoint this is when
        # a merge is not allowed.
        primary = customers[0]
        if len(customers) == 1:
            return primary
        # The oldest customer survives (ties by id, so that every core picks the same one).
        survivor = min(customers, key=lambda c: (c.registered_at is None, c.registered_at, str(c.id)))
        absorbed: set[UUID] = set()
        for other in customers:
            if other is survivor:
                continue
            if survivor.can_merge_with(other):
                survivor.absorb(other, at, interaction.id)
                absorbed.add(other.id)
                batch.merges.append((other.id, survivor.id))
                for blind, owner in list(batch.owners.items()):
                    if owner == other.id:
                        batch.owners[blind] = batch.changed_owners[blind] = survivor.id
            else:
                # Two different company-side ids: a supervisor decides, the data stays apart.
                survivor.suggest_merge(other.id, "different external ids", at, interaction.id)
                other.suggest_merge(survivor.id, "different external ids", at, interaction.id)
        return survivor if primary is survivor or primary.id in absorbed else primary

    def _case_for(self, batch: _Batch, customer: Customer, interaction: Interaction, thread_key: str) -> UUID | None:
        """The open case of this conversation, or a new one; None for machine-made mail."""
        case_id = self._known_thread(customer, interaction, thread_key)
        if interaction.kind in ("auto_reply", "bounce"):
            # Machines answering machines: recorded on the timeline, never a case of their own.
            return case_id
        at = interaction.occurred_at
        if case_id is not None:
            case = batch.case(case_id)
            if case.status == "resolved":  # an agent may have reopened it since: deciding on a new case writes
                case = batch.current_case(case_id)  # nothing to this one, so no conflict would tell us
            if case.status != "resolved":
                case.add_message(interaction.id, interaction.direction, interaction.channel, at)
                return case.id
        new_id = uuid.uuid5(_CASE_NS, str(interaction.id))
        if interaction.direction == "inbound":
            case = Case.open(new_id, customer.id, interaction.channel, thread_key, at, interaction_id=interaction.id)
        else:  # we wrote first (an agent on the provider's own console): the case starts with our message
            case = Case.open(new_id, customer.id, interaction.channel, thread_key, at)
            case.add_message(interaction.id, interaction.direction, interaction.channel, at)
        batch.add(case)
        self._cache.put(case.id, case)
        return case.id

    @staticmethod
    def _thread_key(customer: Customer, interaction: Interaction) -> str:
        return interaction.thread_key or f"{interaction.channel}:{customer.id}"

    @staticmethod
    def _known_thread(customer: Customer, interaction: Interaction, thread_key: str) -> UUID | None:
        found = customer.threads.get(thread_key)
        if found is not None:
            return found
        for key in interaction.meta.get("thread_ids", "").split():
            found = customer.threads.get(key)
            if found is not None:
                return found
        return None

    def _handle_outbound(self, batch: _Batch, interaction: Interaction) -> None:
        case = batch.current_case(interaction.case_id)
        customer = batch.customer(case.customer_id)
        at = interaction.occurred_at
        case.add_message(interaction.id, "outbound", interaction.channel, at)
        if interaction.reply_id is not None:
            case.reply_sent(interaction.reply_id, interaction.provider_message_id, at)
        customer.record(interaction, case.id, case.thread_key)
        if interaction.provider_message_id:
            batch.outbound.append((interaction.channel, interaction.provider_message_id, case.id, interaction.reply_id))

    def _handle_bounce(self, batch: _Batch, interaction: Interaction) -> None:
        """The reply the bounce returns failed; a bounce of a message we cannot identify changes nothing
        (and never registers the mailer daemon as a customer)."""
        bounced = interaction.meta.get("bounced_message_id", "").strip().strip("<>")
        if not bounced:
            return
        reason = "bounced" + (f" ({interaction.meta['bounce_status']})" if interaction.meta.get("bounce_status") else "")
        status = msgspec.structs.replace(interaction, kind="status", status="failed", provider_message_id=bounced,
                                         meta={"error": reason})
        self._handle_status(batch, status)

    def _handle_status(self, batch: _Batch, interaction: Interaction) -> None:
        target = None
        if interaction.case_id is not None and interaction.reply_id is not None:
            target = (interaction.case_id, interaction.reply_id)  # our own relay reporting on a reply
        elif not interaction.provider_message_id:
            raise PoisonInteraction(interaction.id, "status without a provider message id")
        for channel, provider_id, case_id, reply_id in batch.outbound:
            if (channel, provider_id) == (interaction.channel, interaction.provider_message_id):
                target = (case_id, reply_id)
        if target is None and interaction.provider_message_id:
            # The clear id too: a row an older core wrote during a rolling upgrade.
            batch.tx.execute("SELECT case_id, reply_id FROM sb_outbound WHERE channel = %s AND provider_message_id = ANY(%s)",
                             (interaction.channel, [self.outbound_blind(interaction.channel, interaction.provider_message_id),
                                                    interaction.provider_message_id]))
            row = batch.tx.curs.fetchone()
            if row is None:
                return  # a status for a message we did not send (or sent before records began)
            target = (row["case_id"], row["reply_id"])
        case_id, reply_id = target
        batch.status_cases[interaction.id] = case_id
        if reply_id is None:
            return
        case = batch.current_case(case_id)
        if interaction.status in ("delivered", "read"):
            case.reply_delivered(reply_id, interaction.occurred_at)
        elif interaction.status in ("failed", "undelivered"):
            case.reply_failed(reply_id, interaction.meta.get("error", interaction.status or "failed"), interaction.occurred_at)
