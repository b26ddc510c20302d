"""The SLA timer: each case's clocks against its queue's SLA policy, breaches on time, snoozed cases woken.

A process manager on the event log (services.platform.follower): one active timer per database,
others standing by. From the log it keeps, in the transaction that stores its position:

- the policies (`sla.PolicyConfigured`) and which policy each queue uses (`queue.Configured`);
- per case, the status, queue and priority as the timer last saw them (`sb_sla_cases`);
- per case and target, the clock (`sb_sla_clocks`): running (due when) or paused (how many business
  seconds are left), fulfilled or breached;
- the snoozed cases' wake-ups (`sb_wakeups`).

and appends to cases what the clock says:

- opened (by the customer's message): `first_response` and `resolution` start, from the case's
  priority in its queue's policy (no clock without a policy, or without a duration for the priority);
- our first reply fulfils `first_response`; the customer writing after our reply starts
  `next_response`, our next reply fulfils it; resolving fulfils what still runs, reopening starts
  `resolution` again;
- pending (our reply) or snoozed pauses every running clock; the case open again (the customer
  wrote, or it woke) resumes each paused one with what was left of it, in business time;
- a new priority or queue measures running and paused clocks against the new durations.

Its tick (the timer's clock: services.platform.clock) records `case.SlaBreached` for every running
clock whose due time passed, and `case.Woken` for every snoozed case whose time came. Each is once:
one timer is active at a time (the follower's lock), the case records a breach or a wake-up at most
once (its own rule), and two writers of one case meet as a version conflict. A tick never decides on
a case with events further in the log than the timer has handled (a reply just before the due time
wins).

Times are the events' own (`occurred_at`), so replaying the log decides the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from psycopg.sql import SQL, Identifier

from events.case import (
    CaseMessageAdded,
    CaseOpened,
    CasePrioritized,
    CaseReopened,
    CaseResolved,
    CaseSnoozed,
    CaseTransferred,
    CaseWoken,
    ReplyRequested,
)
from events.config import SLA_TARGETS, BusinessHours, QueueConfigured, SlaPolicyConfigured
from services.domain.business_hours import Calendar, CalendarError
from services.domain.case import Case
from services.platform.eventstore.store import EventStore, Transaction
from services.platform.follower import Follower
from services.platform.logs import get_logger

log = get_logger(__name__)

FOLLOWER_NAME = "sla-timer"
TRACKING_NAME = f"follower:{FOLLOWER_NAME}"  # services.platform.follower.Follower.tracking_name


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """An SLA policy as the timer keeps it (`sb_sla_policies.policy`)."""

    first_response: dict[str, str] = {}
    next_response: dict[str, str] = {}
    resolution: dict[str, str] = {}
    business_hours: BusinessHours | None = None

    def duration(self, target: str, priority: str) -> timedelta | None:
        text = getattr(self, target, {}).get(priority)
        if text is None:
            return None
        try:
            return msgspec.convert(text, timedelta)
        except msgspec.ValidationError:
            return None

    def calendar(self) -> Calendar:
        try:
            return Calendar.of(self.business_hours)
        except CalendarError:  # checked when configured; a zone this machine lacks counts wall time
            return Calendar.wall()


_policy_json = msgspec.json.Decoder(Policy)


@dataclass
class _CaseRow:
    case_id: UUID
    queue: str
    priority: str
    status: str
    replied: bool
    awaiting: bool


class SlaTimer:
    def __init__(self, store: EventStore, clock: Callable[[], datetime], batch_size: int = 500):
        self.store = store
        self.clock = clock
        self.batch_size = batch_size

    def follower(self, tick_every: float = 1.0) -> Follower:
        return Follower(
            self.store,
            FOLLOWER_NAME,
            self.handle,
            tick=self.tick,
            tick_every=tick_every,
            clock=self.clock,
            batch_size=self.batch_size,
        )

    # -- events ------------------------------------------------------------------------------------

    def handle(self, tx: Transaction, items: Sequence[tuple[Any, ...]]) -> None:
        batch = _Batch(self.store, tx)
        for _position, event, _redacted in items:
            kind = type(event)
            if kind is QueueConfigured:
                tx.execute(
                    "INSERT INTO sb_sla_queues (queue, policy) VALUES (%s, %s) "
                    "ON CONFLICT (queue) DO UPDATE SET policy = excluded.policy",
                    (event.name, event.sla_policy),
                )
            elif kind is SlaPolicyConfigured:
                policy = Policy(
                    first_response=event.first_response,
                    next_response=event.next_response,
                    resolution=event.resolution,
                    business_hours=event.business_hours,
                )
                tx.execute(
                    "INSERT INTO sb_sla_policies (name, policy) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET policy = excluded.policy",
                    (event.name, msgspec.json.encode(policy).decode()),
                )
                batch.policies.pop(event.name, None)
            else:
                decide = _DECISIONS.get(kind)
                if decide is not None:
                    decide(batch, event)
        batch.flush()

    # -- the clock ---------------------------------------------------------------------------------

    def tick(self, tx: Transaction, now: datetime) -> None:
        batch = _Batch(self.store, tx)
        batch.handled = self.store.recorder.max_tracking_id(TRACKING_NAME) or 0
        due = tx.execute(
            "SELECT c.case_id, c.target FROM sb_sla_clocks c WHERE c.state = 'running' AND c.due_at <= %s "
            "ORDER BY c.due_at LIMIT %s",
            (now, self.batch_size),
        ).fetchall()
        for row in due:
            case = batch.current(row["case_id"])
            if case is None:
                continue
            before = len(case.pending)
            case.breach_sla(row["target"], now)
            if len(case.pending) > before:
                batch.set_clock(row["case_id"], row["target"], state="breached", due_at=None, running_since=None)
                log.info("sla_breached", case_id=str(case.id), target=row["target"])
            else:  # the case says otherwise (it is the truth): the clock follows it
                state, due_at = case.sla.get(row["target"], ("fulfilled", None))
                if state == "running":
                    batch.set_clock(row["case_id"], row["target"], due_at=due_at)
                else:
                    batch.set_clock(row["case_id"], row["target"], state=state, due_at=None, running_since=None)
        woken = tx.execute(
            "SELECT case_id FROM sb_wakeups WHERE due_at <= %s ORDER BY due_at LIMIT %s", (now, self.batch_size)
        ).fetchall()
        for row in woken:
            case = batch.current(row["case_id"])
            if case is None:
                continue
            case.wake(now)
            tx.execute("DELETE FROM sb_wakeups WHERE case_id = %s", (row["case_id"],))
        batch.flush()


class _Batch:
    """One transaction's work: the cases loaded (each once) and what they triggered, appended at the end."""

    def __init__(self, store: EventStore, tx: Transaction):
        self.store = store
        self.tx = tx
        self.cases: dict[UUID, Case] = {}
        self.rows: dict[UUID, _CaseRow | None] = {}
        self.policies: dict[str, tuple[Policy, Calendar] | None] = {}
        self.handled = 0  # the timer's position in the log (for the tick)
        schema, table = store.datastore.schema, store.recorder.events_table_name
        self._last_position = SQL("SELECT max(notification_id) AS p FROM {0}.{1} WHERE originator_id = %s").format(
            Identifier(schema), Identifier(table)
        )

    # -- state ---------------------------------------------------------------------------------------

    def row(self, case_id: UUID) -> _CaseRow | None:
        if case_id not in self.rows:
            found = self.tx.execute("SELECT * FROM sb_sla_cases WHERE case_id = %s", (case_id,)).fetchone()
            self.rows[case_id] = _CaseRow(**found) if found else None
        return self.rows[case_id]

    def save(self, row: _CaseRow) -> None:
        self.rows[row.case_id] = row
        self.tx.execute(
            "INSERT INTO sb_sla_cases (case_id, queue, priority, status, replied, awaiting) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (case_id) DO UPDATE SET queue = excluded.queue, "
            "priority = excluded.priority, status = excluded.status, replied = excluded.replied, "
            "awaiting = excluded.awaiting",
            (row.case_id, row.queue, row.priority, row.status, row.replied, row.awaiting),
        )

    def case(self, case_id: UUID) -> Case:
        """The case as stored now (once per batch), with what this batch triggered on it."""
        if case_id not in self.cases:
            self.cases[case_id] = Case.replay(case_id, self.store.load(case_id))
        return self.cases[case_id]

    def current(self, case_id: UUID) -> Case | None:
        """For the tick: the case, unless it has events the timer has not handled yet (then next tick:
        a reply recorded just before the due time is handled first, and wins)."""
        if self.row(case_id) is None:
            return None
        last = self.tx.execute(self._last_position, (case_id,)).fetchone()["p"]
        if last is not None and last > self.handled:
            return None
        return self.case(case_id)

    def policy(self, name: str | None) -> tuple[Policy, Calendar] | None:
        if name is None:
            return None
        if name not in self.policies:
            found = self.tx.execute("SELECT policy::text AS p FROM sb_sla_policies WHERE name = %s", (name,)).fetchone()
            if found is None:
                self.policies[name] = None
            else:
                policy = _policy_json.decode(found["p"])
                self.policies[name] = (policy, policy.calendar())
        return self.policies[name]

    def queue_policy(self, queue: str) -> str | None:
        found = self.tx.execute("SELECT policy FROM sb_sla_queues WHERE queue = %s", (queue,)).fetchone()
        return found["policy"] if found else None

    def clocks(self, case_id: UUID) -> dict[str, dict[str, Any]]:
        rows = self.tx.execute("SELECT * FROM sb_sla_clocks WHERE case_id = %s", (case_id,)).fetchall()
        return {r["target"]: r for r in rows}

    def set_clock(self, case_id: UUID, target: str, **values: Any) -> None:
        assignments = ", ".join(f"{k} = %s" for k in values)
        self.tx.execute(
            f"UPDATE sb_sla_clocks SET {assignments} WHERE case_id = %s AND target = %s",
            (*values.values(), case_id, target),
        )

    def calendar_of(self, policy_name: str) -> Calendar:
        found = self.policy(policy_name)
        return found[1] if found else Calendar.wall()

    def flush(self) -> None:
        events = [event for case in self.cases.values() for event in case.collect()]
        if events:
            self.tx.append(events)

    # -- the clock's moves -----------------------------------------------------------------------------

    def start(self, row: _CaseRow, target: str, at: datetime) -> None:
        name = self.queue_policy(row.queue)
        found = self.policy(name)
        if name is None or found is None:
            return
        policy, calendar = found
        duration = policy.duration(target, row.priority)
        if duration is None:
            return
        case = self.case(row.case_id)
        due = _add(calendar, at, duration.total_seconds())
        before = len(case.pending)
        case.start_sla(target, name, due, at)
        if len(case.pending) > before:
            seconds = duration.total_seconds()
            self.tx.execute(
                "INSERT INTO sb_sla_clocks (case_id, target, policy, state, due_at, duration_seconds, "
                "remaining_seconds, running_since) VALUES (%s, %s, %s, 'running', %s, %s, %s, %s) "
                "ON CONFLICT (case_id, target) DO UPDATE SET policy = excluded.policy, state = 'running', "
                "due_at = excluded.due_at, duration_seconds = excluded.duration_seconds, "
                "remaining_seconds = excluded.remaining_seconds, running_since = excluded.running_since",
                (row.case_id, target, name, due, seconds, seconds, at),
            )

    def has_clocks(self, case_id: UUID) -> bool:
        """Whether the case has any clock (most do not when no queue has a policy: nothing to load)."""
        return case_id in self.cases or bool(self.clocks(case_id))

    def fulfil(self, row: _CaseRow, target: str, at: datetime) -> None:
        if not self.has_clocks(row.case_id):
            return
        case = self.case(row.case_id)
        before = len(case.pending)
        case.fulfil_sla(target, at)
        if len(case.pending) > before:
            self.set_clock(row.case_id, target, state="fulfilled", due_at=None, running_since=None)

    def pause(self, row: _CaseRow, reason: str, at: datetime) -> None:
        if not self.has_clocks(row.case_id):
            return
        case = self.case(row.case_id)
        before = len(case.pending)
        case.pause_sla(reason, at)
        if len(case.pending) == before:
            return
        for target, clock in self.clocks(row.case_id).items():
            if clock["state"] == "running":
                used = self.calendar_of(clock["policy"]).between(clock["running_since"], at).total_seconds()
                left = max(0.0, clock["remaining_seconds"] - used)
                self.set_clock(
                    row.case_id, target, state="paused", due_at=None, running_since=None, remaining_seconds=left
                )

    def resume(self, row: _CaseRow, at: datetime) -> None:
        clocks = self.clocks(row.case_id)
        if not clocks:
            return
        case = self.case(row.case_id)
        for target, clock in clocks.items():
            if clock["state"] != "paused":
                continue
            due = _add(self.calendar_of(clock["policy"]), at, clock["remaining_seconds"])
            before = len(case.pending)
            case.resume_sla(target, due, at)
            if len(case.pending) > before:
                self.set_clock(row.case_id, target, state="running", due_at=due, running_since=at)

    def remeasure(self, row: _CaseRow, at: datetime) -> None:
        """The case's priority or queue changed: its clocks against the durations that apply now."""
        name = self.queue_policy(row.queue)
        found = self.policy(name)
        if name is None or found is None:
            return  # a queue without a policy keeps the clocks the case had
        policy, calendar = found
        case = self.case(row.case_id)
        clocks = self.clocks(row.case_id)
        for target, clock in clocks.items():
            duration = policy.duration(target, row.priority)
            if duration is None or clock["state"] not in ("running", "paused"):
                continue
            left = clock["remaining_seconds"]
            if clock["state"] == "running":
                left -= self.calendar_of(clock["policy"]).between(clock["running_since"], at).total_seconds()
            used = clock["duration_seconds"] - left
            remaining = max(0.0, duration.total_seconds() - used)
            values: dict[str, Any] = {
                "policy": name,
                "duration_seconds": duration.total_seconds(),
                "remaining_seconds": remaining,
            }
            if clock["state"] == "running":
                due = _add(calendar, at, remaining)
                case.retarget_sla(target, name, due, at)
                values.update(due_at=due, running_since=at)
            self.set_clock(row.case_id, target, **values)
        if row.status == "resolved":
            return
        started = False
        if "first_response" not in clocks and row.awaiting and not row.replied:
            self.start(row, "first_response", at)
            started = True
        if "resolution" not in clocks:
            self.start(row, "resolution", at)
            started = True
        if started and row.status in ("pending", "snoozed"):
            self.pause(row, row.status, at)


