"""The automation role's rule runner: follows the log and fires the rules whose `on` an event matches
and whose `if` holds, each at most once per event.

A `Follower` (services.platform.follower): one active per database, the others standing by. Every
batch is handled in the transaction that stores the follower's position, and in it:

- a saved rule (`automation.Configured`) goes into `sb_automation_rules`: a rule applies to the
  events after its save in the log, so replaying the log decides the same;
- for each event and each enabled rule on its type: the loop guard (`may_fire` over the chain of
  rules that led to the event, from `sb_automation_caused`), the `if` (services.domain.filters
  `evaluate`) over the event's own fields, its case (`case.FIELD`) and its customer
  (`customer.FIELD`), then a row in `sb_automation_firings` keyed (rule, event id): a rule fires
  once per event even when a batch is handled again after a crash;
- the actions: case events appended with `by: "automation:NAME"` (their chain recorded for the loop
  guard; a reply's chain also under its reply id, which the relay's and the core's later events of
  that reply carry), a webhook row in the outbox (services.automation.webhooks delivers it), and the firing
  itself as `automation.Fired` in the log.

A rule reads the case as it is when the rule runs (its latest state in the log), and the case's
`sentiment`, `intent` and `language` of its latest classification.

A person's command on the same case meanwhile is a version conflict: the batch rolls back and is
handled again from a fresh read. Events of an erased customer (read redacted) fire nothing.

What `customer.FIELD` reads: the profile read model (`proj_customers`: name, channels, first and
last seen, interaction count, custom attributes) and the customer's cases (`proj_cases`: open
cases, CSAT average, tags). Read models follow the log on their own, so a customer's figures may
lag the event by the projector's delay.

`consent.PURPOSE.CHANNEL`, `activities.TYPE.count` and `activities.amount.sum` read the log instead
(services.domain.customer_facts, with the meaning segments give them and the deployment's consent
policy): the customer's events and those of everyone merged into them. For an event on the
customer's own stream (`customer.ActivityRecorded`, `customer.ConsentChanged`, an inbound message)
up to that event, so that a rule on a second order sees two orders whatever the projector's delay,
and a replay decides the same; for a case's event, the customer as the log holds them now.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from events.automation import AutomationConfigured
from events.base import DomainEvent
from events.case import CaseClassified
from services.domain import customer_facts
from services.domain.assignment import AgentState, QueueRule, choose
from services.domain.automation import (
    Firing,
    Rule,
    event_case_id,
    may_fire,
    rule_of,
)
from services.domain.case import Case, Classifications
from services.domain.config import CannedResponse, Queue
from services.domain.consent import Policy
from services.domain.filters import evaluate
from services.domain.merges import merged_family, survivor_of
from services.domain.templates import fill
from services.platform.eventstore.store import EventStore, Transaction
from services.platform.follower import Follower
from services.platform.logs import get_logger

log = get_logger(__name__)

FOLLOWER_NAME = "automation"
_DELIVERY_NAMESPACE = uuid.UUID("b1d7e3c5-2f4a-4e8b-9c6d-0a1f2e3d4c5b")


def by_of(rule: str) -> str:
    return f"automation:{rule}"


def delivery_id(rule: str, event_id: UUID, index: int) -> UUID:
    """A webhook delivery's id, the same however often the firing is handled: receivers dedupe by it."""
    return uuid.uuid5(_DELIVERY_NAMESPACE, f"{rule}:{event_id}:{index}")


class _CaseView:
    """A case as this batch knows it: the aggregate (with what the batch appended to it) and its
    latest classification."""

    def __init__(self, case: Case, events: Sequence[DomainEvent]):
        self.case = case
        self.classified: CaseClassified | None = None
        for e in events:
            if type(e) is CaseClassified:
                self.classified = e


