"""The published contract: the normalized interaction and every domain event.

Stored names are explicit and stable (`NAME`), never a class path; each event carries a `VERSION`,
and older versions keep loading through the upcasters registered in `events.registry`.
"""

from events.base import DomainEvent, personal
from events.interactions import Attachment, Identity, Interaction
from events.registry import REGISTRY, EventRegistry

__all__ = ["REGISTRY", "Attachment", "DomainEvent", "EventRegistry", "Identity", "Interaction", "personal"]