def _add(calendar: Calendar, at: datetime, seconds: float) -> datetime:
    """`seconds` of business time after `at`; wall-clock time if the calendar has too few hours to
    hold them (an hour a week and a target of months: a due date years away either way)."""
    try:
        return calendar.add(at, timedelta(seconds=seconds))
    except CalendarError:
        return at + timedelta(seconds=seconds)


# -- what each case event means for the clock ---------------------------------------------------------


def _opened(batch: _Batch, e: CaseOpened) -> None:
    if batch.row(e.stream_id) is not None:
        return  # handled before (a batch handled again after a failure)
    row = _CaseRow(e.stream_id, e.queue, e.priority, "open", False, e.interaction_id is not None)
    batch.save(row)
    if row.awaiting:
        batch.start(row, "first_response", e.occurred_at)
    batch.start(row, "resolution", e.occurred_at)


def _replied(batch: _Batch, row: _CaseRow, at: datetime) -> None:
    row.replied, row.awaiting = True, False
    batch.fulfil(row, "first_response", at)
    batch.fulfil(row, "next_response", at)


def _message(batch: _Batch, e: CaseMessageAdded) -> None:
    row = batch.row(e.stream_id)
    if row is None:
        return
    at = e.occurred_at
    if e.direction != "inbound":
        _replied(batch, row, at)
    else:
        if row.status in ("pending", "snoozed"):
            row.status = "open"
            batch.resume(row, at)
        if row.replied and not row.awaiting:
            batch.start(row, "next_response", at)
        row.awaiting = True
    batch.save(row)


