"""Twilio: the messaging webhook, the status callback, `X-Twilio-Signature`, and the REST client.

Twilio posts form-encoded requests. SMS and MMS arrive with E.164 numbers in `From`/`To`;
WhatsApp through Twilio arrives on the same webhook with `whatsapp:`-prefixed addresses and is
recorded on the `whatsapp` channel, since that is where the customer wrote.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import mimetypes
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse, urlsplit

import httpx

from channels.errors import Malformed, ProviderError, http_failure, transport_failure
from channels.phone import normalize_phone
from events.interactions import Attachment, Identity, Interaction, interaction_id

SIGNATURE_HEADER = "X-Twilio-Signature"
# Sent when a webhook is signed with a SharedKey rather than the Auth Token: `key=...,algorithm=...`.
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
_HASHES = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}

DEFAULT_API_BASE = "https://api.twilio.com"
WHATSAPP_PREFIX = "whatsapp:"

# Message SIDs are `SM`/`MM` + 32 hex digits; sandboxes and simulators use shorter ones, so only
# the alphabet and a sane length are enforced (the id feeds the deduplication key).
_SID = re.compile(r"[A-Za-z0-9_\-]{1,64}", re.ASCII)
_STATUS = re.compile(r"[A-Za-z_\-]{1,32}", re.ASCII)
_MEDIA_URL_KEY = re.compile(r"MediaUrl([0-9]{1,3})", re.ASCII)


# A Twilio webhook has a few dozen parameters; a bound keeps a hostile body's parse cheap.
MAX_FORM_FIELDS = 500


def parse_form(body: bytes) -> dict[str, list[str]]:
    """A form-encoded body as {name: [values]}, every value of a repeated name kept (Twilio signs
    all): exactly `parse_qs(body.decode(), keep_blank_values=True, errors="strict")`, without its
    per-field overhead (a value without `%` needs no unquoting). Raises `Malformed` for a body that
    is not UTF-8, a percent escape that does not decode, or more than `MAX_FORM_FIELDS` fields."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("body is not a UTF-8 form") from None
    if text.count("&") >= MAX_FORM_FIELDS:
        raise Malformed("body is not a UTF-8 form")
    form: dict[str, list[str]] = {}
    try:
        for field in text.split("&"):
            if not field:
                continue
            name, _, value = field.partition("=")
            name = name.replace("+", " ")
            value = value.replace("+", " ")
            if "%" in name:
                name = unquote(name, errors="strict")
            if "%" in value:
                value = unquote(value, errors="strict")
            values = form.get(name)
            if values is None:
                form[name] = [value]
            else:
                values.append(value)
    except UnicodeDecodeError:
        raise Malformed("body is not a UTF-8 form") from None
    return form


# -- signatures --------------------------------------------------------------------------------


def _values(params: Any, name: str) -> list[str]:
    # Multi-dicts of web frameworks (Starlette/Litestar `getall`, Django `getlist`) keep every value
    # of a repeated parameter; Twilio signs them all.
    if type(params) is dict:  # the gateway's own form (parse_form): no accessor to look for
        value = params[name]
        if type(value) is list and all(type(v) is str for v in value):
            return value
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    for accessor in ("getall", "getlist"):
        getter = getattr(params, accessor, None)
        if callable(getter):
            return [str(v) for v in getter(name)]
    value = params[name]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def twilio_signature(
    auth_token: str,
    url: str,
    params: Mapping[str, str | list[str]] | None,
    *,
    algorithm: str = HMAC_SHA1,
) -> str:
    """`X-Twilio-Signature` of a request: base64 HMAC-SHA1, keyed with the Auth Token, of the full
    URL followed by every POST parameter, sorted by name, as name + value (a repeated name's values
    sorted too). Matches `twilio.request_validator.RequestValidator.compute_signature`, including
    its de-duplication of repeated identical values.
    """
    hash_function = _HASHES.get((algorithm or HMAC_SHA1).upper())
    if hash_function is None:
        raise ValueError("unsupported signature algorithm")
    return _sign(auth_token, url, _signed_params(params), hash_function)