class Runner:
    def __init__(self, clock: Callable[[], datetime], consent_policy: Policy = "implied"):
        self.clock = clock
        self.consent_policy = consent_policy
        self._parsed: dict[tuple[str, int], Rule] = {}

    # -- the batch ------------------------------------------------------------------------------

    def handle(self, tx: Transaction, items: Sequence[tuple[int, DomainEvent, bool]]) -> None:
        rules = self._rules(tx)
        ids = [event.id for _, event, _ in items]
        chains: dict[UUID, list[str]] = {
            r["event_id"]: list(r["chain"])
            for r in tx.execute(
                "DELETE FROM sb_automation_caused WHERE event_id = ANY(%s) RETURNING event_id, chain", (ids,)
            ).fetchall()
        }
        # A rule's reply goes on through the relay and the core (sent, delivered, the outbound
        # message), events nobody's `by` names: the reply's id carries the chain to them.
        reply_ids = [r for _, event, _ in items if isinstance(r := getattr(event, "reply_id", None), UUID)]
        reply_chains: dict[UUID, list[str]] = {}
        if reply_ids:
            reply_chains = {
                r["reply_id"]: list(r["chain"])
                for r in tx.execute(
                    "SELECT reply_id, chain FROM sb_automation_replies WHERE reply_id = ANY(%s)", (reply_ids,)
                ).fetchall()
            }
        cases: dict[UUID, _CaseView] = {}
        customers: dict[tuple[UUID, int | None], customer_facts.CustomerFacts] = {}
        now = self.clock()
        for position, event, redacted in items:
            if type(event) is AutomationConfigured:
                self._save_rule(tx, event, rules)
                continue
            matching = [r for r in rules.values() if r.enabled and r.on == event.NAME]
            if not matching or redacted:
                continue
            reply_id = getattr(event, "reply_id", None)
            chain = (
                chains.get(event.id)
                or (reply_chains.get(reply_id) if isinstance(reply_id, UUID) else None)
                or _chain_from_by(event)
            )
            context = _Context(tx, event, cases, self.consent_policy, customers)
            for rule in matching:
                if not may_fire(rule.name, chain):
                    continue
                if rule.condition is not None and not evaluate(rule.condition, context.value_of, now):
                    continue
                fresh = tx.execute(
                    "INSERT INTO sb_automation_firings (rule, event_id, position, case_id, fired_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING rule",
                    (rule.name, event.id, position, event_case_id(event), now),
                ).fetchone()
                if fresh is None:
                    continue
                self._fire(tx, rule, event, position, chain, context, now)

    def _rules(self, tx: Transaction) -> dict[str, Rule]:
        rules: dict[str, Rule] = {}
        for r in tx.execute("SELECT name, version, rule FROM sb_automation_rules").fetchall():
            key = (r["name"], r["version"])
            rule = self._parsed.get(key)
            if rule is None:
                saved = msgspec.convert(r["rule"], AutomationConfigured)
                try:
                    rule = self._parsed[key] = rule_of(saved)
                except ValueError as exc:  # saved before this release refused what it holds (a pattern)
                    log.warning("automation_rule_unreadable", rule=saved.name, error=type(exc).__name__)
                    continue
            rules[r["name"]] = rule
        return rules

    def _save_rule(self, tx: Transaction, event: AutomationConfigured, rules: dict[str, Rule]) -> None:
        try:
            rule = rule_of(event)
        except ValueError as exc:  # saved by a release that knew an event type or action this one does not
            log.warning("automation_rule_unreadable", rule=event.name, error=type(exc).__name__)
            tx.execute("DELETE FROM sb_automation_rules WHERE name = %s", (event.name,))
            rules.pop(event.name, None)
            return
        tx.execute(
            "INSERT INTO sb_automation_rules (name, version, rule) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET version = excluded.version, rule = excluded.rule",
            (event.name, event.version, msgspec.json.encode(event).decode()),
        )
        self._parsed[(event.name, event.version)] = rule
        rules[event.name] = rule

    # -- firing ---------------------------------------------------------------------------------

    def _fire(
        self,
        tx: Transaction,
        rule: Rule,
        event: DomainEvent,
        position: int,
        chain: list[str],
        context: _Context,
        now: datetime,
    ) -> None:
        by = by_of(rule.name)
        view = context.case_view()  # None: the event belongs to no case
        done: list[str] = []
        webhooks: list[tuple[int, str]] = []
        for index, action in enumerate(rule.actions):
            if action.kind == "webhook":
                webhooks.append((index, action.value))
                done.append("webhook")
                continue
            if view is None:
                done.append(f"{action.kind}:no-case")
                continue
            case = view.case
            before = len(case.pending)
            if action.kind == "set_queue":
                case.transfer(action.value, by, now)
            elif action.kind == "set_priority":
                case.prioritize(action.value, by, now)
            elif action.kind == "add_tags":
                case.tag(list(action.value), by, now)
            elif action.kind == "assign_team":
                chosen = _team_agent(tx, action.value, case.assignee)
                if chosen is not None:
                    case.assign(chosen, by, now)
            elif action.kind == "reply":
                text = _canned_text(tx, action.value, case, context)
                if text is not None:
                    reply_id = uuid.uuid5(case.id, f"{by}:{event.id}:{index}")
                    case.request_reply(reply_id, text, by, now)
                    tx.execute(
                        "INSERT INTO sb_automation_replies (reply_id, chain) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (reply_id, [*chain, rule.name]),
                    )
            done.append(action.kind if len(case.pending) > before else f"{action.kind}:unchanged")
        caused: list[DomainEvent] = view.case.collect() if view is not None else []
        if caused:
            tx.append(caused)
            tx.execute(
                "INSERT INTO sb_automation_caused (event_id, chain) SELECT unnest(%s::uuid[]), %s "
                "ON CONFLICT (event_id) DO NOTHING",
                ([e.id for e in caused], [*chain, rule.name]),
            )
        if webhooks:
            body_of = _webhook_body(rule, event, position, view, now)
            for index, url in webhooks:
                did = delivery_id(rule.name, event.id, index)
                tx.execute(
                    "INSERT INTO sb_webhook_outbox (delivery_id, rule, event_id, url, body, next_at, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (did, rule.name, event.id, url, body_of(did), now, now),
                )
            tx.execute("NOTIFY sb_webhooks")
        case_id = view.case.id if view is not None else event_case_id(event)
        tx.append(Firing.record(rule, event, case_id, done, len(chain), now).collect())


