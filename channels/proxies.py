"""Where a request came from and which URL it asked for, believing proxies only when we trust them.

`X-Forwarded-For`, `-Proto` and `-Host` are written by whoever sends the request. Behind a reverse
proxy they carry what the proxy saw; from anyone else they are whatever the sender wants us to
think. So they count only when the TCP peer is in `SWITCHBOARD_TRUSTED_PROXIES` (IPs or CIDRs).
And where the operator told us the public URL (`SWITCHBOARD_PUBLIC_URL`), that is the URL, whatever
any header says: a provider's signature over "the URL it requested" is checked against it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def _parse(entries: tuple[str, ...]) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        entry = entry.strip()
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"SWITCHBOARD_TRUSTED_PROXIES: {entry!r} is not an IP address or network") from None
    return tuple(networks)


def trusted_networks(setting: str | Iterable[str] | None) -> tuple[Network, ...]:
    """The setting as networks: a comma-separated string or a list (from switchboard.toml).
    A malformed entry raises ValueError: a typo must not silently trust nobody, or everybody."""
    if not setting:
        return ()
    entries = setting.split(",") if isinstance(setting, str) else list(setting)
    return _parse(tuple(entries))


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: str | None, networks: tuple[Network, ...]) -> bool:
    if not networks:  # no proxy configured (the usual case): nothing to parse
        return False
    ip = _address(address) if address else None
    return ip is not None and any(ip in network for network in networks)


def peer(scope: Mapping[str, Any]) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def peer_is_trusted(scope: Mapping[str, Any], networks: tuple[Network, ...]) -> bool:
    return _trusted(peer(scope), networks)


def _first(value: str | None) -> str:
    """The client-side value of a proxy header: proxies append theirs after a comma."""
    return (value or "").split(",", 1)[0].strip()


def client_ip(scope: Mapping[str, Any], headers: Mapping[str, str], networks: tuple[Network, ...]) -> str | None:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the right-most
    `X-Forwarded-For` entry that is not itself a trusted proxy (entries further left were written
    by the client and prove nothing)."""
    address = peer(scope)
    if not _trusted(address, networks):
        return address
    hops = [h.strip() for h in (headers.get("x-forwarded-for") or "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            ip = _address(hop)
            return str(ip) if ip is not None else address
    return str(_address(hops[0])) if hops and _address(hops[0]) else address


def request_url(
    scope: Mapping[str, Any], headers: Mapping[str, str], *, public_url: str | None, networks: tuple[Network, ...]
) -> str:
    """The full URL the client requested, path and query raw, as it signed them.

    With a public URL configured: that URL (which may carry a path prefix) + path + query. Without:
    scheme and host from `X-Forwarded-Proto`/`-Host` when the peer is a trusted proxy, else from
    the connection and its `Host` header.
    """
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
    tail = raw_path.decode("latin-1")
    query = scope.get("query_string") or b""
    if query:
        tail += "?" + query.decode("latin-1")
    if public_url:
        return public_url.rstrip("/") + tail
    scheme = scope.get("scheme", "http")
    host = headers.get("host", "")
    if peer_is_trusted(scope, networks):
        scheme = _first(headers.get("x-forwarded-proto")) or scheme
        host = _first(headers.get("x-forwarded-host")) or host
    if not host and scope.get("server"):
        server_host, server_port = scope["server"]
        host = f"{server_host}:{server_port}"
    return f"{scheme}://{host}{tail}"