def _signed_params(params: Mapping[str, str | list[str]] | None) -> str:
    """What follows the URL in the signed text: every name + value, sorted (the same for each URL
    variant, so made once)."""
    if not params:
        return ""
    return "".join(name + value for name in sorted(set(params)) for value in sorted(set(_values(params, name))))


def _sign(auth_token: str, url: str, signed_params: str, hash_function: Any) -> str:
    # hmac.digest: one call into OpenSSL, no HMAC object (the webhook's hot path signs twice).
    digest = hmac.digest(auth_token.encode("utf-8"), (url + signed_params).encode("utf-8"), hash_function)
    return base64.b64encode(digest).decode("ascii")


def signature_algorithm(settings_header: str | None) -> str:
    """The algorithm named in `X-Twilio-Webhooks-Signature-Settings`; HMAC_SHA1 when absent."""
    for part in (settings_header or "").split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "algorithm" and value.strip():
            return value.strip()
    return HMAC_SHA1


@lru_cache(maxsize=256)  # a gateway's webhook URLs are a handful: parsed once, not per request
def _url_variants(url: str) -> tuple[str, ...]:
    """The URL without and with its port: Twilio signs either, depending on its side's code path.

    Same rules as Twilio's `remove_port`/`add_port`: the default port added is 443 for https and
    80 otherwise.
    """
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        return (url,)
    # The URL as requested first: the spelling a provider signs most often, so one HMAC usually settles it.
    if port:
        without_port = parsed._replace(netloc=parsed.netloc.split(":")[0]).geturl()
        return (parsed.geturl(), without_port)
    default = 443 if parsed.scheme == "https" else 80
    with_port = parsed._replace(netloc=f"{parsed.netloc}:{default}").geturl()
    return (parsed.geturl(), with_port)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def validate_twilio_signature(
    auth_token: str,
    url: str,
    params: Mapping[str, str | list[str]] | str | bytes | None,
    signature: str | None,
    *,
    algorithm: str | None = None,
) -> bool:
    """Whether `signature` is Twilio's for this request, compared in constant time.

    `url` is the full URL Twilio requested (scheme, host, path and query as Twilio saw them, not as
    a proxy rewrote them). `params` is the form body; for a JSON body pass the raw body: the URL
    then carries `bodySHA256`, the hex SHA-256 of the body, and the signature covers the URL only.
    Accepts exactly what `RequestValidator.validate` accepts.
    """
    if not signature or not auth_token:
        return False
    algorithm = (algorithm or HMAC_SHA1).upper()
    if algorithm not in _HASHES:
        return False
    body_ok = True
    if isinstance(params, (str, bytes)):
        query = parse_qs(urlparse(url).query)
        if "bodySHA256" not in query:
            return False  # a raw body is only signed through its hash in the URL
        body = params.encode("utf-8") if isinstance(params, str) else params
        body_ok = _same(hashlib.sha256(body).hexdigest(), query["bodySHA256"][0])
        params = {}
    signed_params = _signed_params(params)
    hash_function = _HASHES[algorithm]
    # Each variant compared in constant time; stopping at the first match tells only which spelling
    # of our own URL Twilio used.
    matched = any(
        _same(_sign(auth_token, variant, signed_params, hash_function), signature) for variant in _url_variants(url)
    )
    return body_ok and matched


# -- inbound -----------------------------------------------------------------------------------


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Malformed(f"{name} is not text")
    return value.strip()


def _address(raw: str) -> tuple[str, str]:
    """(`sms` or `whatsapp`, the address without its channel prefix)."""
    if raw.lower().startswith(WHATSAPP_PREFIX):
        return "whatsapp", raw[len(WHATSAPP_PREFIX) :].strip()
    return "sms", raw


def _own_number(raw: str) -> str:
    """Our side of the conversation: a phone number, or a short code / alphanumeric sender id."""
    try:
        return normalize_phone(raw)
    except Malformed:
        return raw


def _sid(form: Mapping[str, Any], *names: str) -> str:
    for name in names:
        value = _field(form, name)
        if value:
            if not _SID.fullmatch(value):
                raise Malformed(f"{name} is not a Twilio SID")
            return value
    raise Malformed(f"{names[0]} is missing")


