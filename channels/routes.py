"""The providers' doors: HTTP endpoints of the email, SMS and social channels (gateway role).

Each handler verifies the request (token or signature), parses it with its channel's module,
publishes the interactions and answers 2xx only once JetStream acknowledged every one of them. The
interaction id is derived from the provider's message id, so a provider's retry is stored once and
answered 2xx again. A request refused with a `ChannelError` (400, 401, 413, 415) has published
nothing: everything is parsed before the first publish. Logs carry ids and counts, never content.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from litestar import MediaType, Request, Response, get, post

from channels import openapi
from channels.email.inbound import EmailRefused, MalformedEmail, receive_email
from channels.email.trust import SenderTrust, parse_authserv_ids
from channels.errors import Malformed, Unauthorized, Unavailable, UnsupportedMediaType
from channels.proxies import request_url, trusted_networks
from channels.sms.twilio import (
    SIGNATURE_HEADER as TWILIO_SIGNATURE_HEADER,
)
from channels.sms.twilio import (
    SIGNATURE_SETTINGS_HEADER as TWILIO_SETTINGS_HEADER,
)
from channels.sms.twilio import (
    parse_form,
    parse_twilio_message,
    parse_twilio_status,
    signature_algorithm,
    validate_twilio_signature,
)
from channels.social.meta import SIGNATURE_HEADER as META_SIGNATURE_HEADER
from channels.social.meta import parse_meta_webhook, verify_handshake, verify_meta_signature
from channels.social.telegram import SECRET_HEADER as TELEGRAM_SECRET_HEADER
from channels.social.telegram import parse_telegram_update, verify_telegram_secret
from events.interactions import Interaction
from services.platform.logs import get_logger

log = get_logger(__name__)

TWIML_EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
_RFC822 = "message/rfc822"
_TWIML = "text/xml"
# Header names as ASGI spells them (lower case): the fast path's headers are a plain dict.
_TWILIO_SIGNATURE = TWILIO_SIGNATURE_HEADER.lower()
_TWILIO_SETTINGS = TWILIO_SETTINGS_HEADER.lower()
_META_SIGNATURE = META_SIGNATURE_HEADER.lower()
_TELEGRAM_SECRET = TELEGRAM_SECRET_HEADER.lower()


def _services(request: Request):
    return request.app.state.services


def _now() -> datetime:
    return datetime.now(UTC)


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _require_media_type(headers: Mapping[str, str], expected: str) -> None:
    if _media_type(headers) != expected:
        raise UnsupportedMediaType(f"expected Content-Type {expected}")


def public_url(request: Request) -> str:
    """The URL the provider requested, as it saw it: `SWITCHBOARD_PUBLIC_URL` + path + query when
    set; otherwise from the request, `X-Forwarded-Proto`/`-Host` believed only from a trusted proxy."""
    return _public_url(_services(request), request.scope, request.headers)


def _public_url(services, scope: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    settings = services.settings
    return request_url(
        scope,
        headers,
        public_url=settings.public_url,
        networks=trusted_networks(settings.trusted_proxies),
    )


async def publish_all(services, interactions: Iterable[Interaction]) -> int:
    """Publishes in order, each awaited to its JetStream ack; returns how many were new."""
    new = 0
    for interaction in interactions:
        try:
            new += await services.publisher.publish(interaction)
        except Unavailable:
            raise  # JetStream did not store it (logged by the publisher): 503 + Retry-After, the provider retries
        except Exception:  # noqa: BLE001 — anything else on the way to NATS: the provider retries too
            log.exception("channel_publish_failed", channel=interaction.channel, interaction_id=str(interaction.id))
            raise Unavailable() from None
        services.count(f"interactions_{interaction.channel}")
    return new


# -- email -----------------------------------------------------------------------------------------


@post(
    "/channels/email/inbound",
    status_code=200,
    summary="A raw email (message/rfc822), e.g. from an MTA pipe",
    operation_class=openapi.RAW_EMAIL,
)
async def email_inbound(request: Request) -> Response:
    services = _services(request)
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    expected = services.settings.ingest_token or ""
    if not token or not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("missing or wrong ingest token")
    _require_media_type(request.headers, _RFC822)
    raw = await request.body()
    settings = services.settings
    # The bearer token authenticates the relay that posts: the Authentication-Results it adds are
    # its own. Whether it also vouches for From outright is the operator's call.
    trust = SenderTrust(
        upstream_vouches=settings.email_webhook_trusted is True,
        upstream_authenticated=True,
        authserv_ids=parse_authserv_ids(settings.email_trust_auth_results),
    )
    try:
        interaction, is_new = await receive_email(services, raw, _now(), trust)
    except MalformedEmail as exc:
        raise Malformed(str(exc)) from None
    except EmailRefused as exc:
        services.count(f"channel_rejected_{exc.code}")
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return Response(
            {"error": exc.code, "detail": exc.detail},
            status_code=exc.http_status,
            media_type=MediaType.JSON,
            headers=headers,
        )
    except Unavailable:
        raise  # JetStream did not store it: 503 + Retry-After
    except Exception:  # noqa: BLE001 — blob store or NATS failing: the sender retries
        log.exception("email_not_stored")
        raise Unavailable() from None
    services.count("interactions_email")
    return Response({"id": str(interaction.id), "duplicate": not is_new}, status_code=200, media_type=MediaType.JSON)


# -- SMS (Twilio) ----------------------------------------------------------------------------------


def _twilio_form(services, scope: Mapping[str, Any], headers: Mapping[str, str], body: bytes) -> dict[str, list[str]]:
    """The verified form of a Twilio webhook, every value of a repeated name kept (Twilio signs all)."""
    _require_media_type(headers, _FORM)
    form = parse_form(body)
    algorithm = signature_algorithm(headers.get(_TWILIO_SETTINGS))
    if not validate_twilio_signature(
        services.settings.twilio_auth_token or "",
        _public_url(services, scope, headers),
        form,
        headers.get(_TWILIO_SIGNATURE),
        algorithm=algorithm,
    ):
        raise Unauthorized(f"{TWILIO_SIGNATURE_HEADER} is missing or does not match")
    return form


# The providers' webhooks as functions of (services, ASGI scope, lower-case headers, raw body) that
# answer (status, media type, body) or raise a `ChannelError`: the same code behind the Litestar
# handlers below (which the OpenAPI document describes) and behind channels.fastpath, which serves
# these routes straight on ASGI.


async def receive_twilio_message(services, scope, headers, body: bytes) -> tuple[int, str, bytes]:
    form = _twilio_form(services, scope, headers, body)
    await publish_all(services, [parse_twilio_message(form, received_at=_now())])
    return 200, _TWIML, TWIML_EMPTY


async def receive_twilio_status(services, scope, headers, body: bytes) -> tuple[int, str, bytes]:
    form = _twilio_form(services, scope, headers, body)
    await publish_all(services, [parse_twilio_status(form, received_at=_now())])
    return 200, _TWIML, TWIML_EMPTY


async def receive_meta_webhook(services, scope, headers, body: bytes) -> tuple[int, str, bytes]:
    _require_media_type(headers, _JSON)
    verify_meta_signature(services.settings.meta_app_secret or "", body, headers.get(_META_SIGNATURE))
    interactions = parse_meta_webhook(body, received_at=_now())
    await publish_all(services, interactions)
    return 200, _JSON, b'{"received":%d}' % len(interactions)


async def receive_telegram_update(services, scope, headers, body: bytes) -> tuple[int, str, bytes]:
    verify_telegram_secret(services.settings.telegram_secret_token or "", headers.get(_TELEGRAM_SECRET))
    _require_media_type(headers, _JSON)
    interactions = parse_telegram_update(body)
    await publish_all(services, interactions)
    return 200, _JSON, b'{"received":%d}' % len(interactions)


async def _answer(receive, request: Request) -> Response:
    status, media_type, content = await receive(
        _services(request), request.scope, request.headers, await request.body()
    )
    return Response(content, status_code=status, media_type=media_type)


# -- SMS (Twilio) ----------------------------------------------------------------------------------


@post(
    "/channels/sms/twilio",
    status_code=200,
    summary="Twilio's messaging webhook (SMS, MMS, WhatsApp)",
    operation_class=openapi.TWILIO_MESSAGE,
)
async def twilio_message(request: Request) -> Response:
    return await _answer(receive_twilio_message, request)


@post(
    "/channels/sms/twilio/status",
    status_code=200,
    summary="Twilio's message status callback",
    operation_class=openapi.TWILIO_STATUS,
)
async def twilio_status(request: Request) -> Response:
    return await _answer(receive_twilio_status, request)


# -- Meta: WhatsApp Cloud API, Messenger, Instagram ------------------------------------------------


@get("/channels/social/meta", summary="Meta's webhook verification handshake", operation_class=openapi.META_HANDSHAKE)
async def meta_handshake(request: Request) -> Response:
    challenge = verify_handshake(request.query_params, _services(request).settings.meta_verify_token or "")
    return Response(
        challenge, status_code=200, media_type=MediaType.TEXT, headers={"X-Content-Type-Options": "nosniff"}
    )


@post(
    "/channels/social/meta",
    status_code=200,
    summary="WhatsApp, Messenger and Instagram webhooks",
    operation_class=openapi.META_WEBHOOK,
)
async def meta_webhook(request: Request) -> Response:
    return await _answer(receive_meta_webhook, request)


# -- Telegram --------------------------------------------------------------------------------------


@post(
    "/channels/social/telegram",
    status_code=200,
    summary="A Telegram Bot API Update",
    operation_class=openapi.TELEGRAM_UPDATE,
)
async def telegram_webhook(request: Request) -> Response:
    return await _answer(receive_telegram_update, request)


# The routes channels.fastpath serves on ASGI (POST, no query string), and what answers each.
FAST_ROUTES = {
    "/channels/sms/twilio": receive_twilio_message,
    "/channels/sms/twilio/status": receive_twilio_status,
    "/channels/social/meta": receive_meta_webhook,
    "/channels/social/telegram": receive_telegram_update,
}


def channel_handlers() -> list:
    """The gateway's provider endpoints (the chat channel's are in channels/chat_gateway.py)."""
    return [email_inbound, twilio_message, twilio_status, meta_handshake, meta_webhook, telegram_webhook]
