"""One read model of the sums per customer and currency (`proj_customer_value`): the profile's
`amounts` and the metrics' lifetime value read the same rows, a merge adds the absorbed customer's
to the survivor's, and an erased customer's profile shows none while the figures of the past stay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from events.interactions import Identity
from projections.runner import ProjectionRunner
from services.api import metrics, queries
from services.core.commands import erase_customer
from services.core.processor import CoreProcessor
from services.domain.activities import as_interaction

pytestmark = pytest.mark.integration


def _order(email: str, reference: str, amount: str, currency: str):
    at = datetime.now(UTC)
    return as_interaction(Identity("email", email), "order.placed", reference, at, "shop", Decimal(amount), currency)


async def _profile(database_url: str, customer_id: uuid.UUID) -> dict:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        profile = await queries.customer_profile(conn, customer_id)
        values = await metrics.lifetime_values(conn)
    assert profile is not None
    return {"amounts": profile["activities"]["amounts"], "lifetime": [(v.currency, v.total) for v in values]}


async def test_profile_amounts_and_lifetime_value_read_one_model(store, database_url) -> None:
    processor = CoreProcessor(store)
    processor.process([(_order("ana@example.com", "SO-1", "10.50", "eur"), 1)])
    processor.process([(_order("ana@example.com", "SO-2", "4.50", "EUR"), 2)])
    processor.process([(_order("ana@example.com", "SO-3", "100", "USD"), 3)])
    processor.process([(_order("bo@example.com", "SO-4", "1", "EUR"), 4)])
    ProjectionRunner(store).catch_up()
    with psycopg.connect(database_url) as conn:
        ana = conn.execute(
            "SELECT customer_id FROM proj_customer_value GROUP BY customer_id HAVING count(*) = 2"
        ).fetchone()[0]
    seen = await _profile(database_url, ana)
    assert seen["amounts"] == {"EUR": "15.00", "USD": "100"}  # one currency however the shop spelt it
    assert seen["lifetime"] == [("USD", Decimal("100")), ("EUR", Decimal("16.00"))]

    erase_customer(store, ana, "dpo@example.com", datetime.now(UTC))
    ProjectionRunner(store).catch_up()
    erased = await _profile(database_url, ana)
    assert erased["amounts"] == {}  # nothing shown of an erased customer
    assert erased["lifetime"] == seen["lifetime"]  # the figures of the past stay
