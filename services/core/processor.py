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

The decisions themselves are the domain's (`services/domain/`): whose touchpoint an interaction is
(`resolution`: register, link, merge, suggest), which case it joins (`routing`), what a status or a
bounce means for a reply (`replies`), how far a merge chain goes (`merges`). This module loads what
they need, calls them, and keeps what they changed; its SQL is in `batch_sql`.

Outcomes per interaction: recorded, duplicate (seen before), poison (can never be recorded as it is:
dead-letter it now) or failed (an unexpected error: retry later, dead-letter after N deliveries). An
unexpected error is pinned to one interaction by splitting the batch, so one bad message never holds
back the rest.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Iterable, Sequence
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError as ESInterfaceError
from eventsourcing.persistence import OperationalError as ESOperationalError
from eventsourcing.persistence import PersistenceError
from psycopg.errors import TransactionRollback

from events.base import DomainEvent
from events.interactions import Identity, Interaction
from services.core import batch_sql, snapshots
from services.core.cache import ByteLRU
from services.core.outcome import Outcome, PoisonInteraction, Prepared
from services.domain import activities, consent, merges, replies, routing
from services.domain.aggregate import Aggregate, DomainError
from services.domain.case import Case
from services.domain.customer import Customer
from services.domain.identity import (
    InvalidIdentity,
    normalized_identities,
    normalized_value,
    registers_on_claims_alone,
)
from services.domain.resolution import new_customer_id, resolve_customer
from services.platform.eventstore.keys import KeyDestroyedError
from services.platform.eventstore.store import ConcurrencyError, EventStore, Transaction
from services.platform.logs import get_logger

log = get_logger(__name__)

# Snapshots only while they describe every attribute of a Customer (a test says so too).
SNAPSHOTS_ON = snapshots.covers_every_field()

# Errors that say "the database is unreachable", not "this message is bad": the whole batch is
# retried later and no message is blamed for them.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    ESOperationalError,
    ESInterfaceError,
    ConnectionError,
)


