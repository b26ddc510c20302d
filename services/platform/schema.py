"""The platform's DDL in one place: every `sb_*` table, index and upgrade step, and `bring_up_to_date`.

`bring_up_to_date(store)` is the one function that makes a database what this release expects. The
composition root (`services.bootstrap.Switchboard.create_schema`) calls it before any role starts, and
every CLI verb goes through there too. It is idempotent and safe from many processes starting at
once: a transaction-level advisory lock serialises them, every statement is `IF NOT EXISTS`, and the
upgrade steps look before they lock (cores may be writing while another process starts).

In order:

1. The event store's tables, through eventsourcing's recorder (`ChainedRecorder.create_table`): the
   library owns `sb_tracking` and decides how its statements run; the statements for `sb_events` and
   its head `sb_events_head` are ours (`event_store_ddl`, which the recorder installs in its list).
2. The platform's own tables (`PLATFORM_TABLES`): per-customer keys, the core's identity index,
   aliases, exactly-once guard and sent messages, the migration ledger, quarantine, API tokens and
   SSE tickets, agents' credentials, sessions and failed sign-ins, erasures, the routing role's state.
3. The upgrade steps (`UPGRADES`) for databases an older release created, in order. A step that is
   a data change runs once per database: its name goes into the ledger `sb_schema_migrations` in
   the same transaction.

What is not here: the read models' tables (`proj_*`). Each projection keeps its DDL with its code
(`Projection.schema`), because `projections rebuild` creates every projection's tables afresh beside
the live ones (schema `sb_rebuild`) from that same DDL and swaps them in: they belong to the
projection, not to the platform. `bring_up_to_date` creates them too when it is handed them
(`read_models`), in their own transaction, so that a fresh database is complete after one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from eventsourcing.postgres import PostgresDatastore
from psycopg import errors as pg_errors
from psycopg.sql import SQL, Composed, Identifier, Literal


# What is used of the event store (services.platform.eventstore, which imports this module for its DDL).
class MasterKey(Protocol):
    def outbound_blind(self, channel: str, provider_message_id: str) -> str: ...


class Recorder(Protocol):
    def create_table(self) -> None: ...


class EventStore(Protocol):
    @property
    def datastore(self) -> PostgresDatastore: ...
    @property
    def recorder(self) -> Recorder: ...
    @property
    def master(self) -> MasterKey: ...


# Serialises schema creation across processes starting together (the value releases always used).
SCHEMA_LOCK_KEY = 5105


# -- the event store (statements the recorder runs) ---------------------------------------------------


def event_store_ddl(schema: str, events_table: str) -> tuple[Composed, list[Composed]]:
    """The chained event table (replacing the library's), then what the recorder adds after the library's.

    The event table is the library's plus `chain` (the tamper-evident link) and `recorded_at`; the
    head (`<events>_head`, one row) records where the chain ends, so deleting the newest rows is
    noticed too.
    """
    table = Identifier(schema), Identifier(events_table)
    events = SQL(
        "CREATE TABLE IF NOT EXISTS {0}.{1} ("
        "originator_id uuid NOT NULL, "
        "originator_version bigint NOT NULL, "
        "topic text, "
        "state bytea, "
        "notification_id bigserial, "
        "chain bytea NOT NULL, "
        "recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
        "PRIMARY KEY (originator_id, originator_version))"
    ).format(*table)
    recorded_at_index = SQL("CREATE INDEX IF NOT EXISTS {0} ON {1}.{2} (recorded_at)").format(
        Identifier(f"{events_table}_recorded_at_idx"), *table
    )
    head = SQL(
        "CREATE TABLE IF NOT EXISTS {0}.{1} (id int PRIMARY KEY CHECK (id = 1), "
        "position bigint NOT NULL, chain bytea NOT NULL, seal bytea NOT NULL)"
    ).format(Identifier(schema), Identifier(f"{events_table}_head"))
    return events, [recorded_at_index, head]


# -- the platform's tables ---------------------------------------------------------------------------

# Per-customer data keys, wrapped by the master key; erasure destroys a key (services.platform.eventstore.keys).
CUSTOMER_KEYS = """
CREATE TABLE IF NOT EXISTS sb_customer_keys (
    customer_id uuid PRIMARY KEY,
    wrapped bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz
);
"""

# The core's own tables (services.core.batch_sql): the identity index (keyed hashes of verified
# identities → their customer), merge aliases (absorbed → survivor), one `sb_processed` row per
# interaction recorded (the exactly-once guard), the ledger of upgrade steps done, and `sb_outbound`.
CORE = """
CREATE TABLE IF NOT EXISTS sb_identities (
    blind bytea PRIMARY KEY,
    kind text NOT NULL,
    customer_id uuid NOT NULL
);
CREATE INDEX IF NOT EXISTS sb_identities_customer_idx ON sb_identities (customer_id);
CREATE TABLE IF NOT EXISTS sb_customer_aliases (
    absorbed_id uuid PRIMARY KEY,
    survivor_id uuid NOT NULL
);
CREATE TABLE IF NOT EXISTS sb_processed (
    interaction_id uuid PRIMARY KEY,
    stream_seq bigint,
    processed_at timestamptz NOT NULL DEFAULT now(),
    -- Set for delivery statuses and bounces: the case whose reply they report on. They record no
    -- interaction of the customer's, yet their messages in SB_INTERACTIONS name the customer (a
    -- WhatsApp status carries the recipient's number): erasure finds them by it.
    case_id uuid
);
CREATE TABLE IF NOT EXISTS sb_schema_migrations (
    name text PRIMARY KEY,
    done_at timestamptz NOT NULL DEFAULT now()
);
-- The messages we sent, by the provider's id, so that a status callback finds its reply. The id
-- itself is personal (a wamid encodes the recipient's number), so `provider_message_id` holds its
-- keyed hash (`outbound_blind`, 64 hex digits), like the identity index.
CREATE TABLE IF NOT EXISTS sb_outbound (
    channel text NOT NULL,
    provider_message_id text NOT NULL,
    case_id uuid NOT NULL,
    reply_id uuid,
    PRIMARY KEY (channel, provider_message_id)
);
-- The latest snapshot of a customer with a long history (services.core.snapshots): its state at
-- `version`, sealed with the customer's key. A cache of the event log: losing it loses nothing.
CREATE TABLE IF NOT EXISTS sb_snapshots (
    stream_id uuid PRIMARY KEY,
    version integer NOT NULL,
    state bytea NOT NULL
);
"""

# Events a consumer of the log (a projection, the relay) set aside (services.platform.quarantine).
QUARANTINE = """
CREATE TABLE IF NOT EXISTS sb_quarantine (
    consumer text NOT NULL,
    position bigint NOT NULL,
    event_type text NOT NULL,
    event_id uuid,
    reason text NOT NULL,
    attempts integer NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, position)
);
"""

# API bearer tokens (only their SHA-256) and single-use SSE tickets (services.api.auth).
AUTH = """
CREATE TABLE IF NOT EXISTS sb_tokens (
    name text PRIMARY KEY,
    role text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE TABLE IF NOT EXISTS sb_event_tickets (
    ticket_hash bytea PRIMARY KEY,
    token_hash bytea NOT NULL,
    expires_at timestamptz NOT NULL
);
"""

# Agents' sign-in (services.agents): the argon2id hash of each agent's password and what a request
# must know fresh about them (role, disabled), written in the transaction that records the event that
# changes them; sign-in sessions (only the token's SHA-256, with the expiry they were issued with);
# failed sign-ins per keyed hash of the email or client address, for the rate limit.
AGENTS = """
CREATE TABLE IF NOT EXISTS sb_agent_credentials (
    agent_id uuid PRIMARY KEY,
    hash text NOT NULL,
    role text NOT NULL,
    disabled boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS sb_agent_sessions (
    token_hash bytea PRIMARY KEY,
    agent_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    expires_at timestamptz NOT NULL,
    idle_seconds double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS sb_agent_sessions_agent_idx ON sb_agent_sessions (agent_id) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS sb_login_failures (
    key bytea NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sb_login_failures_key_idx ON sb_login_failures (key, failed_at);
"""

# Erasures requested, with what only the keys could tell about the customer in NATS (services.gdpr).
ERASURES = """
CREATE TABLE IF NOT EXISTS sb_erasures (
    customer_id uuid PRIMARY KEY,
    customer_ids uuid[] NOT NULL,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL,
    -- Pointers into NATS that only the keys could tell, kept until the clean-up there is done.
    chat_sessions text[] NOT NULL DEFAULT '{}',
    identity_blinds bytea[] NOT NULL DEFAULT '{}',
    blobs text[] NOT NULL DEFAULT '{}',
    cleaned_at timestamptz
);
"""

# The routing role's own state (services.routing), kept from the log in the follower's transaction:
# agents as routing sees them, queues with their round-robin turn, and every case's queue, status
# and assignee (`version`: the case's last event applied, so routing's own decisions read back later
# change nothing; `waiting`: the case waits for an agent of its routed queue).
ROUTING = """
CREATE TABLE IF NOT EXISTS sb_routing_agents (
    agent_id text PRIMARY KEY,
    rank bigint NOT NULL,
    status text NOT NULL DEFAULT 'offline',
    teams text[] NOT NULL DEFAULT '{}',
    skills text[] NOT NULL DEFAULT '{}',
    capacity integer NOT NULL DEFAULT 0,
    disabled boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS sb_routing_queues (
    name text PRIMARY KEY,
    strategy text NOT NULL,
    team text,
    required_skills text[] NOT NULL DEFAULT '{}',
    last_turn text
);
CREATE TABLE IF NOT EXISTS sb_routing_cases (
    case_id uuid PRIMARY KEY,
    queue text NOT NULL,
    status text NOT NULL,
    assignee text,
    opened_at timestamptz NOT NULL,
    opened_position bigint NOT NULL,
    version bigint NOT NULL,
    waiting boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS sb_routing_cases_assignee_idx ON sb_routing_cases (assignee) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS sb_routing_cases_waiting_idx ON sb_routing_cases (opened_at, opened_position) WHERE waiting;
"""

# The SLA timer's state (services.timer.sla), written in the transaction that stores its position in
# the log: the policies and queues it read, each case's status, queue and priority as the timer last
# saw them, each target's clock (what is left of it in business seconds, due when) and the snoozed
# cases' wake-ups.
TIMER = """
CREATE TABLE IF NOT EXISTS sb_sla_policies (
    name text PRIMARY KEY,
    policy jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS sb_sla_queues (
    queue text PRIMARY KEY,
    policy text
);
CREATE TABLE IF NOT EXISTS sb_sla_cases (
    case_id uuid PRIMARY KEY,
    queue text NOT NULL,
    priority text NOT NULL,
    status text NOT NULL,
    replied boolean NOT NULL DEFAULT false,
    awaiting boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS sb_sla_clocks (
    case_id uuid NOT NULL,
    target text NOT NULL,
    policy text NOT NULL,
    state text NOT NULL,
    due_at timestamptz,
    duration_seconds double precision NOT NULL,
    remaining_seconds double precision NOT NULL,
    running_since timestamptz,
    PRIMARY KEY (case_id, target)
);
CREATE INDEX IF NOT EXISTS sb_sla_clocks_due_idx ON sb_sla_clocks (due_at) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS sb_wakeups (
    case_id uuid PRIMARY KEY,
    due_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sb_wakeups_due_idx ON sb_wakeups (due_at);
"""

# The automation role's state (services.automation), written in the transaction that stores its
# position in the log: the rules as saved (from the log's automation.Configured), each firing of a
# rule for an event (at most once: the primary key), the chain of rules behind each event a firing
# appended (read and dropped when the follower reaches that event: the loop guard) and behind each
# reply a rule asked for (the relay's and the core's events of that reply carry its id), and the webhook
# outbox its sender delivers from (pending, delivered, or dead after its last attempt).
AUTOMATION = """
CREATE TABLE IF NOT EXISTS sb_automation_rules (
    name text PRIMARY KEY,
    version bigint NOT NULL,
    rule jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS sb_automation_firings (
    rule text NOT NULL,
    event_id uuid NOT NULL,
    position bigint NOT NULL,
    case_id uuid,
    fired_at timestamptz NOT NULL,
    PRIMARY KEY (rule, event_id)
);
CREATE TABLE IF NOT EXISTS sb_automation_caused (
    event_id uuid PRIMARY KEY,
    chain text[] NOT NULL
);
CREATE TABLE IF NOT EXISTS sb_automation_replies (
    reply_id uuid PRIMARY KEY,
    chain text[] NOT NULL
);
CREATE TABLE IF NOT EXISTS sb_webhook_outbox (
    delivery_id uuid PRIMARY KEY,
    rule text NOT NULL,
    event_id uuid NOT NULL,
    url text NOT NULL,
    body bytea NOT NULL,
    state text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    next_at timestamptz NOT NULL,
    last_error text,
    created_at timestamptz NOT NULL,
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS sb_webhook_outbox_due_idx ON sb_webhook_outbox (next_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS sb_webhook_outbox_dead_idx ON sb_webhook_outbox (finished_at) WHERE state = 'dead';
"""

PLATFORM_TABLES: tuple[str, ...] = (CUSTOMER_KEYS, CORE, QUARANTINE, AUTH, AGENTS, ERASURES, ROUTING, TIMER, AUTOMATION)
# The outbound ledger (services.relay.ledger): every message handed to a provider, recorded before the
# call and settled after it, so that a crash in between is found out and nothing is sent twice.
OUTBOUND_LEDGER = """
CREATE TABLE IF NOT EXISTS sb_outbound_ledger (
    key text PRIMARY KEY,
    channel text NOT NULL,
    state text NOT NULL CHECK (state IN ('sending', 'sent', 'failed', 'pending')),
    owner uuid,
    started_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    provider_message_id text,
    reason text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""

# The campaigner's own state (services.campaigns.campaigner): which campaigns run (kept in step with
# the campaign events, exactly once with its position) and each one's recipients, done or not yet.
CAMPAIGNS = """
CREATE TABLE IF NOT EXISTS sb_campaign_runs (
    campaign_id uuid PRIMARY KEY,
    status text NOT NULL,
    send_at timestamptz,
    targeted boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS sb_campaign_recipients (
    campaign_id uuid NOT NULL,
    customer_id uuid NOT NULL,
    done boolean NOT NULL DEFAULT false,
    not_before timestamptz,
    PRIMARY KEY (campaign_id, customer_id)
);
-- Every campaign message the provider took (services.campaigns.attribution): `provider_blind` the
-- keyed hash of the provider's message id (as sb_outbound keeps it), so the core can mark what a
-- status callback reported (`delivery`, once: the first decisive word) and the campaigner turn it
-- into a campaign event (`delivery_recorded`); `replied_at` the recipient's first reply in the window.
CREATE TABLE IF NOT EXISTS sb_campaign_messages (
    campaign_id uuid NOT NULL,
    recipient_id uuid NOT NULL,
    channel text NOT NULL,
    provider_blind text,
    sent_at timestamptz NOT NULL,
    delivery text,
    delivery_reason text,
    delivery_recorded boolean NOT NULL DEFAULT false,
    replied_at timestamptz,
    PRIMARY KEY (campaign_id, recipient_id)
);
CREATE INDEX IF NOT EXISTS sb_campaign_messages_provider_idx ON sb_campaign_messages (channel, provider_blind);
CREATE INDEX IF NOT EXISTS sb_campaign_messages_recipient_idx ON sb_campaign_messages (recipient_id, channel, sent_at);
CREATE INDEX IF NOT EXISTS sb_campaign_messages_reported_idx ON sb_campaign_messages (campaign_id)
    WHERE delivery IS NOT NULL AND NOT delivery_recorded;
"""

PLATFORM_TABLES += (OUTBOUND_LEDGER, CAMPAIGNS)


# -- upgrade steps for databases an older release created ------------------------------------------

# A step gets a cursor (rows as dicts) inside the platform's transaction and the master key.
Upgrade = Callable[[Any, MasterKey], None]


def processed_case_id(curs: Any, master: MasterKey) -> None:
    """`sb_processed.case_id` and its partial index (statuses and bounces name the case they report on).

    ALTER TABLE and CREATE INDEX lock the table even when there is nothing to do: look first.
    """
    curs.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'sb_processed' AND column_name = 'case_id'"
    )
    if curs.fetchone() is None:
        curs.execute("ALTER TABLE sb_processed ADD COLUMN IF NOT EXISTS case_id uuid")
    curs.execute("SELECT to_regclass('sb_processed_case_idx') IS NULL AS missing")
    if curs.fetchone()["missing"]:
        curs.execute(
            "CREATE INDEX IF NOT EXISTS sb_processed_case_idx ON sb_processed (case_id) WHERE case_id IS NOT NULL"
        )


def outbound_ids_hashed(curs: Any, master: MasterKey) -> None:
    """Rows written before `sb_outbound` held keyed hashes: hashed now (a side table, not the log).

    Once per database (the ledger says so). A row an older core writes during a rolling upgrade stays
    as it is: status lookups try its clear id too, and erasing the customer deletes it with the rest.
    """
    curs.execute(
        "INSERT INTO sb_schema_migrations (name) VALUES ('sb_outbound: provider ids hashed') ON CONFLICT DO NOTHING"
    )
    if not curs.rowcount:
        return
    curs.execute("SELECT channel, provider_message_id FROM sb_outbound WHERE provider_message_id !~ '^[0-9a-f]{64}$'")
    clear = [(row["channel"], row["provider_message_id"]) for row in curs.fetchall()]
    if not clear:
        return
    curs.execute(
        "INSERT INTO sb_outbound SELECT o.channel, b.blind, o.case_id, o.reply_id FROM sb_outbound o "
        "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS b(channel, clear, blind) "
        "ON o.channel = b.channel AND o.provider_message_id = b.clear ON CONFLICT DO NOTHING",
        ([c for c, _ in clear], [p for _, p in clear], [master.outbound_blind(c, p) for c, p in clear]),
    )
    curs.execute("DELETE FROM sb_outbound WHERE provider_message_id !~ '^[0-9a-f]{64}$'")


def search_functions(curs: Any, master: MasterKey) -> None:
    """Full-text search that ignores accents and case, in any language (services/api/search.py).

    The `unaccent` extension (contrib, shipped with PostgreSQL and the embedded wheel; trusted since
    PostgreSQL 13, so the database's owner may create it), a text search configuration `sb_search`
    (PostgreSQL's language-neutral `simple`, with `unaccent` before it for words with letters beyond
    ASCII), and two functions the read models' GIN expression indexes are built on:
    `sb_search_vector(text)` (punctuation as spaces, so that the parts of an address or a number are
    words of their own) and `sb_search_fold(text)` (unaccented, lower case). Index expressions must
    be IMMUTABLE, and `unaccent()` is only STABLE (its rules file could change): these wrappers
    promise it, with every name schema-qualified so that they mean the same under any search_path.
    Made when missing: look first, since a CREATE here would lock what the indexes depend on.
    """
    curs.execute("SELECT to_regprocedure('sb_search_vector(text)') IS NULL AS missing")
    if not curs.fetchone()["missing"]:
        return
    try:
        curs.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    except (pg_errors.InsufficientPrivilege, pg_errors.UndefinedFile) as exc:
        raise RuntimeError(
            "search needs PostgreSQL's unaccent extension (contrib): have the database's owner or a "
            "superuser run CREATE EXTENSION unaccent in this database, then start again"
        ) from exc
    curs.execute(
        "SELECT n.nspname AS ext, current_schema() AS own FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'unaccent'"
    )
    row = curs.fetchone()
    ext, own = Identifier(row["ext"]), Identifier(row["own"])
    # Lower case for every script: the database's own ctype may be C (the embedded server's is),
    # which lowers ASCII only; a Unicode-aware collation lowers "ΣΟΦΊΑ" and "ЖЕНЯ" too.
    curs.execute(
        "SELECT n.nspname AS schema, c.collname AS name FROM pg_collation c "
        "JOIN pg_namespace n ON n.oid = c.collnamespace "
        "WHERE c.collname = ANY(%s) AND c.collencoding IN (-1, pg_char_to_encoding(current_setting('server_encoding'))) "
        "ORDER BY array_position(%s, c.collname::text) LIMIT 1",
        (list(_UNICODE_COLLATIONS), list(_UNICODE_COLLATIONS)),
    )
    found = curs.fetchone()
    lowered = (
        SQL("pg_catalog.lower($1 COLLATE {0}.{1})").format(Identifier(found["schema"]), Identifier(found["name"]))
        if found
        else SQL("pg_catalog.lower($1)")
    )
    dictionary = Literal(SQL("{0}.unaccent").format(ext).as_string(curs))
    config = Literal(SQL("{0}.sb_search").format(own).as_string(curs))
    curs.execute(SQL("DROP TEXT SEARCH CONFIGURATION IF EXISTS {0}.sb_search").format(own))
    curs.execute(SQL("CREATE TEXT SEARCH CONFIGURATION {0}.sb_search (COPY = pg_catalog.simple)").format(own))
    curs.execute(
        SQL(
            "ALTER TEXT SEARCH CONFIGURATION {0}.sb_search ALTER MAPPING FOR word, hword, hword_part "
            "WITH {1}.unaccent, pg_catalog.simple"
        ).format(own, ext)
    )
    curs.execute(
        SQL(
            "CREATE OR REPLACE FUNCTION {0}.sb_search_fold(text) RETURNS text "
            "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
            "AS $$ SELECT {1}.unaccent({2}::regdictionary, {3}) $$"
        ).format(own, ext, dictionary, lowered)
    )
    curs.execute(
        SQL(
            "CREATE OR REPLACE FUNCTION {0}.sb_search_vector(text) RETURNS tsvector "
            "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
            "AS $$ SELECT pg_catalog.to_tsvector({1}::regconfig, "
            "pg_catalog.regexp_replace({2}, '[[:punct:]]+', ' ', 'g')) $$"
        ).format(own, config, lowered)
    )


# Collations whose lower() follows Unicode, best first: PostgreSQL 17's builtin one, ICU's, glibc's.
_UNICODE_COLLATIONS = ("pg_c_utf8", "und-x-icu", "C.utf8", "C.UTF-8")


def trigram_search(curs: Any, master: MasterKey) -> None:
    """The `pg_trgm` extension (contrib, trusted like `unaccent`): its GIN operator class lets
    `/api/v1/customers?q=` find a part of a name or an address (`LIKE '%...%'` on sb_search_fold)
    through an index (projections/profile.py) instead of reading every customer. Looked for first."""
    curs.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
    if curs.fetchone() is not None:
        return
    try:
        curs.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except (pg_errors.InsufficientPrivilege, pg_errors.UndefinedFile) as exc:
        raise RuntimeError(
            "customer search needs PostgreSQL's pg_trgm extension (contrib): have the database's owner or a "
            "superuser run CREATE EXTENSION pg_trgm in this database, then start again"
        ) from exc


def activity_currency_dropped(curs: Any, master: MasterKey) -> None:
    """`proj_activity_currency` held what `proj_customer_value` holds (an activity's amounts per
    customer and currency); the profile reads the latter now, so the former goes. Looked for first:
    DROP TABLE locks even when there is nothing to drop."""
    curs.execute("SELECT to_regclass('proj_activity_currency') IS NOT NULL AS present")
    if curs.fetchone()["present"]:
        curs.execute("DROP TABLE IF EXISTS proj_activity_currency")


# The channel an API process listens on to forget the principals it cached (services/api/principals.py).
AUTH_CHANGED_CHANNEL = "sb_auth_changed"
# Statement triggers: what ends or changes a token's principal (a revocation, a session ended, an
# agent's role or disabled state) notifies at commit. The per-request `last_used_at` touch names none
# of these columns, so it notifies nothing; only moving `last_used_at` back (making a session idle
# before its time: an administrator's doing) notifies, through a row trigger.
_AUTH_TRIGGERS = {
    "sb_tokens": "UPDATE OF revoked_at, role, token_hash OR DELETE OR TRUNCATE",
    "sb_agent_sessions": "UPDATE OF ended_at, expires_at, idle_seconds, agent_id OR DELETE OR TRUNCATE",
    "sb_agent_credentials": "UPDATE OF role, disabled OR DELETE OR TRUNCATE",
}


def auth_change_notices(curs: Any, master: MasterKey) -> None:
    """Triggers that NOTIFY `AUTH_CHANGED_CHANNEL` when a principal is revoked or changed, so that an
    API process's principal cache is emptied at once (its TTL is only the bound if a notice is lost).
    Looked for first: CREATE TRIGGER locks the table against writes."""
    curs.execute(
        "SELECT count(*) AS n FROM pg_trigger WHERE tgname IN ('sb_auth_changed', 'sb_auth_idled') "
        "AND tgrelid IN (to_regclass('sb_tokens'), to_regclass('sb_agent_sessions'), to_regclass('sb_agent_credentials'))"
    )
    if curs.fetchone()["n"] == len(_AUTH_TRIGGERS) + 1:
        return
    curs.execute(
        "CREATE OR REPLACE FUNCTION sb_auth_changed() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_notify('{AUTH_CHANGED_CHANNEL}', TG_TABLE_NAME); RETURN NULL; END $$"
    )
    for table, when in _AUTH_TRIGGERS.items():
        curs.execute(f"DROP TRIGGER IF EXISTS sb_auth_changed ON {table}")
        curs.execute(
            f"CREATE TRIGGER sb_auth_changed AFTER {when} ON {table} FOR EACH STATEMENT EXECUTE FUNCTION sb_auth_changed()"
        )
    curs.execute("DROP TRIGGER IF EXISTS sb_auth_idled ON sb_agent_sessions")
    curs.execute(
        "CREATE TRIGGER sb_auth_idled AFTER UPDATE OF last_used_at ON sb_agent_sessions FOR EACH ROW "
        "WHEN (NEW.last_used_at < OLD.last_used_at) EXECUTE FUNCTION sb_auth_changed()"
    )


UPGRADES: tuple[Upgrade, ...] = (
    processed_case_id,
    outbound_ids_hashed,
    search_functions,
    trigram_search,
    activity_currency_dropped,
    auth_change_notices,
)


# -- the one function --------------------------------------------------------------------------------


def bring_up_to_date(store: EventStore, read_models: Iterable[str] = ()) -> None:
    """Creates every table this release uses and runs the upgrade steps; does nothing (and locks
    nothing it need not) when the database is already up to date.

    `read_models`: the projections' own DDL (`Projection.schema`), created after the platform's.
    """
    datastore = store.datastore
    with datastore.get_connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        store.recorder.create_table()
        with datastore.transaction(commit=True) as curs:
            for ddl in PLATFORM_TABLES:
                curs.execute(ddl)
            for upgrade in UPGRADES:
                upgrade(curs, store.master)
        read_models = list(read_models)
        if read_models:
            with datastore.transaction(commit=True) as curs:
                for ddl in read_models:
                    curs.execute(ddl)
