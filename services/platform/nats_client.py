"""How every Switchboard process connects to NATS: `SWITCHBOARD_NATS_URL` and `SWITCHBOARD_NATS_CREDS`.

`SWITCHBOARD_NATS_URL` is one or more server URLs, comma-separated, each as nats-py and the `nats`
CLI take them: `nats://HOST:PORT`, `tls://HOST:PORT` (TLS with the system's CA store), with
credentials in the URL (`nats://USER:PASSWORD@HOST:PORT`, `nats://TOKEN@HOST:PORT`, percent-encoded
where needed). Credentials stay in the URL handed to nats-py; only what is printed or logged goes
through `redact_nats_url`.

`SWITCHBOARD_NATS_CREDS` is the path of a credentials file: a `.creds` file (user JWT and nkey
seed, as `nsc generate creds` writes for a server in operator mode) or a bare nkey seed file (`SU…`,
for a server whose `authorization { users = [{nkey: U…}] }`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from services.platform.logs import get_logger
from services.platform.settings import Settings

log = get_logger(__name__)


class NatsSettingsError(ValueError):
    """SWITCHBOARD_NATS_URL or SWITCHBOARD_NATS_CREDS cannot be used as given; one line."""


class NatsRefused(NatsSettingsError):
    """The NATS server refused the credentials; retrying would not help. One line, no secret."""


def nats_servers(url: str | None) -> list[str]:
    servers = [s.strip() for s in (url or "").split(",") if s.strip()]
    if not servers:
        raise NatsSettingsError("no NATS: set SWITCHBOARD_NATS_URL or run `switchboard up`")
    return servers


def redact_nats_url(url: str | None) -> str:
    """The URL(s) with passwords and tokens replaced by `***`: safe to print and log."""
    return ",".join(_redact_one(s) for s in (url or "").split(","))


def _redact_one(server: str) -> str:
    match = re.match(r"^(\s*(?:[\w+.-]+://)?)([^@/?#]*)@(.*)$", server)
    if not match:
        return server
    scheme, userinfo, rest = match.groups()
    user, sep, _ = userinfo.partition(":")
    return f"{scheme}{user}:***@{rest}" if sep else f"{scheme}***@{rest}"


def credentials_options(creds_path: str | None) -> dict[str, Any]:
    """nats-py keyword arguments for SWITCHBOARD_NATS_CREDS (none when it is unset)."""
    if not creds_path:
        return {}
    path = Path(creds_path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise NatsSettingsError(f"SWITCHBOARD_NATS_CREDS: cannot read {path}: {exc.strerror or exc}") from None
    if "BEGIN NATS USER JWT" in text and "BEGIN USER NKEY SEED" in text:
        return {"user_credentials": str(path)}
    if re.fullmatch(r"\s*SU[A-Z2-7]{56}\s*", text):
        return {"nkeys_seed": str(path)}
    # nats-py would loop forever looking for a JWT that is not there: say what is wrong instead.
    raise NatsSettingsError(
        f"SWITCHBOARD_NATS_CREDS: {path} is neither a NATS .creds file (user JWT and "
        "nkey seed) nor an nkey user seed (SU…)"
    )


def url_credentials(servers: list[str]) -> tuple[list[str], dict[str, str]]:
    """Moves credentials from the URLs into nats-py's `user`/`password` or `token` options.

    nats-py reads `user:password@` from a URL without percent-decoding it, so a password with `@`,
    `:` or `/` (written %40, %3A, %2F as URLs require) would be sent still encoded. Decoded and
    given as options, they are also used for servers the cluster announces later. Servers with
    different credentials each keep their own in the URL (nats-py's per-server behaviour).
    """
    found: set[tuple[str, str | None]] = set()
    stripped = []
    for server in servers:
        parts = urlsplit(server if "://" in server else "nats://" + server)
        if "@" not in parts.netloc:
            stripped.append(server)
            continue
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, sep, password = userinfo.partition(":")
        found.add((unquote(user), unquote(password) if sep else None))
        stripped.append(urlunsplit(parts._replace(netloc=hostport)))
    if len(found) != 1:
        return servers, {}
    user, password = found.pop()
    return stripped, ({"user": user, "password": password} if password is not None else {"token": user})


def connect_options(settings: Settings) -> dict[str, Any]:
    """`servers` and credentials for `nats.connect`, the same for every role and verb."""
    servers, auth = url_credentials(nats_servers(settings.nats_url))
    return {"servers": servers, **auth, **credentials_options(getattr(settings, "nats_creds", None))}


async def connect(settings: Settings, **options: Any):
    """A nats-py connection with Switchboard's servers and credentials; `options` add to or override.

    A server that refuses the credentials while connecting is NatsRefused at once (nats-py would
    otherwise retry a wrong password for as long as it retries an unreachable server).
    """
    import asyncio  # noqa: PLC0415

    import nats  # noqa: PLC0415

    merged = {**connect_options(settings), **options}
    forward = merged.pop("error_cb", None)
    refused: asyncio.Future = asyncio.get_running_loop().create_future()

    async def error_cb(exc: Exception) -> None:
        if "authorization violation" in str(exc).lower() and not refused.done():
            refused.set_result(str(exc))
        if forward is not None:
            await forward(exc)
        elif not refused.done():  # nats-py's default: log it (with no URL, so no secret)
            log.warning("nats_error", error=str(exc) or type(exc).__name__)

    connecting = asyncio.ensure_future(nats.connect(**merged, error_cb=error_cb))
    await asyncio.wait({connecting, refused}, return_when=asyncio.FIRST_COMPLETED)
    if connecting.done():
        return connecting.result()
    connecting.cancel()
    try:
        await connecting
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 — we report the refusal instead
        pass
    servers = ", ".join(redact_nats_url(s) for s in merged["servers"])
    raise NatsRefused(
        f"NATS at {servers} refused the credentials (Authorization Violation): check the user and "
        "password in SWITCHBOARD_NATS_URL or SWITCHBOARD_NATS_CREDS"
    )
