"""Which case a message joins: the open case of its conversation, or a new one.

A conversation is named by its thread key (an email thread's root, a chat session, a number pair);
a channel without one has a single conversation per customer. A message joins the case its
conversation last had, unless that case is resolved: then it opens a new case (a resolved case is
reopened by an agent, never by the customer writing again). Machine-made mail (an auto-reply, a
bounce) is recorded on the timeline under the case it belongs to, if any, and never opens a case.
A score (`csat.parse_score`) sent on the channel of a resolved case whose satisfaction survey is
open answers that survey: it is recorded on the timeline under that case and opens none.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from uuid import UUID

from events.interactions import MACHINE_KINDS, Interaction
from services.domain import consent
from services.domain.case import Case
from services.domain.csat import parse_score
from services.domain.customer import Customer

_CASE_NS = uuid.UUID("9a6f1d2c-4e3b-4c5a-8d7e-1f2a3b4c5d6e")


def new_case_id(interaction_id: UUID) -> UUID:
    """The id of the case an interaction opens: derived from it, so a retry opens the same case."""
    return uuid.uuid5(_CASE_NS, str(interaction_id))


def thread_key_of(customer: Customer, interaction: Interaction) -> str:
    """The conversation this message belongs to; one per channel and customer when the channel names none."""
    return interaction.thread_key or f"{interaction.channel}:{customer.id}"


def known_case(customer: Customer, interaction: Interaction, thread_key: str) -> UUID | None:
    """The case this customer's conversation last had: by its thread key, else by any earlier message
    id of the thread the channel lists (`meta["thread_ids"]`, an email's References)."""
    found = customer.threads.get(thread_key)
    if found is not None:
        return found
    for key in interaction.meta.get("thread_ids", "").split():
        found = customer.threads.get(key)
        if found is not None:
            return found
    return None


def opens_cases(interaction: Interaction) -> bool:
    """Machines answering machines are recorded, never a case of their own (nor a message of one);
    nor is a consent keyword ("STOP"): it changes consent, nobody needs to answer it."""
    return interaction.kind not in MACHINE_KINDS and consent.keyword_of(interaction) is None


def joins(case: Case) -> bool:
    """Whether a new message of the conversation joins this case rather than opening another."""
    return case.status != "resolved"


def survey_answer(case: Case, interaction: Interaction) -> int | None:
    """The score this message gives the case's open survey, or None if it is no such answer."""
    if interaction.direction != "inbound" or interaction.channel != case.channel:
        return None
    if case.status != "resolved" or not case.survey_open(interaction.occurred_at):
        return None
    return parse_score(interaction.text)


@dataclass(frozen=True)
class CaseChoice:
    case_id: UUID | None  # the case the message is recorded under (None: machine mail of no case)
    opened: Case | None = None  # the case it opened, if it opened one


def case_for(customer: Customer, interaction: Interaction, thread_key: str, known: Case | None) -> CaseChoice:
    """Adds the message to the case it joins, or opens one, and says which.

    `known` is the case `known_case` named, loaded and current (None if it named none); machine
    mail never needs it loaded (`opens_cases`).
    """
    known_id = known_case(customer, interaction, thread_key)
    if not opens_cases(interaction):
        return CaseChoice(known_id)
    at = interaction.occurred_at
    if known is not None and joins(known):
        known.add_message(interaction.id, interaction.direction, interaction.channel, at)
        return CaseChoice(known.id)
    if known is not None and (score := survey_answer(known, interaction)) is not None:
        known.answer_survey(score, "reply", at)  # a second answer records nothing more
        return CaseChoice(known.id)
    case_id = new_case_id(interaction.id)
    if interaction.direction == "inbound":
        case = Case.open(case_id, customer.id, interaction.channel, thread_key, at, interaction_id=interaction.id)
    else:  # we wrote first (an agent on the provider's own console): the case starts with our message
        case = Case.open(case_id, customer.id, interaction.channel, thread_key, at)
        case.add_message(interaction.id, interaction.direction, interaction.channel, at)
    return CaseChoice(case.id, opened=case)
