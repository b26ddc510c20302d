"""The core application: interactions in, customer and case events out, exactly once in effect.

A batch of interactions is handled in one PostgreSQL transaction that writes, together: the
domain events (hash-chained), new identity-index rows, merges, and one `sb_processed` row per
interaction carrying the JetStream stream sequence it came from. A redelivered interaction finds its
`sb_processed` row and changes nothing; a crash before commit leaves nothing behind and the
redelivery does the work. Two core processes touching one customer collide on the event store's
(stream, version) key or the identity index; the loser reloads and retries (optimistic concurrency).

Aggregates are cached between batches (each is the state after the last commit); anything a failed
attempt touched is evicted, so a retry always starts from the store.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from events.base import DomainEvent
from events.interactions import Identity, Interaction
from services.core.aggregate import Aggregate, DomainError
from services.core.case import Case
from services.core.customer import Customer
from services.core.identity import InvalidIdentity, normalize
from services.eventstore.store import ConcurrencyError, EventStore, Transaction
from services.logs import get_logger

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
    processed_at timestamptz NOT NULL DEFAULT now()
);
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
    poison: dict[UUID, str] = field(default_factory=dict)
    events: int = 0
    positions: list[int] = field(default_factory=list)


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

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
        self.owners: dict[bytes, UUID] = {}
        self.new_identities: dict[bytes, tuple[str, UUID]] = {}
        self.merges: list[tuple[UUID, UUID]] = []  # (absorbed, survivor)
        self.outbound: list[tuple[str, str, UUID, UUID | None]] = []
        self.touched: dict[UUID, Aggregate] = {}
        self.events: list[DomainEvent] = []

    def customer(self, customer_id: UUID) -> Customer:
        customer = self.core._load(Customer, customer_id, self)
        hops = 0
        while customer.survivor_id is not None and hops < 16:
            customer = self.core._load(Customer, customer.survivor_id, self)
            hops += 1
        return customer

    def case(self, case_id: UUID) -> Case:
        return self.core._load(Case, case_id, self)

    def add(self, aggregate: Aggregate) -> None:
        self.touched[aggregate.id] = aggregate

    def flush(self) -> None:
        for aggregate in self.touched.values():
            self.events.extend(aggregate.collect())


class CoreProcessor:
    def __init__(self, store: EventStore, cache_size: int = 50_000):
        self.store = store
        self.master = store.master
        self._cache: _LRU = _LRU(cache_size)

    def create_schema(self) -> None:
        with self.store.datastore.transaction(commit=True) as curs:
            curs.execute(SCHEMA)

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

    def forget(self, ids) -> None:
        for i in ids:
            self._cache.pop(i, None)

    # -- processing ----------------------------------------------------------------------------

    def process(self, items: Sequence[tuple[Interaction, int | None]], max_attempts: int = 8) -> Outcome:
        """Handles a batch; retries on concurrency conflicts; isolates poison interactions."""
        poison: dict[UUID, str] = {}
        for attempt in range(max_attempts):
            live = [(i, seq) for i, seq in items if i.id not in poison]
            try:
                outcome = self._attempt(live)
            except PoisonInteraction as exc:
                poison[exc.interaction_id] = exc.reason
                continue
            except ConcurrencyError as exc:
                log.info("core_batch_conflict", attempt=attempt, size=len(live), reason=str(exc)[:120])
                continue
            outcome.poison.update(poison)
            return outcome
        raise ConcurrencyError(f"batch still conflicting after {max_attempts} attempts")

    def _attempt(self, items: Sequence[tuple[Interaction, int | None]]) -> Outcome:
        outcome = Outcome()
        batch: _Batch | None = None
        try:
            with self.store.transaction() as tx:
                batch = _Batch(self, tx)
                seen = self._already_processed(tx, [i.id for i, _ in items])
                fresh: list[tuple[Interaction, int | None]] = []
                for interaction, seq in items:
                    if interaction.id in seen:
                        outcome.duplicates.append(interaction.id)
                    else:
                        seen.add(interaction.id)
                        fresh.append((interaction, seq))
                self._prefetch_owners(batch, [i for i, _ in fresh])
                for interaction, _ in fresh:
                    try:
                        self._handle(batch, interaction)
                    except (DomainError, InvalidIdentity, LookupError, ValueError) as exc:
                        raise PoisonInteraction(interaction.id, f"{type(exc).__name__}: {exc}") from exc
                    batch.flush()
                    outcome.recorded.append(interaction.id)
                tx.append(batch.events)
                self._write_side_tables(batch, fresh)
            outcome.events = len(batch.events)
            outcome.positions = tx.positions
            return outcome
        except BaseException:
            if batch is not None:
                self.forget(batch.touched)
            raise

    def _already_processed(self, tx: Transaction, ids: list[UUID]) -> set[UUID]:
        tx.execute("SELECT interaction_id FROM sb_processed WHERE interaction_id = ANY(%s)", (ids,))
        return {row["interaction_id"] for row in tx.curs.fetchall()}

    def _blind(self, identity: Identity) -> bytes:
        return self.master.blind_index(identity.kind, identity.value)

    def _prefetch_owners(self, batch: _Batch, interactions: list[Interaction]) -> None:
        blinds = set()
        for interaction in interactions:
            for identity in interaction.identities:
                try:
                    blinds.add(self._blind(normalize(identity)))
                except InvalidIdentity:
                    continue
        if blinds:
            batch.tx.execute("SELECT blind, customer_id FROM sb_identities WHERE blind = ANY(%s)", (list(blinds),))
            for row in batch.tx.curs.fetchall():
                batch.owners[bytes(row["blind"])] = row["customer_id"]

    def _write_side_tables(self, batch: _Batch, fresh: list[tuple[Interaction, int | None]]) -> None:
        tx = batch.tx
        for absorbed, survivor in batch.merges:
            tx.execute("UPDATE sb_identities SET customer_id = %s WHERE customer_id = %s", (survivor, absorbed))
            tx.execute("UPDATE sb_customer_aliases SET survivor_id = %s WHERE survivor_id = %s", (survivor, absorbed))
            tx.execute("INSERT INTO sb_customer_aliases VALUES (%s, %s) ON CONFLICT (absorbed_id) DO UPDATE "
                       "SET survivor_id = EXCLUDED.survivor_id", (absorbed, survivor))
        if batch.new_identities:
            blinds = list(batch.new_identities)
            tx.execute(
                "INSERT INTO sb_identities (blind, kind, customer_id) SELECT * FROM unnest(%s::bytea[], %s::text[], %s::uuid[]) "
                "ON CONFLICT (blind) DO NOTHING",
                (blinds, [batch.new_identities[b][0] for b in blinds], [batch.new_identities[b][1] for b in blinds]),
            )
            if tx.curs.rowcount != len(blinds):
                raise ConcurrencyError("an identity was linked by another writer")
        for channel, provider_id, case_id, reply_id in batch.outbound:
            tx.execute("INSERT INTO sb_outbound VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                       (channel, provider_id, case_id, reply_id))
        if fresh:
            tx.execute(
                "INSERT INTO sb_processed (interaction_id, stream_seq) SELECT * FROM unnest(%s::uuid[], %s::bigint[])",
                ([i.id for i, _ in fresh], [seq for _, seq in fresh]),
            )

    # -- one interaction -----------------------------------------------------------------------

    def _handle(self, batch: _Batch, interaction: Interaction) -> None:
        if interaction.kind == "status":
            self._handle_status(batch, interaction)
            return
        if interaction.direction == "outbound" and interaction.case_id is not None:
            self._handle_outbound(batch, interaction)
            return
        identities = [self._normalized(i) for i in interaction.identities]
        verified = [i for i in identities if i.verified]
        if not verified:
            raise PoisonInteraction(interaction.id, "no verified identity: nobody to record this for")
        at = interaction.occurred_at
        customer = self._resolve(batch, interaction, verified)
        for identity in verified:
            blind = self._blind(identity)
            if batch.owners.get(blind) != customer.id:
                batch.owners[blind] = customer.id
                batch.new_identities[blind] = (identity.kind, customer.id)
            customer.link(identity.kind, identity.value, at)
        for identity in identities:
            if not identity.verified:
                customer.claim(identity.kind, identity.value, at)
        if interaction.profile:
            verified_profile = interaction.channel != "chat" or any(i.kind == "external" for i in verified)
            customer.update_profile(interaction.profile, verified_profile, at)
        case_id = self._case_for(batch, customer, interaction)
        # Recorded under the effective thread key, so the next message of the conversation finds the case.
        customer.record(interaction, case_id, self._thread_key(customer, interaction))

    @staticmethod
    def _normalized(identity: Identity) -> Identity:
        try:
            return normalize(identity)
        except InvalidIdentity:
            if identity.verified:
                raise
            return identity  # a visitor's claim is kept as typed: it never links anyone

    def _resolve(self, batch: _Batch, interaction: Interaction, verified: list[Identity]) -> Customer:
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
                        batch.owners[blind] = survivor.id
            else:
                # Two different company-side ids: a supervisor decides, the data stays apart.
                survivor.suggest_merge(other.id, "different external ids", at, interaction.id)
                other.suggest_merge(survivor.id, "different external ids", at, interaction.id)
        return survivor if primary is survivor or primary.id in absorbed else primary

    def _case_for(self, batch: _Batch, customer: Customer, interaction: Interaction) -> UUID | None:
        if interaction.kind in ("auto_reply", "bounce"):
            # Machines answering machines: recorded on the timeline, never a case of their own.
            known = self._known_thread(customer, interaction)
            return known
        thread_key = self._thread_key(customer, interaction)
        at = interaction.occurred_at
        case_id = self._known_thread(customer, interaction)
        if case_id is not None:
            case = batch.case(case_id)
            if case.status != "resolved":
                case.add_message(interaction.id, interaction.direction, interaction.channel, at)
                return case.id
        case = Case.open(uuid.uuid5(_CASE_NS, str(interaction.id)), customer.id, interaction.channel,
                         thread_key, at, interaction_id=interaction.id)
        case.add_message(interaction.id, interaction.direction, interaction.channel, at)
        batch.add(case)
        self._cache.put(case.id, case)
        return case.id

    @staticmethod
    def _thread_key(customer: Customer, interaction: Interaction) -> str:
        return interaction.thread_key or f"{interaction.channel}:{customer.id}"

    def _known_thread(self, customer: Customer, interaction: Interaction) -> UUID | None:
        keys = [self._thread_key(customer, interaction)]
        keys += [k for k in interaction.meta.get("thread_ids", "").split() if k]
        for key in keys:
            if key in customer.threads:
                return customer.threads[key]
        return None

    def _handle_outbound(self, batch: _Batch, interaction: Interaction) -> None:
        case = batch.case(interaction.case_id)
        customer = batch.customer(case.customer_id)
        at = interaction.occurred_at
        case.add_message(interaction.id, "outbound", interaction.channel, at)
        if interaction.reply_id is not None:
            case.reply_sent(interaction.reply_id, interaction.provider_message_id, at)
        customer.record(interaction, case.id, case.thread_key)
        if interaction.provider_message_id:
            batch.outbound.append((interaction.channel, interaction.provider_message_id, case.id, interaction.reply_id))

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
            batch.tx.execute("SELECT case_id, reply_id FROM sb_outbound WHERE channel = %s AND provider_message_id = %s",
                             (interaction.channel, interaction.provider_message_id))
            row = batch.tx.curs.fetchone()
            if row is None:
                return  # a status for a message we did not send (or sent before records began)
            target = (row["case_id"], row["reply_id"])
        case_id, reply_id = target
        if reply_id is None:
            return
        case = batch.case(case_id)
        if interaction.status in ("delivered", "read"):
            case.reply_delivered(reply_id, interaction.occurred_at)
        elif interaction.status in ("failed", "undelivered"):
            case.reply_failed(reply_id, interaction.meta.get("error", interaction.status or "failed"), interaction.occurred_at)