def _attachment(index: int, url: str, content_type: str) -> Attachment:
    try:
        path = urlsplit(url).path
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        path = ""
    name = path.rstrip("/").rsplit("/", 1)[-1] or f"media{index}"
    if "." not in name and content_type:
        name += mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
    return Attachment(
        name=name,
        content_type=content_type or "application/octet-stream",
        size=0,  # not downloaded: Twilio keeps the bytes behind `ref`
        sha256="",
        ref=url,
    )


def _media(form: Mapping[str, Any]) -> list[Attachment]:
    # Walk the MediaUrl{i} keys present rather than trusting NumMedia for a loop bound.
    suffixes = sorted(
        (int(match.group(1)), match.group(1))
        for key in form
        if isinstance(key, str) and (match := _MEDIA_URL_KEY.fullmatch(key))
    )
    attachments = []
    for index, suffix in suffixes:
        url = _field(form, f"MediaUrl{suffix}")
        if url:
            content_type = _field(form, f"MediaContentType{suffix}")
            attachments.append(_attachment(index, url, content_type))
    return attachments


def _put(meta: dict[str, str], key: str, value: str) -> None:
    if value:
        meta[key] = value


def parse_twilio_message(form: Mapping[str, str], *, received_at: datetime | None = None) -> Interaction:
    """An inbound SMS, MMS or WhatsApp message from Twilio's messaging webhook.

    Twilio's request carries no timestamp: `received_at` (now when omitted) is when it arrived.
    """
    sid = _sid(form, "MessageSid", "SmsMessageSid", "SmsSid")
    raw_from = _field(form, "From")
    if not raw_from:
        raise Malformed("From is missing")
    channel, from_address = _address(raw_from)
    sender = normalize_phone(from_address)
    _, to_address = _address(_field(form, "To"))
    to = _own_number(to_address) if to_address else ""

    text = _field(form, "Body")
    kind = "message"
    meta: dict[str, str] = {"provider": "twilio"}
    _put(meta, "to", to)
    for key, name in (
        ("account_sid", "AccountSid"),
        ("messaging_service_sid", "MessagingServiceSid"),
        ("num_segments", "NumSegments"),
        ("num_media", "NumMedia"),
        ("message_type", "MessageType"),
        ("in_reply_to", "OriginalRepliedMessageSid"),
        ("button_payload", "ButtonPayload"),
        ("list_id", "ListId"),
    ):
        _put(meta, key, _field(form, name))

    attachments = _media(form)
    if attachments:
        kind = "media"
    # WhatsApp through Twilio: quick-reply buttons, list picks and shared locations.
    if not text:
        text = _field(form, "ButtonText") or _field(form, "ListTitle")
    latitude, longitude = _field(form, "Latitude"), _field(form, "Longitude")
    if latitude and longitude:
        kind = "location"
        meta["latitude"], meta["longitude"] = latitude, longitude
        if not text:
            place = " ".join(p for p in (_field(form, "Label"), _field(form, "Address")) if p)
            text = f"Location: {latitude},{longitude}" + (f" {place}" if place else "")

    profile_name = _field(form, "ProfileName")
    return Interaction(
        id=interaction_id(channel, sid),
        channel=channel,
        direction="inbound",
        occurred_at=received_at or datetime.now(UTC),
        identities=[Identity("phone", sender)],
        kind=kind,
        text=text,
        profile={"name": profile_name} if profile_name else {},
        thread_key=f"{channel}:{to}:{sender}",
        provider_message_id=sid,
        attachments=attachments,
        meta=meta,
    )


