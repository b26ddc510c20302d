"""Live chat: sessions, and a WebSocket per visitor.

A session is created by the website's widget. What the visitor types about themselves (name, email,
phone) is a claim. The company's website may sign what it knows of its logged-in user with
`identity_hash`, the lower-case hex HMAC-SHA256 keyed with SWITCHBOARD_CHAT_IDENTITY_SECRET of
`user_id|email|phone` (each as sent, a missing one empty): that verifies all three (`user_id` as the
`external` identity). A hash of `user_id` alone verifies `user_id` only; email and phone stay claims,
because the website did not vouch for them. Any other hash, or any hash while no secret is
configured, is refused (401) and no session is made. Sessions live in a JetStream key-value bucket (with the streams' retention), so any gateway
process can serve any visitor. Agent replies for a session are kept in SB_CHAT_OUTBOX, so a visitor
who reconnects receives what was sent while away.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime

import msgspec

from channels.errors import ChannelError, Malformed, TooLarge, Unauthorized
from events.interactions import Identity, Interaction, interaction_id


class SessionRequest(msgspec.Struct, forbid_unknown_fields=False):
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    user_id: str | None = None
    identity_hash: str | None = None


class ChatSession(msgspec.Struct):
    session_id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    user_id: str | None = None
    # Written by sessions made before the signed `user_id|email|phone` rule, which verified email
    # and phone on a hash of user_id alone. Read back as `external_verified` only.
    verified: bool = False
    created_at: datetime | None = None
    external_verified: bool = False  # user_id is the company's own id of this visitor
    contacts_verified: bool = False  # email and phone were signed too

    @property
    def user_id_verified(self) -> bool:
        return self.external_verified or self.verified


class InboundFrame(msgspec.Struct, forbid_unknown_fields=False):
    type: str
    text: str | None = None
    client_id: str | None = None


_session_request = msgspec.json.Decoder(SessionRequest)
_session_decode = msgspec.json.Decoder(ChatSession)
_frame = msgspec.json.Decoder(InboundFrame)
_encode = msgspec.json.Encoder().encode

_MAX_CLAIM = 320
_MAX_CLIENT_ID = 200


def identity_hash(
    secret: str, user_id: str, email: str | None = None, phone: str | None = None, *, user_id_only: bool = False
) -> str:
    """What the company's website computes for its logged-in user (see the module docstring)."""
    message = user_id if user_id_only else f"{user_id}|{email or ''}|{phone or ''}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


class Verification(msgspec.Struct, frozen=True):
    external: bool = False
    contacts: bool = False


def verify_identity(secret: str | None, request: SessionRequest) -> Verification:
    """Which of the session request's identities the website signed; Unauthorized if none verifies.

    Both candidate hashes are always computed and compared in constant time, so the answer's timing
    tells nothing about which form came close.
    """
    if request.identity_hash is None and request.user_id is None:
        return Verification()
    if not (request.user_id and request.identity_hash):
        raise Malformed("user_id and identity_hash go together")
    if not secret:
        # An empty key is a key anyone can use: without a configured secret nobody is verified.
        raise Unauthorized("identity_hash cannot be verified: no chat identity secret is configured")
    given = request.identity_hash.strip().lower().encode()
    full = identity_hash(secret, request.user_id, request.email, request.phone).encode()
    alone = identity_hash(secret, request.user_id, user_id_only=True).encode()
    full_ok = hmac.compare_digest(full, given)
    alone_ok = hmac.compare_digest(alone, given)
    if full_ok:
        return Verification(external=True, contacts=True)
    if alone_ok:
        return Verification(external=True, contacts=False)
    raise Unauthorized("identity_hash matches neither user_id|email|phone nor user_id")


