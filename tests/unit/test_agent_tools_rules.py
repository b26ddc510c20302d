"""Canned responses' placeholders and custom attribute values checked against their definitions
(services.domain.templates, services.domain.attributes)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from events.config import AttributeDefined
from services.domain.attributes import InvalidAttribute, checked_values, valid_key
from services.domain.templates import fill

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_placeholders_are_filled_and_a_missing_value_leaves_no_trace():
    text = "Hi {{customer.name}}, I'm {{ agent.name }} on case {{case.id}}. {{unknown}}"
    values = {"customer.name": "Ada", "agent.name": "Grace", "case.id": "c-1"}
    assert fill(text, values) == "Hi Ada, I'm Grace on case c-1. {{unknown}}"
    assert fill(text, {"agent.name": "Grace", "case.id": "c-1"}) == "Hi, I'm Grace on case c-1. {{unknown}}"
    assert fill("{{customer.name}}", {"customer.name": None}) == ""
    assert "{{" not in fill("Dear {{customer.name}}\nBye {{agent.name}}", {})


def _define(key: str, type: str, applies_to: str = "customer", options: list[str] | None = None):
    stream = uuid.uuid4()
    return AttributeDefined(
        id=uuid.uuid4(),
        stream_id=stream,
        version=1,
        occurred_at=T0,
        customer_id=stream,
        key=key,
        type=type,
        applies_to=applies_to,
        options=options or [],
    )


DEFINITIONS = {
    "plan": _define("plan", "list", options=["free", "pro"]),
    "seats": _define("seats", "number"),
    "renewal": _define("renewal", "date"),
    "vip": _define("vip", "boolean"),
    "note": _define("note", "text"),
    "order": _define("order", "text", applies_to="case"),
}


def test_values_of_their_type_are_accepted_and_dates_normalised():
    values = {"plan": "pro", "seats": 12, "renewal": "2026-12-01", "vip": True, "note": "likes tea", "order": None}
    with pytest.raises(InvalidAttribute, match="order"):
        checked_values(values, DEFINITIONS, "customer")  # a case attribute, even to remove
    del values["order"]
    assert checked_values(values, DEFINITIONS, "customer") == values
    assert checked_values({"renewal": "2026-12-01T10:00:00+01:00"}, DEFINITIONS, "customer") == {
        "renewal": "2026-12-01T10:00:00+01:00"
    }
    assert checked_values({"seats": 2.5, "vip": None}, DEFINITIONS, "customer") == {"seats": 2.5, "vip": None}
    assert checked_values({"order": "A-1"}, DEFINITIONS, "case") == {"order": "A-1"}


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"plan": "gold"}, "plan"),
        ({"plan": 1}, "plan"),
        ({"seats": "12"}, "seats"),
        ({"seats": True}, "seats"),
        ({"renewal": "next week"}, "renewal"),
        ({"renewal": "2026-13-01"}, "renewal"),
        ({"renewal": 20261201}, "renewal"),
        ({"vip": "yes"}, "vip"),
        ({"vip": 1}, "vip"),
        ({"note": ["a"]}, "note"),
        ({"nope": "x"}, "nope"),
        ({"seats": 1, "vip": "no"}, "vip"),
    ],
)
def test_a_wrong_value_rejects_the_change_naming_the_key(values, key):
    with pytest.raises(InvalidAttribute) as raised:
        checked_values(values, DEFINITIONS, "customer")
    assert raised.value.key == key and key in str(raised.value)


def test_keys_are_short_lower_case_names():
    assert valid_key("plan") and valid_key("order.ref") and valid_key("a1_b-c")
    assert not valid_key("") and not valid_key("Plan") and not valid_key("1a") and not valid_key("a b")


def test_the_openapi_document_declares_the_agent_tools_bodies_and_answers():
    from litestar.testing import TestClient  # noqa: PLC0415

    from services.api.app import build_app  # noqa: PLC0415
    from services.api.context import Services  # noqa: PLC0415
    from services.platform.settings import Settings  # noqa: PLC0415
    from services.platform.streams import Names  # noqa: PLC0415

    with TestClient(build_app(Services(settings=Settings(), names=Names()), ("gateway", "api"))) as client:
        paths = client.get("/schema/openapi.json").json()["paths"]
    for path, method in (
        ("/api/v1/canned-responses", "post"),
        ("/api/v1/attribute-definitions/{key}", "put"),
        ("/api/v1/customers/{customer_id}/attributes", "patch"),
        ("/api/v1/cases/{case_id}/attributes", "patch"),
        ("/api/v1/cases/{case_id}/csat", "post"),
        ("/api/v1/cases/{case_id}/reply", "post"),
    ):
        operation = paths[path][method]
        assert operation["requestBody"]["content"]["application/json"]["schema"], (path, method)
        answers = operation["responses"]
        assert any(r.get("content") for r in answers.values()), (path, method)
    for path in ("/api/v1/canned-responses", "/api/v1/attribute-definitions"):
        [answer] = [r for code, r in paths[path]["get"]["responses"].items() if code.startswith("2")]
        assert answer["content"]["application/json"]["schema"]
    assert "/csat/{token}" in paths