def parse_twilio_status(form: Mapping[str, str], *, received_at: datetime | None = None) -> Interaction:
    """A delivery status of a message we sent (queued, sent, delivered, undelivered, failed, read).

    Each (message, status) pair is one interaction, so Twilio's retries of a callback dedupe while
    successive statuses of one message are all kept.
    """
    sid = _sid(form, "MessageSid", "SmsSid")
    status = _field(form, "MessageStatus") or _field(form, "SmsStatus")
    if not status:
        raise Malformed("MessageStatus is missing")
    if not _STATUS.fullmatch(status):
        raise Malformed("MessageStatus is not a status")
    status = status.lower()

    channel_to, to_address = _address(_field(form, "To"))
    channel_from, from_address = _address(_field(form, "From"))
    channel = "whatsapp" if "whatsapp" in (channel_to, channel_from) else "sms"
    identities = []
    recipient = ""
    if to_address:
        try:
            recipient = normalize_phone(to_address)
            identities.append(Identity("phone", recipient))
        except Malformed:
            recipient = ""
    sender = _own_number(from_address) if from_address else ""

    meta: dict[str, str] = {"provider": "twilio"}
    for key, name in (
        ("error_code", "ErrorCode"),
        ("account_sid", "AccountSid"),
        ("messaging_service_sid", "MessagingServiceSid"),
    ):
        _put(meta, key, _field(form, name))
    if "error_code" in meta:
        # What the core records as the reason when a reply fails.
        meta["error"] = f"twilio error {meta['error_code']}"
    return Interaction(
        id=interaction_id(channel, f"{sid}:status:{status}"),
        channel=channel,
        direction="outbound",
        occurred_at=received_at or datetime.now(UTC),
        identities=identities,
        kind="status",
        status=status,
        thread_key=f"{channel}:{sender}:{recipient}" if sender and recipient else None,
        provider_message_id=sid,
        meta=meta,
    )


# -- outbound ----------------------------------------------------------------------------------


def _rfc2822(value: object) -> datetime | None:
    """Twilio's `date_created` ("Thu, 26 Nov 2026 21:00:00 +0000"), or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class TwilioClient:
    """Sends messages through Twilio's REST API (or any Twilio-compatible one at `api_base`)."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        *,
        api_base: str = DEFAULT_API_BASE,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ):
        self.account_sid = account_sid
        self.from_number = from_number
        self._url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._auth = httpx.BasicAuth(account_sid, auth_token)

    async def send_sms(
        self, to: str, body: str, *, status_callback: str | None = None, from_: str | None = None
    ) -> str:
        """Sends `body` to `to` and returns Twilio's message SID.

        `to` and `from_` may be `whatsapp:`-prefixed to send over WhatsApp through Twilio.
        """
        data = {"To": to, "From": from_ or self.from_number, "Body": body}
        if status_callback:
            data["StatusCallback"] = status_callback
        try:
            response = await self._http.post(self._url, data=data, auth=self._auth)
        except httpx.HTTPError as exc:
            raise transport_failure("twilio", exc) from None
        if not response.is_success:
            code = None
            try:
                payload = response.json()
                if isinstance(payload, dict) and payload.get("code") is not None:
                    code = str(payload["code"])
            except ValueError:
                pass
            raise http_failure("twilio", response, provider_code=code)
        try:
            sid = response.json().get("sid")
        except (ValueError, AttributeError):
            sid = None
        if not isinstance(sid, str) or not sid:
            # Accepted but unreadable: sending again could deliver the message twice.
            raise ProviderError(False, "twilio answered without a message sid", status=response.status_code)
        return sid

    async def find_sent(self, to: str, body: str, since: datetime, *, from_: str | None = None) -> str | None:
        """The SID of a message to `to` from `from_` with exactly `body`, created at or after `since`
        (less a minute of clock skew), or None: Twilio's message list (most recent first), for an
        attempt whose answer we never recorded. Raises `ProviderError` when Twilio cannot be asked."""
        params = {"To": to, "From": from_ or self.from_number, "PageSize": "100"}
        try:
            response = await self._http.get(self._url, params=params, auth=self._auth)
        except httpx.HTTPError as exc:
            raise transport_failure("twilio", exc) from None
        if not response.is_success:
            raise http_failure("twilio", response)
        try:
            messages = response.json().get("messages")
        except (ValueError, AttributeError):
            messages = None
        if not isinstance(messages, list):
            raise ProviderError(True, "twilio message list unreadable", status=response.status_code)
        earliest = since - timedelta(minutes=1)
        for message in messages:
            if not isinstance(message, dict) or message.get("body") != body:
                continue
            created = _rfc2822(message.get("date_created"))
            sid = message.get("sid")
            if isinstance(sid, str) and sid and (created is None or created >= earliest):
                return sid
        return None

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> TwilioClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
