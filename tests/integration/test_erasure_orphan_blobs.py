"""Attachments nobody's timeline refers to are swept once older than the NATS retention.

The gateway stores an attachment's bytes before it publishes the interaction; an interaction never
recorded leaves them behind with no customer to erase them with. Once older than the streams'
retention, nothing can refer to them any more (no interaction, no dead letter is kept that long).
Time is passed in, so "older" needs no waiting.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import nats
import pytest

from channels.blobs import BlobStore, blob_ref
from events.interactions import Attachment, Identity, Interaction
from projections.runner import ProjectionRunner
from services.core.processor import CoreProcessor
from services.gdpr.blobs import sweep_orphan_blobs

pytestmark = pytest.mark.integration

RETENTION = 3600


async def test_old_unreferenced_attachments_are_swept_and_nothing_else(store, settings, names) -> None:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    try:
        blobs = await BlobStore.open(js, names)
        kept = await blobs.put(b"an invoice on a customer's timeline " * 10)
        orphan = await blobs.put(b"the photo of an interaction that was never recorded " * 10)
        interaction = Interaction(
            id=uuid.uuid4(),
            channel="sms",
            direction="inbound",
            occurred_at=datetime.now(UTC),
            identities=[Identity("phone", "+447700900555")],
            text="see attached",
            provider_message_id=uuid.uuid4().hex,
            attachments=[
                Attachment(
                    name="invoice.pdf", content_type="application/pdf", size=360, sha256=kept, ref=blob_ref(kept)
                )
            ],
        )
        CoreProcessor(store).process([(interaction, 1)])
        ProjectionRunner(store).catch_up()

        # Younger than the retention: an interaction naming it may still be on its way.
        assert await sweep_orphan_blobs(js, names, store, RETENTION) == 0
        assert await blobs.get(orphan) is not None

        later = datetime.now(UTC) + timedelta(seconds=RETENTION + 60)
        assert await sweep_orphan_blobs(js, names, store, RETENTION, now=later) == 1
        assert await blobs.get(orphan) is None
        assert await blobs.get(kept) is not None  # on a timeline: kept however old
        assert await sweep_orphan_blobs(js, names, store, RETENTION, now=later) == 0  # already gone
    finally:
        await nc.close()