def _chain_from_by(event: DomainEvent) -> list[str]:
    """An event written by a rule that the caused-table does not know (written before this release,
    or by another writer in the rule's name): the rule that wrote it."""
    by = getattr(event, "by", None)
    if isinstance(by, str) and by.startswith("automation:"):
        return [by.split(":", 1)[1]]
    return []


class _Context:
    """What a rule's `if` reads for one event: the event, its case and its customer, each loaded once."""

    def __init__(
        self,
        tx: Transaction,
        event: DomainEvent,
        cases: dict[UUID, _CaseView],
        consent_policy: Policy = "implied",
        customers: dict[tuple[UUID, int | None], customer_facts.CustomerFacts] | None = None,
    ):
        self.tx = tx
        self.event = event
        self.cases = cases
        self.customers = {} if customers is None else customers
        self.consent_policy = consent_policy
        self._customer: dict[str, Any] | None = None
        self._facts: customer_facts.CustomerFacts | None = None
        self._team: tuple[str | None] | None = None

    def case_view(self) -> _CaseView | None:
        case_id = event_case_id(self.event)
        if case_id is None:
            return None
        view = self.cases.get(case_id)
        if view is None:
            events = self.tx.store.load(case_id)
            if not events or events[0].NAME != "case.Opened":
                return None
            # Its classifications: on a stream of their own (older ones on the case's).
            classified = self.tx.store.load(Classifications.stream_of(case_id))
            view = self.cases[case_id] = _CaseView(Case.replay(case_id, events), [*events, *classified])
        if type(self.event) is CaseClassified:
            view.classified = view.classified or self.event
        return view

    def value_of(self, field: str) -> object:
        if field.startswith("case."):
            return self._case_field(field[5:])
        if field.startswith("customer."):
            return self._customer_field(field[9:])
        value = getattr(self.event, field, None)
        return str(value) if isinstance(value, UUID) else value

    def _case_field(self, name: str) -> object:
        view = self.case_view()
        if view is None:
            return None
        case = view.case
        if name in ("status", "priority", "queue", "assignee", "channel"):
            return getattr(case, name)
        if name == "tags":
            return list(case.tags)
        if name == "created_at":
            return case.opened_at
        if name in ("sentiment", "intent", "language"):
            return getattr(view.classified, name) if view.classified is not None else None
        if name == "team":
            if self._team is None:
                events = self.tx.store.load(Queue.stream_id(case.queue))
                config = Queue.replay(Queue.stream_id(case.queue), events).config if events else None
                self._team = (config.team if config else None,)
            return self._team[0]
        return None

    def _customer_field(self, name: str) -> object:
        if customer_facts.reads(name):
            if self._facts is None:
                self._facts = _facts_of(self.tx.store, self.event, self.customers)
            return customer_facts.value_of(self._facts, name, self.consent_policy)
        if self._customer is None:
            self._customer = _customer_row(self.tx, self.event.customer_id)
        row = self._customer
        if name.startswith("attributes."):
            return (row.get("custom_attributes") or {}).get(name.split(".", 1)[1])
        return row.get(name)


def _facts_of(
    store: EventStore, event: DomainEvent, loaded: dict[tuple[UUID, int | None], customer_facts.CustomerFacts]
) -> customer_facts.CustomerFacts:
    """The consent and activities of the event's customer and everyone merged into them, from the log:
    up to the event when it is on the customer's own stream, else as the log holds them now.
    `loaded`: the batch's customers folded so far, by (id, last version read; None: all)."""
    own_stream = event.stream_id == event.customer_id

    def facts(i: UUID) -> customer_facts.CustomerFacts:
        cut = event.version if own_stream and i == event.customer_id else None
        if (i, cut) not in loaded:
            events = store.load(i)
            loaded[(i, cut)] = customer_facts.fold(e for e in events if cut is None or e.version <= cut)
        return loaded[(i, cut)]

    root = event.customer_id if own_stream else survivor_of(event.customer_id, lambda i: facts(i).survivor_id)
    return customer_facts.combine([facts(i) for i in merged_family(root, lambda i: facts(i).absorbed)])


