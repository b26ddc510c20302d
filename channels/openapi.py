"""OpenAPI descriptions of the channel endpoints' request bodies.

The handlers read their bodies raw (a signature covers the exact bytes, a form keeps repeated
names), so Litestar cannot infer a schema from a typed parameter. These operation classes add the
provider's documented shape to the OpenAPI document, for clients and for the fuzz test that
generates requests from it; parsing stays in each channel's module.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Parameter, RequestBody, Schema

_STRING = Schema(type=OpenAPIType.STRING)


def _object(required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    return Schema(type=OpenAPIType.OBJECT, properties=properties, required=list(required) or None)


def with_body(media_type: str, schema: Schema, *, query: tuple[str, ...] = ()) -> type[Operation]:
    """An Operation class whose request body is `schema` in `media_type` (and optional string
    query parameters)."""

    @dataclass
    class _Operation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(content={media_type: OpenAPIMediaType(schema=schema)}, required=True)
            if query:
                self.parameters = [
                    *(self.parameters or []),
                    *(Parameter(name=name, param_in="query", required=False, schema=_STRING) for name in query),
                ]

    return _Operation


def with_query(*names: str) -> type[Operation]:
    @dataclass
    class _Operation(Operation):
        def __post_init__(self) -> None:
            self.parameters = [
                *(self.parameters or []),
                *(Parameter(name=name, param_in="query", required=False, schema=_STRING) for name in names),
            ]

    return _Operation


# Twilio's messaging webhook: form fields (a subset; Twilio sends more and signs them all).
TWILIO_MESSAGE = with_body(
    "application/x-www-form-urlencoded",
    _object(
        ("MessageSid", "From", "To"),
        MessageSid=_STRING,
        SmsSid=_STRING,
        AccountSid=_STRING,
        From=_STRING,
        To=_STRING,
        Body=_STRING,
        NumMedia=_STRING,
        ProfileName=_STRING,
        WaId=_STRING,
    ),
)
TWILIO_STATUS = with_body(
    "application/x-www-form-urlencoded",
    _object(("MessageSid", "MessageStatus"), MessageSid=_STRING, MessageStatus=_STRING, ErrorCode=_STRING, To=_STRING),
)
RAW_EMAIL = with_body("message/rfc822", Schema(type=OpenAPIType.STRING, format="binary"))
META_WEBHOOK = with_body(
    "application/json",
    _object(("object", "entry"), object=_STRING, entry=Schema(type=OpenAPIType.ARRAY, items=_object())),
)
TELEGRAM_UPDATE = with_body(
    "application/json",
    _object(("update_id",), update_id=Schema(type=OpenAPIType.INTEGER), message=_object(), edited_message=_object()),
)
META_HANDSHAKE = with_query("hub.mode", "hub.verify_token", "hub.challenge")
CHAT_SESSION = with_body(
    "application/json", _object((), name=_STRING, email=_STRING, phone=_STRING, user_id=_STRING, identity_hash=_STRING)
)
