"""Who vouches for an email's `From`: the door it came through, never the message itself.

Anyone can write any `From`. An address is a *verified* identity (it links and merges customers)
only when an upstream the operator trusts vouches for it:

- a trusted relay: the SMTP peer is one of `SWITCHBOARD_SMTP_TRUSTED_RELAYS` (the company's MX,
  which checked SPF/DKIM/DMARC before relaying), or the raw-MIME webhook with
  `SWITCHBOARD_EMAIL_WEBHOOK_TRUSTED` on;
- an `Authentication-Results` header (RFC 8601) whose authserv-id is one of
  `SWITCHBOARD_EMAIL_TRUST_AUTH_RESULTS`, saying `dmarc=pass` for the From's own domain, on a message
  that came from a trusted relay or through the token-authenticated webhook. From anyone else such
  a header is a forgery as likely as not, and is ignored.

Otherwise the address is a *claim*, modelled as chat visitors' claims are: recorded on the profile
as unverified, never linking or merging customers.

Pure: no network, no clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from email.message import Message

import authres
import msgspec

__all__ = ["SenderTrust", "TrustedNetworks", "from_is_verified"]

# One header is a few hundred characters; a longer one is not worth the parser's time.
_MAX_AUTH_RESULTS_CHARS = 4096


class SenderTrust(msgspec.Struct, frozen=True, kw_only=True):
    """What the door a message came through vouches for (picklable: it travels to the parser)."""

    # A trusted relay or trusted webhook: its From is verified outright.
    upstream_vouches: bool = False
    # The upstream is known (trusted relay, or the webhook's bearer token): headers it added are its own.
    upstream_authenticated: bool = False
    # authserv-ids (lower-case) whose Authentication-Results we believe from such an upstream.
    authserv_ids: frozenset[str] = frozenset()


def parse_authserv_ids(text: str | None) -> frozenset[str]:
    return frozenset(item.strip().lower() for item in (text or "").split(",") if item.strip())


class TrustedNetworks:
    """The relays named by `SWITCHBOARD_SMTP_TRUSTED_RELAYS`: IPs and CIDRs, comma-separated."""

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]):
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, text: str | None) -> TrustedNetworks:
        """Raises ValueError naming the bad entry: a typo must stop the start, not trust nobody quietly."""
        networks = []
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"SWITCHBOARD_SMTP_TRUSTED_RELAYS: {item!r} is not an IP address or CIDR") from None
        return cls(networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
        return any(ip.version == net.version and ip in net for net in self.networks)


def from_is_verified(message: Message, sender_address: str, trust: SenderTrust) -> bool:
    if trust.upstream_vouches:
        return True
    if not (trust.upstream_authenticated and trust.authserv_ids):
        return False
    domain = sender_address.rpartition("@")[2].lower()
    return bool(domain) and _dmarc_pass_for(message, domain, trust.authserv_ids)


def _dmarc_pass_for(message: Message, domain: str, authserv_ids: frozenset[str]) -> bool:
    """The topmost Authentication-Results of a trusted authserv-id says dmarc=pass for `domain`.

    Only the topmost counts: a receiving MTA adds its own on top and (RFC 8601 section 5) removes
    any older one claiming its authserv-id, so a lower one is what the sender wrote.
    """
    for name, value in message.raw_items():
        if name.lower() != "authentication-results":
            continue
        text = " ".join(str(value).split())
        if len(text) > _MAX_AUTH_RESULTS_CHARS:
            continue
        try:
            header = authres.AuthenticationResultsHeader.parse_value(text)
        except Exception:  # noqa: BLE001 — authres raises its own SyntaxError and others on junk
            continue
        if (header.authserv_id or "").lower() not in authserv_ids:
            continue
        return any(
            result.method.lower() == "dmarc"
            and (result.result or "").lower() == "pass"
            and any(
                prop.type.lower() == "header"
                and prop.name.lower() == "from"
                and (prop.value or "").strip().lower() == domain
                for prop in result.properties
            )
            for result in header.results
        )
    return False


# `switchboard up` listens on loopback by default, where only processes of this machine connect.
_SINGLE_NODE_RELAYS = "127.0.0.0/8,::1"


def single_node_trust(settings):
    """The trust `switchboard up` gives when none is configured: a local MTA relaying to the loopback
    listener, and the poster holding the ingest token generated into its own data dir, vouch for
    From. `switchboard serve` (production) trusts nobody until told."""
    changes: dict[str, object] = {}
    if settings.smtp_trusted_relays is None:
        changes["smtp_trusted_relays"] = _SINGLE_NODE_RELAYS
    if settings.email_webhook_trusted is None:
        changes["email_webhook_trusted"] = True
    return settings.with_(**changes) if changes else settings
