"""The customer: who they are (identities, profile) and every touchpoint they ever had.

Pure domain: no I/O, no clock. Time arrives with the interaction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from events.customer import (
    CUSTOMER_EVENTS,
    ActivityRecorded,
    ConsentChanged,
    CustomerAbsorbed,
    CustomerAttributesSet,
    CustomerErased,
    CustomerMerged,
    CustomerRegistered,
    IdentityClaimed,
    IdentityLinked,
    InteractionRecorded,
    MergeSuggested,
    MergeSuggestionResolved,
    ProfileUpdated,
)
from events.interactions import Interaction
from services.domain import consent
from services.domain.aggregate import Aggregate, DomainError


class CustomerAbsorbedError(DomainError):
    """Commands go to the survivor of a merge, never the absorbed customer."""


class CustomerErasedError(DomainError):
    pass


class SuggestionResolvedError(DomainError):
    """A suggested merge already accepted cannot be rejected, nor a rejected one accepted."""


# How many of a customer's latest interaction ids it remembers to drop a redelivery on its own. An
# older one is not forgotten: the core checks every interaction against its processed-interaction
# records in the store before the customer sees it, so the window only bounds memory (a customer
# with 100k touchpoints no longer holds 100k ids) and never lets a duplicate through.
RECENT_INTERACTIONS = 256


class RecentIds:
    """The last `size` ids, oldest evicted first: `in` and `add` like a set, memory bounded."""

    __slots__ = ("_ids", "size")

    def __init__(self, size: int = RECENT_INTERACTIONS):
        self.size = size
        self._ids: OrderedDict[UUID, None] = OrderedDict()

    def add(self, item: UUID) -> None:
        self._ids[item] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[UUID]:
        return iter(self._ids)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecentIds):
            return list(self._ids) == list(other._ids)
        if isinstance(other, (set, frozenset)):
            return set(self._ids) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _verdict(accepted: bool) -> str:
    return "accepted" if accepted else "rejected"


class Customer(Aggregate):
    EVENTS = CUSTOMER_EVENTS

    def __init__(self, id: UUID):
        super().__init__(id)
        self.registered_at: datetime | None = None
        self.identities: set[tuple[str, str]] = set()
        self.claims: set[tuple[str, str]] = set()
        self.profile: dict[str, str] = {}
        self.threads: dict[str, UUID] = {}  # thread key → the case carrying that conversation
        # The latest interaction ids only (see RECENT_INTERACTIONS): older ones are the store's to know.
        self.interactions = RecentIds()
        self.absorbed: list[UUID] = []
        self.survivor_id: UUID | None = None
        self.suggested: set[UUID] = set()
        self.erased = False
        self.consents: dict[tuple[str, str], bool] = {}  # (purpose, channel) → given or withdrawn
        self.inbound_channels: set[str] = set()  # where the customer has written to us
        self.attributes: dict[str, Any] = {}
        self.suggestions_resolved: dict[UUID, bool] = {}  # other customer → accepted

    @property
    def owner_id(self) -> UUID:
        return self.id

    @property
    def external_ids(self) -> set[str]:
        return {value for kind, value in self.identities if kind == "external"}

    # -- commands ------------------------------------------------------------------------------

    @classmethod
    def register(cls, id: UUID, at: datetime) -> Customer:
        customer = cls(id)
        customer._trigger(CustomerRegistered, at)
        return customer

    def _check_active(self) -> None:
        if self.survivor_id is not None:
            raise CustomerAbsorbedError(f"customer {self.id} was merged into {self.survivor_id}")
        if self.erased:
            raise CustomerErasedError(f"customer {self.id} was erased")

    def link(self, kind: str, value: str, at: datetime) -> None:
        self._check_active()
        if (kind, value) not in self.identities:
            self._trigger(IdentityLinked, at, kind=kind, value=value)

    def claim(self, kind: str, value: str, at: datetime) -> None:
        self._check_active()
        if (kind, value) not in self.claims and (kind, value) not in self.identities:
            self._trigger(IdentityClaimed, at, kind=kind, value=value)

    def update_profile(self, attributes: dict[str, str], verified: bool, at: datetime) -> None:
        self._check_active()
        changed = {k: v for k, v in attributes.items() if v and self.profile.get(k) != v}
        if changed:
            self._trigger(ProfileUpdated, at, attributes=changed, verified=verified)

    def record(self, interaction: Interaction, case_id: UUID | None, thread_key: str | None = None) -> None:
        self._check_active()
        if interaction.id in self.interactions:
            return  # the same touchpoint, delivered again: recorded once (older ones: the core's store check)
        self._trigger(
            InteractionRecorded,
            interaction.occurred_at,
            interaction_id=interaction.id,
            channel=interaction.channel,
            direction=interaction.direction,
            kind=interaction.kind,
            case_id=case_id,
            text=interaction.text,
            provider_message_id=interaction.provider_message_id,
            thread_key=thread_key or interaction.thread_key,
            attachments=list(interaction.attachments),
            meta=dict(interaction.meta),
            reply_id=interaction.reply_id,
        )

    def can_merge_with(self, other: Customer) -> bool:
        """Two different company-side ids mean two people, whatever else they share."""
        mine, theirs = self.external_ids, other.external_ids
        return not (mine and theirs and mine != theirs)

    def would_hold_two_external_ids(self, incoming: set[str]) -> bool:
        """Linking these `external` values would give this customer a second company-side id."""
        return bool(incoming) and len(self.external_ids | incoming) > 1

    def absorb(
        self, other: Customer, at: datetime, interaction_id: UUID | None = None, decided_by: str | None = None
    ) -> None:
        """Merges `other` into this customer; `other` records that it was absorbed.

        `decided_by`: a person (a supervisor) decided these are one customer. Their decision stands
        over the rule that keeps two company-side (`external`) ids apart, which only stops the
        automatic merges; the survivor then holds both ids."""
        self._check_active()
        other._check_active()
        if other.id == self.id:
            raise DomainError("a customer cannot absorb itself")
        if decided_by is None and not self.can_merge_with(other):
            raise DomainError("customers with different external ids are not merged automatically")
        self._trigger(CustomerMerged, at, absorbed_id=other.id, interaction_id=interaction_id, by=decided_by or "")
        other._trigger(CustomerAbsorbed, at, survivor_id=self.id)
        for kind, value in sorted(other.identities - self.identities):
            self._trigger(IdentityLinked, at, kind=kind, value=value)
        if other.profile:
            missing = {k: v for k, v in other.profile.items() if k not in self.profile}
            if missing:
                self._trigger(ProfileUpdated, at, attributes=missing, verified=True)
        for (purpose, channel), granted in sorted(other.consents.items()):
            if (purpose, channel) not in self.consents:  # the survivor's own word stands
                self._trigger(ConsentChanged, at, channel=channel, granted=granted, purpose=purpose, source="merge")

    def suggest_merge(self, other_id: UUID, reason: str, at: datetime, interaction_id: UUID | None = None) -> None:
        self._check_active()
        if other_id not in self.suggested:
            self._trigger(MergeSuggested, at, other_id=other_id, reason=reason, interaction_id=interaction_id)

    def record_activity(self, interaction: Interaction, activity: dict[str, Any]) -> None:
        """A business activity carried as an interaction (channel "activity"): recorded once."""
        self._check_active()
        if interaction.id in self.interactions:
            return
        self._trigger(ActivityRecorded, interaction.occurred_at, interaction_id=interaction.id, **activity)

    def change_consent(
        self, channel: str, granted: bool, at: datetime, purpose: str = "marketing", source: str = ""
    ) -> None:
        self._check_active()
        if self.consents.get((purpose, channel)) != granted:
            self._trigger(ConsentChanged, at, channel=channel, granted=granted, purpose=purpose, source=source)

    def marketing_allowed(self, channel: str, policy: consent.Policy, purpose: str = "marketing") -> bool:
        """May a campaign reach this customer on `channel` now (see services.domain.consent)."""
        if self.erased or self.survivor_id is not None:
            return False
        return consent.allowed(self.consents.get((purpose, channel)), channel in self.inbound_channels, policy)

    def set_attributes(self, values: dict[str, Any], by: str, at: datetime) -> None:
        """Values already checked against their definitions (the caller's job); None removes one."""
        self._check_active()
        changed = {k: v for k, v in values.items() if self.attributes.get(k) != v}
        if changed:
            self._trigger(CustomerAttributesSet, at, values=changed, by=by)

    def resolve_suggestion(self, other_id: UUID, accepted: bool, by: str, at: datetime) -> None:
        if other_id not in self.suggested:
            raise DomainError(f"no merge with {other_id} was suggested")
        if other_id in self.suggestions_resolved and self.suggestions_resolved[other_id] != accepted:
            raise SuggestionResolvedError(f"the merge with {other_id} was already {_verdict(not accepted)}")
        if other_id not in self.suggestions_resolved:
            self._trigger(MergeSuggestionResolved, at, other_id=other_id, accepted=accepted, by=by)

    def erase(self, requested_by: str, at: datetime) -> None:
        if self.erased:
            return
        self._trigger(CustomerErased, at, requested_by=requested_by)

    # -- state ---------------------------------------------------------------------------------

    def when_Registered(self, e: CustomerRegistered) -> None:
        self.registered_at = e.occurred_at

    def when_IdentityLinked(self, e: IdentityLinked) -> None:
        self.identities.add((e.kind, e.value))
        self.claims.discard((e.kind, e.value))

    def when_IdentityClaimed(self, e: IdentityClaimed) -> None:
        self.claims.add((e.kind, e.value))

    def when_ProfileUpdated(self, e: ProfileUpdated) -> None:
        self.profile.update(e.attributes)

    def when_InteractionRecorded(self, e: InteractionRecorded) -> None:
        self.interactions.add(e.interaction_id)
        if e.direction == "inbound" and e.kind == "message":
            self.inbound_channels.add(e.channel)
        if e.thread_key and e.case_id:
            self.threads[e.thread_key] = e.case_id

    def when_Merged(self, e: CustomerMerged) -> None:
        self.absorbed.append(e.absorbed_id)

    def when_Absorbed(self, e: CustomerAbsorbed) -> None:
        self.survivor_id = e.survivor_id

    def when_MergeSuggested(self, e: MergeSuggested) -> None:
        self.suggested.add(e.other_id)

    def when_ConsentChanged(self, e: ConsentChanged) -> None:
        self.consents[(e.purpose, e.channel)] = e.granted

    def when_ActivityRecorded(self, e: ActivityRecorded) -> None:
        self.interactions.add(e.interaction_id)

    def when_AttributesSet(self, e: CustomerAttributesSet) -> None:
        for key, value in e.values.items():
            if value is None:
                self.attributes.pop(key, None)
            else:
                self.attributes[key] = value

    def when_MergeSuggestionResolved(self, e: MergeSuggestionResolved) -> None:
        self.suggestions_resolved[e.other_id] = e.accepted

    def when_Erased(self, e: CustomerErased) -> None:
        self.erased = True
        self.profile.clear()
        self.claims.clear()
        self.attributes.clear()
