"""`SWITCHBOARD_DATABASE_URL`, read once, handed to every PostgreSQL client in the process.

Any libpq connection string works: a URI (`postgresql://` or `postgres://`, percent-encoded parts,
query parameters such as `sslmode`, `host=/socket/dir`, `options=-c search_path=...`,
`target_session_attrs`, several hosts as `host1:5432,host2:5433`) or the key=value form
(`host=db1,db2 port=5432 dbname=switchboard`). libpq itself parses it (through
`psycopg.conninfo`), so Switchboard accepts exactly what `psql` accepts, and what is not in the
string comes from the usual `PG*` environment variables, as with `psql`.

Every consumer gets the same parameters: psycopg connections and pools take the normalised
conninfo string; eventsourcing's `PostgresDatastore`, which takes host, port, user, password and
dbname as separate arguments only, gets a subclass whose pool connects with the whole conninfo.

A database that cannot be reached becomes `DatabaseUnavailable`, whose message is one line naming
the host(s) and libpq's reason, never the password.
"""

from __future__ import annotations

import re
import select
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from eventsourcing.postgres import ConnectionPool as EventsourcingPool
from eventsourcing.postgres import PostgresDatastore
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

# Used when the string sets no connect_timeout: an unroutable host fails in seconds, not minutes.
DEFAULT_CONNECT_TIMEOUT = 10
_DEFAULT_PORT = "5432"
# Used when the string sets none of them: a server host that vanished (power, network) is noticed in
# about 30 s instead of the kernel's ~15 minutes of retransmissions, so its connections fail and the
# pools reconnect. (A server that is alive but stalled, say SIGSTOPped, still acknowledges every
# packet: no socket option sees that; `/ready` bounds its probe itself, see services.api.readiness.)
DEFAULT_LIVENESS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",  # ms: unacknowledged data for this long drops the connection
}


class DatabaseUrlError(ValueError):
    """SWITCHBOARD_DATABASE_URL is not a libpq connection string."""


class DatabaseUnavailable(RuntimeError):
    """The database refused or could not be reached; the message is one line for an operator."""


