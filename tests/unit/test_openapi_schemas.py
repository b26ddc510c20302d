"""Every route of the agent API declares what it answers (and, taking a body, what it takes) in the
OpenAPI document: a Struct with named fields, not a bare `object` that tells a client nothing."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from channels.routes import channel_handlers
from services.api.app import build_app
from services.api.context import Services
from services.platform.settings import Settings
from services.platform.streams import Names

pytestmark = pytest.mark.unit

# Answers that are not one JSON document: a stream of events, opaque bytes. They need a media type
# of their own, and (the bytes) a schema.
STREAMS = {"text/event-stream"}
# Bodies that are maps by the contract: custom attribute values `{KEY: VALUE}`, whose keys are the
# attribute definitions' (checked against them, 400 otherwise), not fields a schema could name.
MAP_BODIES = {
    ("patch", "/api/v1/customers/{customer_id}/attributes"),
    ("patch", "/api/v1/cases/{case_id}/attributes"),
}
NOT_YET_TYPED: set[tuple[str, str]] = set()


def _document() -> dict:
    app = build_app(Services(settings=Settings(), names=Names()), ("api", "gateway"), channel_handlers())
    with TestClient(app) as client:
        return client.get("/schema/openapi.json").json()


def _named_fields(doc: dict, schema: dict) -> bool:
    """Whether `schema` (or, for a list, its items; for a union, every member) names its fields."""
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if schema.get("type") == "array":
        return _named_fields(doc, schema.get("items") or {})
    members = schema.get("oneOf") or schema.get("anyOf")
    if members:
        return all(_named_fields(doc, m) for m in members if m.get("type") != "null")
    return bool(schema.get("properties"))


def test_every_agent_api_route_declares_its_answer_and_its_body():
    doc = _document()
    missing = []
    operations = [
        (method, path, op)
        for path, item in doc["paths"].items()
        if path.startswith("/api/v1/")
        for method, op in item.items()
        if isinstance(op, dict) and "responses" in op
    ]
    assert len(operations) >= 18
    for method, path, op in operations:
        if (method, path) in NOT_YET_TYPED:
            continue
        success = [r for code, r in op["responses"].items() if code.startswith("2")]
        if not success:
            missing.append(f"{method.upper()} {path}: no 2xx response")
            continue
        for response in success:
            content = response.get("content") or {}
            if not content and response is success[0] and method != "delete":
                missing.append(f"{method.upper()} {path}: no response content")
            for media, body in content.items():
                schema = body.get("schema") or {}
                if media in STREAMS:
                    continue
                if media == "application/json":
                    if not _named_fields(doc, schema):
                        missing.append(f"{method.upper()} {path}: response {media} without named fields")
                elif not schema:
                    missing.append(f"{method.upper()} {path}: response {media} without a schema")
        request = op.get("requestBody")
        if method in ("post", "put", "patch") and request is not None:
            for media, body in (request.get("content") or {}).items():
                if (method, path) in MAP_BODIES:
                    continue
                if media == "application/json" and not _named_fields(doc, body.get("schema") or {}):
                    missing.append(f"{method.upper()} {path}: request body without named fields")
    assert missing == []


def test_the_check_catches_an_untyped_route():
    doc = {"components": {"schemas": {"A": {"type": "object", "properties": {"x": {}}}}}}
    assert _named_fields(doc, {"$ref": "#/components/schemas/A"})
    assert _named_fields(doc, {"type": "array", "items": {"$ref": "#/components/schemas/A"}})
    assert not _named_fields(doc, {"type": "object"})
    assert not _named_fields(doc, {})
