"""The SMTP listener: any RFC 5322 message delivered to it becomes an inbound email interaction.

aiosmtpd's protocol runs on the process's own event loop (not aiosmtpd's threaded Controller), so a
message is published through the same NATS connection as every other channel. The reply to DATA
is the contract's answer: 250 only once JetStream acknowledged the interaction, 554 for a message
we can never read (the sending MTA bounces it), 552 for an oversized one (aiosmtpd, from
`data_size_limit`, which EHLO also advertises as SIZE and MAIL FROM's SIZE= is checked against), and
552 5.3.4 for one over its budget or too big for one NATS message; 451 when storing failed or the
parsers are all busy, 452 when the attachment store is full (the sending MTA retries later).

The peer's address decides whether From is verified: only connections from
`SWITCHBOARD_SMTP_TRUSTED_RELAYS` vouch for it (see `channels.email.trust`).
"""

from __future__ import annotations

import asyncio
import socket
import weakref

from aiosmtpd.smtp import SMTP, Envelope, Session

from channels.email.inbound import EmailRefused, MalformedEmail, receive_email
from channels.email.trust import SenderTrust, TrustedNetworks, parse_authserv_ids
from services.platform.logs import get_logger

log = get_logger(__name__)


class _SMTP(SMTP):
    # RFC 5321 caps lines at 1000 octets, but mailers send longer HTML lines and a customer's
    # message must not bounce over that; the size limit still bounds the whole message.
    line_length_limit = 16 * 1024


class _Handler:
    def __init__(self, services):
        self.services = services
        settings = services.settings
        self.relays = TrustedNetworks.parse(settings.smtp_trusted_relays)
        self.authserv_ids = parse_authserv_ids(settings.email_trust_auth_results)

    def trust_of(self, session: Session) -> SenderTrust:
        peer = session.peer[0] if isinstance(session.peer, tuple) and session.peer else None
        trusted = peer in self.relays
        return SenderTrust(upstream_vouches=trusted, upstream_authenticated=trusted, authserv_ids=self.authserv_ids)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            interaction, is_new = await receive_email(self.services, bytes(raw), trust=self.trust_of(session))
        except MalformedEmail as exc:
            self.services.count("channel_rejected_malformed")
            log.info("smtp_message_rejected", reason=str(exc))
            return "554 5.6.0 Message is not a usable email"
        except EmailRefused as exc:
            self.services.count(f"channel_rejected_{exc.code}")
            log.info("smtp_message_refused", reason=exc.detail, permanent=exc.permanent)
            return exc.smtp_reply
        except Exception:  # noqa: BLE001 — NATS down or timing out: the sending MTA retries
            log.exception("smtp_message_not_stored")
            return "451 4.3.0 Temporary failure, please try again later"
        self.services.count("interactions_email")
        return f"250 2.0.0 OK {'queued' if is_new else 'already received'} as {interaction.id}"


class SMTPListener:
    """What `start_smtp` returns: the listening server and the sessions it serves."""

    def __init__(self, server: asyncio.base_events.Server, sessions: weakref.WeakSet):
        self._server = server
        self._sessions = sessions

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stops listening and hangs up on open sessions (a message mid-DATA is not acknowledged,
        so its sender retries it)."""
        self._server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


async def start_smtp(services, host: str, port: int) -> SMTPListener:
    loop = asyncio.get_running_loop()
    # Once, here: aiosmtpd would otherwise resolve the FQDN (a blocking DNS query) per connection.
    hostname = await loop.run_in_executor(None, socket.getfqdn)
    sessions: weakref.WeakSet = weakref.WeakSet()
    handler = _Handler(services)

    def protocol() -> SMTP:
        session = _SMTP(
            handler,
            data_size_limit=services.settings.max_body_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="Switchboard ESMTP",
            loop=loop,
        )
        sessions.add(session)
        return session

    if not handler.relays.networks:
        log.warning(
            "smtp_from_unverified",
            detail="SWITCHBOARD_SMTP_TRUSTED_RELAYS is empty: the From of every message is a claim",
        )
    server = await loop.create_server(protocol, host, port)
    log.info("smtp_listening", port=server.sockets[0].getsockname()[1])
    return SMTPListener(server, sessions)