class _Batch:
    """What one attempt at a batch has looked up and changed, in memory, before commit."""

    def __init__(self, core: CoreProcessor, tx: Transaction):
        self.core = core
        self.tx = tx
        self.owners: dict[bytes, UUID] = {}  # blind index → customer, as of this attempt
        self.changed_owners: dict[bytes, UUID] = {}  # what this batch links or moves (by a merge)
        self.new_identities: dict[bytes, tuple[str, UUID]] = {}
        self.merges: list[tuple[UUID, UUID]] = []  # (absorbed, survivor)
        self.outbound: list[batch_sql.OutboundRow] = []
        self.status_cases: dict[UUID, UUID] = {}  # status interaction → the case it reports on
        self.touched: dict[UUID, Aggregate] = {}
        self.current: dict[UUID, Aggregate] = {}  # touched by the interaction in hand
        self.caught_up: set[UUID] = set()  # cases read back to the store's latest version in this attempt
        self.events: list[DomainEvent] = []

    def customer(self, customer_id: UUID) -> Customer:
        """The customer, or the survivor it was merged into."""
        customer = self.core._load(Customer, customer_id, self)
        if customer.survivor_id is None:
            return customer  # never absorbed: the common case, no walk
        survivor_id = merges.survivor_of(customer_id, lambda i: self.core._load(Customer, i, self).survivor_id)
        return self.core._load(Customer, survivor_id, self)

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
    def __init__(self, store: EventStore, cache_max_bytes: int = 256 * 1024 * 1024, max_conflicts: int = 25):
        self.store = store
        self.master = store.master
        self.max_conflicts = max_conflicts
        # Aggregates between batches, bounded by their estimated size (settings.core_cache_max_bytes).
        self._cache = ByteLRU(cache_max_bytes)
        # Identities the last prepared batch linked or moved: seen by the next batch before they commit.
        self._uncommitted_owners: dict[bytes, UUID] = {}
        # Keyed hashes of identities: deterministic, and the same identities come back all the time.
        self._blind_index = functools.lru_cache(maxsize=262_144)(self.master.blind_index)

    def outbound_blind(self, channel: str, provider_message_id: str) -> str:
        """The keyed hash `sb_outbound` keeps instead of a provider's message id."""
        return self.master.outbound_blind(channel, provider_message_id)

    # -- loading -------------------------------------------------------------------------------

    def _load(self, cls, aggregate_id: UUID, batch: _Batch):
        found = batch.touched.get(aggregate_id) or self._cache.get(aggregate_id)
        if found is None:
            found = next(iter(self._preload(batch.tx, [aggregate_id])), None)
            if found is None:
                raise LookupError(f"{cls.__name__.lower()} {aggregate_id} not found")
        if not isinstance(found, cls):
            raise LookupError(f"{aggregate_id} is not a {cls.__name__.lower()}")
        batch.add(found)
        return found

    def _preload(self, tx: Transaction, ids: Iterable[UUID]) -> list[Aggregate]:
        """Loads the aggregates of these ids that are not cached, in one query (cold start, retries)."""
        cache = self._cache
        missing = [i for i in dict.fromkeys(ids) if i not in cache]
        if not missing:
            return []
        # Customers with a long history start from their snapshot: only the events after it are read.
        bases = self._open_snapshots(tx, missing)
        stored = batch_sql.stored_events_after(tx, {i: bases[i].version if i in bases else 0 for i in missing})
        streams: dict[UUID, list[DomainEvent]] = {}
        for s, (event, _redacted) in zip(stored, self.store.open_stored(stored), strict=True):
            streams.setdefault(s.originator_id, []).append(event)
        loaded: list[Aggregate] = []
        for stream_id in missing:
            events = streams.get(stream_id, [])
            aggregate: Aggregate | None = bases.get(stream_id)
            if aggregate is not None:
                for event in events:
                    aggregate.apply(event)
            elif events:
                cls = Customer if events[0].NAME.startswith("customer.") else Case
                aggregate = cls.replay(stream_id, events)
            else:
                continue
            if isinstance(aggregate, Customer) and len(events) >= snapshots.SNAPSHOT_AFTER:
                self._write_snapshot(aggregate)
            cache.put(stream_id, aggregate)
            loaded.append(aggregate)
        return loaded

    def _open_snapshots(self, tx: Transaction, ids: list[UUID]) -> dict[UUID, Customer]:
        """The readable snapshots of these customers (an erased customer's is not: it is replayed)."""
        if not SNAPSHOTS_ON:
            return {}
        opened = {}
        for customer_id, (version, sealed) in snapshots.stored(tx.curs, ids).items():
            try:
                aead = self.store.keyring.reader(tx.curs, customer_id)
            except LookupError:  # KeyDestroyedError, MissingKeyError
                continue
            customer = snapshots.open_sealed(customer_id, version, sealed, aead)
            if customer is not None:
                opened[customer_id] = customer
        return opened

    def _write_snapshot(self, customer: Customer) -> None:
        """The customer as committed (loaded, not yet changed by this batch), sealed with its key.

        In a short transaction of its own, not the batch's: a snapshot row locked until the batch
        commits could deadlock two cores that load the same customers in another order. It is a
        cache: when it cannot be written at once (locked, erased meanwhile, database away), it is not.
        """
        if not SNAPSHOTS_ON or customer.erased or customer.pending:
            return
        try:
            with self.store.datastore.transaction(commit=True) as curs:
                curs.execute("SET LOCAL lock_timeout = '200ms'")
                aead = self.store.keyring.reader(curs, customer.id)
                snapshots.write(curs, customer.id, customer.version, snapshots.seal(customer, aead))
        except (LookupError, psycopg.Error, PersistenceError) as exc:
            log.info("snapshot_not_written", customer_id=str(customer.id), reason=type(exc).__name__)

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
            seen = batch_sql.already_processed(tx, [i.id for i, _ in items])
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

    def _blind(self, identity: Identity) -> bytes:
        return self._blind_index(identity.kind, identity.value)

    def _prefetch(self, batch: _Batch, interactions: list[Interaction]) -> None:
        """The owners of every identity of the batch (one query), their aggregates and the cases their
        conversations last had, brought up to the log if cached (one query) or loaded if not.

        Only the case each message's thread points to is fetched, not every case the customer ever
        had: a customer's threads grow with its history (a long email life has thousands), and reading
        them all for each message made a batch's cost grow with its customers' pasts.
        """
        blinds_of: list[tuple[Interaction, list[bytes]]] = []
        case_ids = set()
        for interaction in interactions:
            if interaction.case_id is not None:
                case_ids.add(interaction.case_id)
            blinds = []
            for identity in interaction.identities:
                if not identity.verified:
                    continue
                try:
                    blinds.append(self._blind_index(identity.kind, normalized_value(identity.kind, identity.value)))
                except InvalidIdentity:
                    continue
            if blinds:
                blinds_of.append((interaction, blinds))
        every_blind = {b for _, blinds in blinds_of for b in blinds}
        if every_blind:
            batch.owners.update(batch_sql.identity_owners(batch.tx, every_blind))
            # What the batch before this one linked or moved, in case it has not committed yet.
            for blind in every_blind & self._uncommitted_owners.keys():
                batch.owners[blind] = self._uncommitted_owners[blind]
        wanted = list(dict.fromkeys([*batch.owners.values(), *case_ids, *self._thread_cases(batch, blinds_of)]))
        self._refresh(batch.tx, [i for i in wanted if i in self._cache])
        loaded = {a.id for a in self._preload(batch.tx, wanted) if isinstance(a, Customer)}
        if loaded:
            # The customers just loaded: the cases their messages' threads point to.
            self._preload(batch.tx, self._thread_cases(batch, blinds_of, loaded))

    def _thread_cases(
        self, batch: _Batch, blinds_of: list[tuple[Interaction, list[bytes]]], owners: set[UUID] | None = None
    ) -> list[UUID]:
        """The case each message's conversation last had, for the owners that are cached (or only these
        `owners`), as the domain will look it up: `routing.known_case` by the owner's thread key."""
        found: list[UUID] = []
        for interaction, blinds in blinds_of:
            for blind in blinds:
                owner = batch.owners.get(blind)
                if owner is None or (owners is not None and owner not in owners):
                    continue
                customer = self._cache.peek(owner)
                if isinstance(customer, Customer):
                    case_id = routing.known_case(customer, interaction, routing.thread_key_of(customer, interaction))
                    if case_id is not None:
                        found.append(case_id)
        return list(dict.fromkeys(found))

    def _refresh(self, tx: Transaction, ids: list[UUID]) -> None:
        """Brings these cached aggregates up to the log, in one query. Other roles write to the same
        streams (the router, the timer, agents' commands): met as a version conflict, such a write
        costs a retry of the whole batch. (The classifier used to be the worst of them, a
        `case.Classified` per message on the case's stream; it writes to a stream of its own now.)"""
        aggregates = {i: a for i in dict.fromkeys(ids) if (a := self._cache.get(i)) is not None}
        if not aggregates:
            return
        stored = batch_sql.stored_events_after(tx, {i: a.version for i, a in aggregates.items()})
        if not stored:
            return
        for s, (event, _redacted) in zip(stored, self.store.open_stored(stored), strict=True):
            aggregates[s.originator_id].apply(event)
        for stream_id in {s.originator_id for s in stored}:
            self._cache.put(stream_id, aggregates[stream_id])

    def _write_side_tables(self, batch: _Batch, recorded: list[tuple[Interaction, int | None]]) -> None:
        cases = batch.status_cases
        batch_sql.write_side_tables(
            batch.tx,
            merges=batch.merges,
            new_identities=batch.new_identities,
            outbound=batch.outbound,
            outbound_blind=self.outbound_blind,
            processed=[(i.id, seq, cases.get(i.id)) for i, seq in recorded],
        )

    # -- one interaction: load, let the domain decide, keep what it changed ---------------------

    def _handle(self, batch: _Batch, interaction: Interaction) -> None:
        if interaction.kind == "status":
            try:
                report = replies.status_report(interaction)
            except replies.StatusWithoutMessageId as exc:
                raise PoisonInteraction(interaction.id, str(exc)) from exc
            self._handle_status(batch, report)
            return
        if interaction.kind == "bounce":
            # A bounce is written by a mail server, not a customer: it reports on a message we sent.
            bounce = replies.bounce_report(interaction)
            if bounce is not None:
                self._handle_status(batch, bounce)
            return
        if interaction.direction == "outbound" and interaction.case_id is not None:
            self._handle_outbound(batch, interaction)
            return
        try:
            identities = normalized_identities(interaction.identities)  # may reject: nothing changed yet
        except InvalidIdentity as exc:
            raise PoisonInteraction(None, str(exc)) from exc
        verified = [i for i in identities if i.verified]
        if not verified and not registers_on_claims_alone(interaction.channel, interaction.direction, identities):
            raise PoisonInteraction(interaction.id, "no verified identity: nobody to record this for")
        owners = {}
        for identity in verified:
            owner = batch.owners.get(self._blind(identity))
            if owner is not None:
                owners[identity] = batch.customer(owner)
        resolution = resolve_customer(interaction, identities, owners, new_customer_id(interaction.id))
        customer = resolution.customer
        self._keep(batch, resolution.registered)
        for absorbed, survivor in resolution.merges:
            batch.merges.append((absorbed, survivor))
            for blind, owner in list(batch.owners.items()):
                if owner == absorbed:
                    batch.owners[blind] = batch.changed_owners[blind] = survivor
        for identity in resolution.newly_held:
            blind = self._blind(identity)
            batch.owners[blind] = batch.changed_owners[blind] = customer.id
            batch.new_identities[blind] = (identity.kind, customer.id)
        if interaction.channel == "activity":
            try:
                fields = activities.fields_of(interaction)
            except activities.BadActivity as exc:
                raise PoisonInteraction(interaction.id, str(exc)) from exc
            customer.record_activity(interaction, fields)  # an activity is never a case
            return
        thread_key = routing.thread_key_of(customer, interaction)
        choice = routing.case_for(
            customer, interaction, thread_key, self._known_case(batch, customer, interaction, thread_key)
        )
        self._keep(batch, choice.opened)
        # Recorded under the effective thread key, so the next message of the conversation finds the case.
        customer.record(interaction, choice.case_id, thread_key)
        if (keyword := consent.keyword_of(interaction)) is not None:
            at = interaction.occurred_at
            customer.change_consent(interaction.channel, keyword.granted, at, source=f"keyword:{keyword.word}")

    def _keep(self, batch: _Batch, created: Aggregate | None) -> None:
        """An aggregate the domain created: part of the batch, and cached."""
        if created is not None:
            batch.add(created)
            self._cache.put(created.id, created, new=True)

    @staticmethod
    def _known_case(batch: _Batch, customer: Customer, interaction: Interaction, thread_key: str) -> Case | None:
        """The case the conversation last had, loaded and current enough to decide whether it joins."""
        if not routing.opens_cases(interaction):
            return None
        case_id = routing.known_case(customer, interaction, thread_key)
        if case_id is None:
            return None
        case = batch.case(case_id)
        if not routing.joins(case):
            # An agent may have reopened it since: deciding on a new case writes nothing to this one,
            # so no version conflict would tell us the cached state was stale.
            case = batch.current_case(case_id)
        return case

    def _handle_outbound(self, batch: _Batch, interaction: Interaction) -> None:
        assert interaction.case_id is not None
        case = batch.current_case(interaction.case_id)
        replies.record_outbound(case, batch.customer(case.customer_id), interaction)
        if interaction.provider_message_id:
            batch.outbound.append((interaction.channel, interaction.provider_message_id, case.id, interaction.reply_id))

    def _handle_status(self, batch: _Batch, report: replies.StatusReport) -> None:
        target = self._reported_message(batch, report)
        if target is None:
            # Not a reply: a campaign's message, perhaps (else one we did not send, or sent before
            # records began). Its first decisive word is kept for the campaigner to record.
            outcome = replies.delivery_outcome(report.status)
            if outcome is not None and report.provider_message_id:
                blind = self.outbound_blind(report.channel, report.provider_message_id)
                batch_sql.mark_campaign_message(batch.tx, report.channel, blind, outcome, report.error)
            return
        case_id, reply_id = target
        batch.status_cases[report.interaction_id] = case_id
        if reply_id is not None:
            replies.record_delivery_status(batch.current_case(case_id), reply_id, report)

    def _reported_message(self, batch: _Batch, report: replies.StatusReport) -> tuple[UUID, UUID | None] | None:
        """(case, reply) of the message a status reports on: named by our relay, sent in this batch,
        or found in `sb_outbound` by the provider's id."""
        target: tuple[UUID, UUID | None] | None = None
        if report.case_id is not None and report.reply_id is not None:
            target = (report.case_id, report.reply_id)  # our own relay reporting on a reply
        for channel, provider_id, case_id, reply_id in batch.outbound:
            if (channel, provider_id) == (report.channel, report.provider_message_id):
                target = (case_id, reply_id)
        if target is None and report.provider_message_id:
            return batch_sql.sent_message(
                batch.tx,
                report.channel,
                self.outbound_blind(report.channel, report.provider_message_id),
                report.provider_message_id,
            )
        return target