class ChatSessions:
    """Creates sessions and their bearer tokens; verifies tokens without a lookup."""

    def __init__(self, kv, token_key: bytes, identity_secret: str):
        self.kv = kv
        self.token_key = token_key
        self.identity_secret = identity_secret

    def _sign(self, session_id: str) -> str:
        mac = hmac.new(self.token_key, session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def token_for(self, session_id: str) -> str:
        return f"{session_id}.{self._sign(session_id)}"

    def verify_token(self, token: str | None) -> str:
        if not token or "." not in token:
            raise Unauthorized("missing or malformed chat token")
        session_id, signature = token.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(session_id)):
            raise Unauthorized("chat token does not verify")
        return session_id

    def parse_request(self, body: bytes) -> SessionRequest:
        try:
            request = _session_request.decode(body or b"{}")
        except msgspec.ValidationError as exc:
            raise Malformed(f"invalid session request: {exc}") from None
        except msgspec.DecodeError:
            raise Malformed("body is not JSON") from None
        for field in ("name", "email", "phone", "user_id", "identity_hash"):
            value = getattr(request, field)
            if value is not None and len(value) > _MAX_CLAIM:
                raise Malformed(f"{field} is too long")
        return request

    def verify(self, request: SessionRequest) -> Verification:
        return verify_identity(self.identity_secret, request)

    async def create(
        self, request: SessionRequest, now: datetime, verification: Verification | None = None
    ) -> tuple[ChatSession, str]:
        if verification is None:
            verification = self.verify(request)
        session = ChatSession(
            session_id=str(uuid.uuid4()),
            name=request.name,
            email=request.email,
            phone=request.phone,
            user_id=request.user_id,
            created_at=now,
            external_verified=verification.external,
            contacts_verified=verification.contacts,
        )
        try:
            await self.kv.put(session.session_id, _encode(session))
        except Exception as exc:  # noqa: BLE001 — the bucket is full (its max_bytes) or NATS is away
            full = "maximum bytes" in str(exc).lower() or "resource" in str(exc).lower()
            raise ChannelError(
                "the chat session store is full, retry later" if full else "could not store the session, retry later",
                status=503,
                code="unavailable",
            ) from None
        return session, self.token_for(session.session_id)

    async def get(self, session_id: str) -> ChatSession:
        try:
            entry = await self.kv.get(session_id)
        except Exception:  # noqa: BLE001 — KeyNotFoundError, or expired by retention
            raise Unauthorized("chat session not found or expired") from None
        return _session_decode.decode(entry.value)


def parse_frame(raw: str | bytes, max_text: int) -> InboundFrame:
    if isinstance(raw, str):
        raw = raw.encode()
    if len(raw) > max_text * 4 + 1024:
        raise TooLarge("frame too large")
    try:
        frame = _frame.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise Malformed("frame is not a JSON object with a string type") from None
    if frame.type != "message":
        raise Malformed(f"unknown frame type {frame.type[:40]!r}")
    if not isinstance(frame.text, str) or not frame.text.strip():
        raise Malformed("message frames need non-empty text")
    if not frame.client_id or len(frame.client_id) > _MAX_CLIENT_ID:
        raise Malformed("message frames need a client_id of at most 200 characters")
    if len(frame.text) > max_text:
        raise TooLarge(f"text longer than {max_text} characters")
    return frame


def chat_interaction(session: ChatSession, frame: InboundFrame, now: datetime) -> Interaction:
    identities = [Identity("chat", session.session_id, verified=True)]
    if session.user_id_verified and session.user_id:
        identities.append(Identity("external", session.user_id, verified=True))
    for kind, value in (("email", session.email), ("phone", session.phone)):
        if value:
            identities.append(Identity(kind, value, verified=session.contacts_verified))
    return Interaction(
        id=interaction_id("chat", f"{session.session_id}:{frame.client_id}"),
        channel="chat",
        direction="inbound",
        occurred_at=now,
        identities=identities,
        text=frame.text or "",
        profile={"name": session.name} if session.name else {},
        thread_key=f"chat:{session.session_id}",
        provider_message_id=f"{session.session_id}:{frame.client_id}",
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