@dataclass(frozen=True)
class Database:
    """A parsed libpq connection string: `params` are libpq's keywords, exactly as libpq read them."""

    params: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> Database:
        text = (url or "").strip()
        if not text:
            raise DatabaseUrlError("SWITCHBOARD_DATABASE_URL is empty")
        # SQLAlchemy-style driver suffixes (postgresql+psycopg://) are not libpq's, but mean the same.
        text = re.sub(r"^(postgres(?:ql)?)\+\w+://", r"\1://", text)
        try:
            params = conninfo_to_dict(text)
        except psycopg.ProgrammingError as exc:
            reason = _hide_fragments(str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid")
            raise DatabaseUrlError(
                f"SWITCHBOARD_DATABASE_URL is not a libpq URI or key=value string: {reason}"
            ) from None
        return cls({k: str(v) for k, v in params.items() if v is not None})

    # -- what the clients take ---------------------------------------------------------------------

    @property
    def conninfo(self) -> str:
        """The normalised key=value string for psycopg (a connect_timeout added when none was set)."""
        params = dict(self.params)
        params.setdefault("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT))
        for key, value in DEFAULT_LIVENESS.items():  # what the string says wins
            params.setdefault(key, value)
        return make_conninfo("", **params)

    @property
    def dbname(self) -> str | None:
        return self.params.get("dbname")

    def with_dbname(self, dbname: str) -> Database:
        """The same server and options, another database (tests make one per test)."""
        return Database({**self.params, "dbname": dbname})

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        """A psycopg connection; DatabaseUnavailable (one line) when the server refuses or is away."""
        try:
            return psycopg.connect(self.conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(self.describe_failure(exc)) from None

    def check(self) -> str:
        """Connects once; returns the schema unqualified tables go to (the first of the search_path
        that exists: `options=-c search_path=...`, or the role's or database's default).
        DatabaseUnavailable, with the reason, when it cannot connect."""
        with self.connect(autocommit=True) as conn:
            row = conn.execute("SELECT current_schema()").fetchone()
        return (row[0] if row else None) or "public"

    def datastore(self, pool_size: int = 8, **options: Any) -> PostgresDatastore:
        return ConninfoDatastore(self, pool_size=pool_size, **options)

    # -- what people read --------------------------------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        """Where libpq will try, in order: `host:port`, or `socket DIR:port` for a Unix socket."""
        hosts = _split(self.params.get("host")) or _split(self.params.get("hostaddr"))
        ports = _split(self.params.get("port")) or [_DEFAULT_PORT]
        if not hosts:
            return [f"the default host (PGHOST or the local socket), port {ports[0]}"]
        if len(ports) == 1:
            ports = ports * len(hosts)
        out = []
        for host, port in zip(hosts, ports + [_DEFAULT_PORT] * (len(hosts) - len(ports)), strict=False):
            port = port or _DEFAULT_PORT
            if host.startswith(("/", "@")):
                out.append(f"socket {host}:{port}")
            else:
                out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return out

    def redacted(self) -> str:
        """The string as key=value with the password hidden: safe for logs and messages."""
        params = dict(self.params)
        if "password" in params:
            params["password"] = "***"
        return make_conninfo("", **params)

    def describe_failure(self, exc: BaseException) -> str:
        where = ", ".join(self.hosts)
        who = []
        if self.params.get("dbname"):
            who.append(f"database {self.params['dbname']}")
        if self.params.get("user"):
            who.append(f"user {self.params['user']}")
        suffix = f" ({', '.join(who)})" if who else ""
        reason = _reason(str(exc))
        password = self.params.get("password")
        if password:
            reason = reason.replace(password, "***")
        return f"cannot connect to PostgreSQL at {where}{suffix}: {reason}"


class _CappedBackoff(AttemptWithBackoff):
    """psycopg_pool's reconnection backoff, doubling from 1 s but never waiting more than `MAX_DELAY`.

    Unbounded, the doubling waited 32 s, then 64 s, ... between attempts: after an 80 s outage the
    pools reconnected up to a minute after PostgreSQL was back, and the read side stood still meanwhile
    (issue 13: "~45 s to catch up"). An attempt every two seconds per missing connection costs nothing.
    """

    MAX_DELAY = 2.0

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.MAX_DELAY)


# The pools keep trying for as long as the database is away (psycopg_pool's default gives a missing
# connection up after 5 minutes, and the pool shrinks for good).
RECONNECT_FOR_EVER = float("inf")


class PromptPool(EventsourcingPool):
    """eventsourcing's pool (the event store's), reconnecting with a capped backoff, for ever."""

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(attempt or _CappedBackoff(timeout=self.reconnect_timeout), growing)


class PromptAsyncPool(AsyncConnectionPool):
    """The HTTP services' async pool, reconnecting the same way as `PromptPool`."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("reconnect_timeout", RECONNECT_FOR_EVER)
        super().__init__(*args, **kwargs)

    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        await super()._add_connection(attempt or _CappedBackoff(timeout=self.reconnect_timeout), growing)


def check_unless_quiet(conn: psycopg.Connection) -> None:
    """The pools' check before lending a connection, with a round trip only when the connection has
    something to say.

    The usual check (`pre_ping`: an empty query) cost a round trip before every transaction of every
    role (issue 13: 15 % of the timeline lane's wall time in a profile at 2,100 interactions/s, on the
    publish → timeline path). A server that stops, restarts or ends the backend sends an error and
    closes the socket, so an idle connection it dropped has something to read: only then is the empty
    query sent, fails, and the pool replaces the connection. A connection with nothing to read is lent
    at once. Had its server died without a word meanwhile (host gone, network cut), the statement that
    uses it fails as it would have a moment after a check, and every caller already treats that as
    the database being away.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)


class ConninfoDatastore(PostgresDatastore):
    """eventsourcing's datastore, connecting with the whole libpq conninfo.

    `PostgresDatastore` builds its pool from five keyword arguments, which loses everything else a
    connection string can say (sslmode, options, several hosts, target_session_attrs, a socket
    directory given as `host=`). The pool it builds is a psycopg pool; we keep it, with its
    configure and check callbacks, and give it the full conninfo instead.

    eventsourcing qualifies its tables with `schema` ("public" by default) while Switchboard's own
    SQL does not: pass the connection's `current_schema()` (what `Database.check` returns), so a
    search_path in the string puts every table in one schema.
    """

    def __init__(self, database: Database, **options: Any):
        params = database.params
        super().__init__(
            dbname=params.get("dbname", ""),
            host=params.get("host", ""),
            port=params.get("port", ""),
            user=params.get("user", ""),
            password=params.get("password", ""),
            **options,
        )
        self.database = database
        self.pool.conninfo = database.conninfo
        self.pool.kwargs = {"row_factory": dict_row}
        # Not open yet, and PromptPool adds no state: only how it reconnects after an outage changes.
        self.pool.__class__ = PromptPool
        self.pool.reconnect_timeout = RECONNECT_FOR_EVER
        if self.pool._check is not None:  # pre_ping
            self.pool._check = check_unless_quiet

    @property
    def conninfo(self) -> str:
        return self.database.conninfo


def parse_database_url(url: str) -> Database:
    return Database.parse(url)


def redact_database_url(url: str) -> str:
    """The URL as given, password replaced by `***` (URI or key=value); for display and logs."""
    text = (url or "").strip()
    if "://" in text:
        text = re.sub(r"^([\w+.-]+://)([^@/?#]*?):([^@/?#]*)@", r"\1\2:***@", text)
        return re.sub(r"([?&]password=)[^&#]*", r"\1***", text)
    try:
        return Database.parse(text).redacted()
    except DatabaseUrlError:
        return "(unparsable connection string)"


def with_database(url: str, dbname: str) -> str:
    """The same connection string naming another database, in the form it was given."""
    text = (url or "").strip()
    if "://" in text:
        parts = urlsplit(text)
        if "dbname=" not in parts.query:  # a dbname in the query would win over the path
            return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))
    return make_conninfo("", **Database.parse(text).with_dbname(dbname).params)


def _hide_fragments(message: str) -> str:
    """libpq quotes the offending fragment, which may be a piece of a password: keep only keywords."""
    keywords = {d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults()}

    def hide(match: re.Match) -> str:
        fragment = match.group(1)
        return match.group(0) if fragment in keywords or not re.search(r"\w", fragment) else '"…"'

    return re.sub(r'"([^"]*)"', hide, message)


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in value.split(",")] if value else []


def _reason(message: str) -> str:
    """libpq's reason, on one line, without its per-host preamble and hints."""
    reasons: list[str] = []
    for raw in message.splitlines():
        line = raw.strip().lstrip("-").strip()
        if not line or line.startswith(("Is the server running", "Multiple connection attempts failed")):
            continue
        # "connection failed: connection to server at "h" (1.2.3.4), port 5 failed: Connection refused"
        line = re.sub(r"^host: '[^']*', port: '[^']*'(, hostaddr: '[^']*')?: ", "", line)
        line = re.sub(r"^(connection failed|connection is bad): ", "", line)
        line = re.sub(r"^connection to server (at|on) .*? failed: ", "", line)
        line = re.sub(r"^FATAL:\s+", "", line)
        if line and line not in reasons:
            reasons.append(line)
    return "; ".join(reasons) or "connection failed"