def _reply(batch: _Batch, e: ReplyRequested) -> None:
    row = batch.row(e.stream_id)
    if row is None:
        return
    _replied(batch, row, e.occurred_at)
    if row.status in ("open", "snoozed"):
        row.status = "pending"
        batch.pause(row, "pending", e.occurred_at)
    batch.save(row)


def _snoozed(batch: _Batch, e: CaseSnoozed) -> None:
    row = batch.row(e.stream_id)
    if row is None:
        return
    row.status = "snoozed"
    batch.pause(row, "snoozed", e.occurred_at)
    batch.tx.execute(
        "INSERT INTO sb_wakeups (case_id, due_at) VALUES (%s, %s) ON CONFLICT (case_id) DO UPDATE SET due_at = %s",
        (e.stream_id, e.until, e.until),
    )
    batch.save(row)


def _woken(batch: _Batch, e: CaseWoken) -> None:
    row = batch.row(e.stream_id)
    if row is None:
        return
    batch.tx.execute("DELETE FROM sb_wakeups WHERE case_id = %s", (e.stream_id,))
    if row.status == "snoozed":
        row.status = "open"
        batch.resume(row, e.occurred_at)
    batch.save(row)


def _resolved(batch: _Batch, e: CaseResolved) -> None:
    row = batch.row(e.stream_id)
    if row is None:
        return
    row.status = "resolved"
    batch.tx.execute("DELETE FROM sb_wakeups WHERE case_id = %s", (e.stream_id,))
    for target in SLA_TARGETS:
        batch.fulfil(row, target, e.occurred_at)
    batch.save(row)


def _reopened(batch: _Batch, e: CaseReopened) -> None:
    row = batch.row(e.stream_id)
    if row is None or row.status != "resolved":
        return
    row.status = "open"
    batch.start(row, "resolution", e.occurred_at)
    batch.save(row)


def _prioritized(batch: _Batch, e: CasePrioritized) -> None:
    row = batch.row(e.stream_id)
    if row is None or row.priority == e.priority:
        return
    row.priority = e.priority
    batch.save(row)
    batch.remeasure(row, e.occurred_at)


def _transferred(batch: _Batch, e: CaseTransferred) -> None:
    row = batch.row(e.stream_id)
    if row is None or row.queue == e.queue:
        return
    row.queue = e.queue
    batch.save(row)
    batch.remeasure(row, e.occurred_at)


_DECISIONS: dict[type, Callable[[_Batch, Any], None]] = {
    CaseOpened: _opened,
    CaseMessageAdded: _message,
    ReplyRequested: _reply,
    CaseSnoozed: _snoozed,
    CaseWoken: _woken,
    CaseResolved: _resolved,
    CaseReopened: _reopened,
    CasePrioritized: _prioritized,
    CaseTransferred: _transferred,
}
