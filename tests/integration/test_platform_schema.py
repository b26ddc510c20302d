"""One function brings a database up to date: every table, index and upgrade, and a second run changes nothing."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

from projections.runner import all_projections
from services.bootstrap import Switchboard
from services.platform.schema import bring_up_to_date

pytestmark = pytest.mark.integration

PLATFORM_TABLES = {
    "sb_events",
    "sb_events_head",
    "sb_tracking",
    "sb_customer_keys",
    "sb_identities",
    "sb_customer_aliases",
    "sb_processed",
    "sb_schema_migrations",
    "sb_outbound",
    "sb_snapshots",
    "sb_quarantine",
    "sb_tokens",
    "sb_event_tickets",
    "sb_agent_credentials",
    "sb_agent_sessions",
    "sb_login_failures",
    "sb_erasures",
    "sb_routing_agents",
    "sb_routing_queues",
    "sb_routing_cases",
    # the SLA timer's (services.timer.sla)
    "sb_sla_policies",
    "sb_sla_queues",
    "sb_sla_cases",
    "sb_sla_clocks",
    "sb_wakeups",
    # the automation role's (services.automation)
    "sb_automation_rules",
    "sb_automation_firings",
    "sb_automation_caused",
    "sb_automation_replies",
    "sb_webhook_outbox",
    # the outbound ledger (services.relay.ledger) and the campaigner's (services.campaigns.campaigner)
    "sb_outbound_ledger",
    "sb_campaign_runs",
    "sb_campaign_recipients",
    "sb_campaign_messages",
}
PLATFORM_INDEXES = {
    "sb_identities_customer_idx",
    "sb_processed_case_idx",
    "sb_events_recorded_at_idx",
    "sb_routing_cases_assignee_idx",
    "sb_routing_cases_waiting_idx",
    "sb_agent_sessions_agent_idx",
    "sb_login_failures_key_idx",
    "sb_sla_clocks_due_idx",
    "sb_wakeups_due_idx",
    "sb_webhook_outbox_due_idx",
    "sb_webhook_outbox_dead_idx",
}


def _read_model_tables() -> set[str]:
    """The tables the projections' own DDL names (theirs, not the platform's)."""
    return {name for p in all_projections() for name in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", p.schema)}


def _catalog(database_url: str) -> dict[str, object]:
    """Every table, column (type, default, nullability), index (definition) and ledger row of the database."""
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
        ).fetchall()
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, column_default, is_nullable "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "ORDER BY 1, 2"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = current_schema()::regnamespace "
            "ORDER BY 1, 2"
        ).fetchall()
        ledger = conn.execute("SELECT name, done_at FROM sb_schema_migrations ORDER BY 1").fetchall()
    return {
        "tables": [t for (t,) in tables],
        "columns": columns,
        "indexes": indexes,
        "constraints": constraints,
        "ledger": ledger,
    }


def test_a_fresh_database_gets_every_table_through_the_one_function(settings, database_url) -> None:
    sb = Switchboard(settings)
    store = sb.open_store()
    try:
        assert _catalog_tables(database_url) == set()
        bring_up_to_date(store, read_models=[p.schema for p in all_projections()])
        catalog = _catalog(database_url)
        assert set(catalog["tables"]) == PLATFORM_TABLES | _read_model_tables()
        assert PLATFORM_INDEXES <= {name for name, _ in catalog["indexes"]}
        # A fresh database needs no upgrade, yet the ledger says each data step is done (never run later).
        assert [name for name, _ in catalog["ledger"]] == ["sb_outbound: provider ids hashed"]
        # The composition root calls exactly this: it finds nothing left to do.
        sb.create_schema()
        assert _catalog(database_url) == catalog
    finally:
        store.datastore.close()


def test_running_it_again_changes_nothing(store, database_url) -> None:
    before = _catalog(database_url)
    assert {"sb_erasures", "sb_tokens", "sb_quarantine"} <= set(before["tables"])
    bring_up_to_date(store, read_models=[p.schema for p in all_projections()])
    bring_up_to_date(store)
    assert _catalog(database_url) == before


def _catalog_tables(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        return {
            t
            for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchall()
        }


def test_an_older_databases_duplicate_read_model_is_dropped(store, database_url) -> None:
    """`proj_activity_currency` (an older release's copy of `proj_customer_value`) goes, rows and all."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE proj_activity_currency (customer_id uuid NOT NULL, currency text NOT NULL, "
            "amount_sum numeric NOT NULL, PRIMARY KEY (customer_id, currency))"
        )
        conn.execute("INSERT INTO proj_activity_currency VALUES (gen_random_uuid(), 'EUR', 1)")
    bring_up_to_date(store, read_models=[p.schema for p in all_projections()])
    after = _catalog(database_url)
    assert "proj_activity_currency" not in after["tables"]
    assert "proj_customer_value" in after["tables"]
    bring_up_to_date(store, read_models=[p.schema for p in all_projections()])
    assert _catalog(database_url) == after


def test_an_older_timeline_gets_its_words_stored_and_loses_the_expression_index(store, database_url) -> None:
    """A timeline made before `search_vector` (the GIN index on the expression instead): the column
    comes, filled for the rows already there, and the index that computed the same words again goes."""
    item = uuid.uuid4()
    bring_up_to_date(store, read_models=[p.schema for p in all_projections()])
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE proj_timeline DROP COLUMN search_vector")
        conn.execute("CREATE INDEX proj_timeline_search_idx ON proj_timeline USING gin (sb_search_vector(text))")
        conn.execute(
            "INSERT INTO proj_timeline (interaction_id, customer_id, origin_customer_id, position, occurred_at, "
            "channel, direction, kind, text) VALUES (%s, %s, %s, 1, now(), 'sms', 'inbound', 'message', "
            "'¿Dónde está mi PEDIDO?')",
            (item, uuid.uuid4(), uuid.uuid4()),
        )
    bring_up_to_date(store, read_models=[p.schema for p in all_projections()])
    after = _catalog(database_url)
    indexes = {name for name, _ in after["indexes"]}
    assert "proj_timeline_search_idx" not in indexes
    assert {"proj_timeline_words_idx", "proj_timeline_newest_idx"} <= indexes
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            "SELECT interaction_id FROM proj_timeline WHERE search_vector @@ 'donde:* & pedido:*'::tsquery"
        ).fetchall()
        assert found == [(item,)]
    bring_up_to_date(store, read_models=[p.schema for p in all_projections()])
    assert _catalog(database_url) == after
