"""The access request: everything held about a customer, as one JSON document."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from uuid import UUID

import msgspec
import psycopg
from psycopg.rows import dict_row

from services.core.batch_sql import alias_survivor_of
from services.gdpr.scope import CustomerNotFound
from services.platform.eventstore.store import EventStore
from services.replay import replay_events


def export_customer(store: EventStore, database_url: str, customer_id: UUID) -> dict:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        survivor = alias_survivor_of(conn, customer_id)
        profile = conn.execute("SELECT * FROM proj_customers WHERE id = %s", (survivor,)).fetchone()
        if profile is None and not store.load(survivor):
            raise CustomerNotFound(f"customer {customer_id} not found")
        identities = conn.execute(
            "SELECT kind, value, verified FROM proj_identities WHERE customer_id = %s", (survivor,)
        ).fetchall()
        timeline = conn.execute(
            "SELECT interaction_id, occurred_at, channel, direction, kind, text, case_id, attachments FROM proj_timeline "
            "WHERE customer_id = %s ORDER BY occurred_at",
            (survivor,),
        ).fetchall()
        cases = conn.execute(
            "SELECT * FROM proj_cases WHERE customer_id = %s ORDER BY opened_at", (survivor,)
        ).fetchall()
        notes = conn.execute(
            "SELECT n.* FROM proj_case_notes n JOIN proj_cases c ON c.id = n.case_id "
            "WHERE c.customer_id = %s ORDER BY n.created_at",
            (survivor,),
        ).fetchall()
    buffer = io.BytesIO()
    replay_events(store, buffer, customer=survivor, conninfo=database_url)
    events = [msgspec.json.decode(line) for line in buffer.getvalue().splitlines() if line]
    return msgspec.to_builtins(
        {
            "customer_id": str(survivor),
            "requested_id": str(customer_id),
            "exported_at": datetime.now(UTC),
            "erased": bool(profile and profile.get("erased")),
            "profile": profile,
            "identities": identities,
            "timeline": timeline,
            "cases": cases,
            "notes": notes,
            "events": events,
        }
    )