def _customer_row(tx: Transaction, customer_id: UUID) -> dict[str, Any]:
    row = tx.execute("SELECT c.id, c.merged_into FROM proj_customers c WHERE c.id = %s", (customer_id,)).fetchone()
    if row is not None and row["merged_into"] is not None:  # a merged customer: the survivor's profile
        customer_id = row["merged_into"]
    row = tx.execute(
        "SELECT c.name, c.channels, c.first_seen, c.last_seen, c.interaction_count, c.custom_attributes, "
        "(SELECT count(*) FROM proj_cases k WHERE k.customer_id = c.id AND k.status <> 'resolved') AS open_cases, "
        "(SELECT avg(k.csat) FROM proj_cases k WHERE k.customer_id = c.id AND k.csat IS NOT NULL) AS csat_avg, "
        "(SELECT COALESCE(array_agg(DISTINCT t), '{}') FROM proj_cases k, unnest(k.tags) t "
        " WHERE k.customer_id = c.id) AS tags "
        "FROM proj_customers c WHERE c.id = %s AND NOT c.erased",
        (customer_id,),
    ).fetchone()
    return dict(row) if row is not None else {}


def _team_agent(tx: Transaction, team: str, current: str | None) -> str | None:
    """An online agent of `team` with room, the least loaded (routing's own tables and rule)."""
    agents = [
        AgentState(
            r["agent_id"],
            r["rank"],
            r["status"],
            frozenset(r["teams"]),
            frozenset(r["skills"]),
            r["capacity"],
            r["disabled"],
        )
        for r in tx.execute("SELECT * FROM sb_routing_agents WHERE %s = ANY(teams)", (team,)).fetchall()
    ]
    if not agents:
        return None
    loads = {
        r["assignee"]: r["n"]
        for r in tx.execute(
            "SELECT assignee, count(*) AS n FROM sb_routing_cases "
            "WHERE status <> 'resolved' AND assignee = ANY(%s) GROUP BY assignee",
            ([a.id for a in agents],),
        ).fetchall()
    }
    queue = QueueRule(f"team:{team}", "least_loaded", team)
    keep = current if current in {a.id for a in agents} else None
    return choose(queue, agents, loads, keep)


def _canned_text(tx: Transaction, canned_id: UUID, case: Case, context: _Context) -> str | None:
    events = tx.store.load(canned_id)
    if not events or events[0].NAME != "canned.Created":
        return None
    canned = CannedResponse.replay(canned_id, events)
    if canned.deleted:
        return None
    name = context.value_of("customer.name")
    return fill(
        canned.text,
        {"customer.name": name if isinstance(name, str) else None, "agent.name": None, "case.id": str(case.id)},
    )


def _webhook_body(
    rule: Rule, event: DomainEvent, position: int, view: _CaseView | None, now: datetime
) -> Callable[[UUID], bytes]:
    """The JSON a webhook carries: the rule, the event's non-personal fields and the case as the
    firing left it. Personal fields (texts, addresses, tags) stay out: the receiver gets ids to look
    them up through the API with a token of its own."""
    personal = type(event).PERSONAL
    fields = {
        k: v
        for k, v in msgspec.structs.asdict(event).items()
        if k not in personal
        and k not in ("id", "stream_id", "version", "customer_id", "occurred_at")
        and isinstance(v, str | int | float | bool | UUID | datetime | type(None))
    }
    case = None
    if view is not None:
        c = view.case
        case = {
            "id": c.id,
            "status": c.status,
            "priority": c.priority,
            "queue": c.queue,
            "assignee": c.assignee,
            "channel": c.channel,
        }

    def body(did: UUID) -> bytes:
        return msgspec.json.encode(
            {
                "delivery_id": did,
                "rule": rule.name,
                "fired_at": now,
                "event": {
                    "id": event.id,
                    "type": event.NAME,
                    "position": position,
                    "occurred_at": event.occurred_at,
                    "stream_id": event.stream_id,
                    "customer_id": event.customer_id,
                    "case_id": event_case_id(event),
                    "fields": fields,
                },
                "case": case,
            }
        )

    return body


def automation_follower(
    store: EventStore, clock: Callable[[], datetime], consent_policy: Policy = "implied"
) -> Follower:
    return Follower(store, FOLLOWER_NAME, Runner(clock, consent_policy).handle)
