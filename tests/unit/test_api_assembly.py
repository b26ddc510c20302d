"""The app a process serves holds exactly the routes of the roles it runs: every role the probes,
the gateway the channel endpoints, the api role the agent API and console, each behind a token."""

from __future__ import annotations

import pytest
from litestar.routes import HTTPRoute, WebSocketRoute
from litestar.testing import TestClient

from channels.routes import channel_handlers
from services.api.app import build_app
from services.api.context import Services
from services.platform.settings import Settings
from services.platform.streams import Names

pytestmark = pytest.mark.unit

PROBES = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/asyncapi.json")}
CHANNEL_ROUTES = {
    ("POST", "/channels/email/inbound"),
    ("POST", "/channels/sms/twilio"),
    ("POST", "/channels/sms/twilio/status"),
    ("GET", "/channels/social/meta"),
    ("POST", "/channels/social/meta"),
    ("POST", "/channels/social/telegram"),
    ("POST", "/channels/chat/sessions"),
    ("GET", "/channels/chat/session"),
    ("GET", "/widget.js"),
    ("GET", "/csat/{token}"),  # a survey's rating link: public, for customers, like the channels
    ("GET", "/unsubscribe/{token}"),  # an unsubscribe link and its one-click POST: public, signed
    ("POST", "/unsubscribe/{token}"),
}
AGENT_API = {
    ("GET", "/api/v1/auth/me"),
    ("GET", "/api/v1/customers/lookup"),
    ("GET", "/api/v1/customers"),
    ("GET", "/api/v1/customers/{customer_id}"),
    ("GET", "/api/v1/customers/{customer_id}/timeline"),
    ("GET", "/api/v1/attachments/{sha256}"),
    ("GET", "/api/v1/cases"),
    ("GET", "/api/v1/cases/{case_id}"),
    *(
        ("POST", f"/api/v1/cases/{{case_id}}/{command}")
        for command in ("reply", "assign", "resolve", "reopen", "notes", "tags", "priority", "snooze", "transfer")
    ),
    ("GET", "/api/v1/queues"),
    ("PUT", "/api/v1/queues/{name}"),
    ("POST", "/api/v1/events/ticket"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/metrics"),
    ("GET", "/api/v1/search"),
    # Agent tools: canned responses, custom attributes, CSAT for connectors.
    ("GET", "/api/v1/canned-responses"),
    ("POST", "/api/v1/canned-responses"),
    ("DELETE", "/api/v1/canned-responses/{canned_id}"),
    ("PUT", "/api/v1/attribute-definitions/{key}"),
    ("GET", "/api/v1/attribute-definitions"),
    ("PATCH", "/api/v1/customers/{customer_id}/attributes"),
    ("PATCH", "/api/v1/cases/{case_id}/attributes"),
    ("POST", "/api/v1/cases/{case_id}/csat"),
    ("POST", "/api/v1/customers/{customer_id}/consent"),
    ("POST", "/api/v1/activities"),
    ("GET", "/api/v1/merge-suggestions"),
    ("POST", "/api/v1/merge-suggestions/{suggestion_id}/accept"),
    ("POST", "/api/v1/merge-suggestions/{suggestion_id}/reject"),
    ("POST", "/api/v1/customers/{customer_id}/merge"),
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/api/v1/agents"),
    ("POST", "/api/v1/agents"),
    ("GET", "/api/v1/agents/me"),
    ("PUT", "/api/v1/agents/me/status"),
    ("PATCH", "/api/v1/agents/{agent_id}"),
    ("GET", "/api/v1/teams"),
    ("POST", "/api/v1/teams"),
    ("PUT", "/api/v1/sla-policies/{name}"),
    ("GET", "/api/v1/sla-policies"),
    # Automation rules and their webhooks' dead letters.
    ("POST", "/api/v1/automations"),
    ("GET", "/api/v1/automations"),
    ("GET", "/api/v1/automations/{name}"),
    ("GET", "/api/v1/automations/dead-letters"),
    ("POST", "/api/v1/automations/dead-letters/retry"),
    # Segments: saved filters over the customers, and their members.
    ("POST", "/api/v1/segments"),
    ("GET", "/api/v1/segments"),
    ("GET", "/api/v1/segments/{segment_id}"),
    ("GET", "/api/v1/segments/{segment_id}/members"),
    ("GET", "/api/v1/segments/{segment_id}/members.csv"),
    ("POST", "/api/v1/campaigns"),
    ("GET", "/api/v1/campaigns"),
    ("GET", "/api/v1/campaigns/{campaign_id}"),
    ("POST", "/api/v1/campaigns/{campaign_id}/start"),
    ("POST", "/api/v1/campaigns/{campaign_id}/pause"),
}
SIGN_IN = {("POST", "/api/v1/auth/login")}  # the one agent API route without a token
CONSOLE = {("GET", "/"), ("GET", "/console.js"), ("GET", "/console.css")}


def _app(*roles: str):
    return build_app(Services(settings=Settings(), names=Names()), roles, channel_handlers())


def _served(app) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route but the OpenAPI document's own; path parameters without
    their type, as in OpenAPI."""
    return {
        (method, route.path_format)
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for method in route.methods
        if method not in ("HEAD", "OPTIONS") and not route.path.startswith("/schema")
    }


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (("gateway",), PROBES | CHANNEL_ROUTES),
        (("api",), PROBES | AGENT_API | SIGN_IN | CONSOLE),
        (("gateway", "api"), PROBES | CHANNEL_ROUTES | AGENT_API | SIGN_IN | CONSOLE),
    ],
)
def test_each_role_serves_its_routes_and_no_others(roles, expected):
    assert _served(_app(*roles)) == expected


def test_the_chat_socket_is_the_gateways():
    def sockets(app):
        return {route.path for route in app.routes if isinstance(route, WebSocketRoute)}

    assert sockets(_app("gateway")) == {"/channels/chat/ws"}
    assert sockets(_app("api")) == set()


# A well-formed request to each route (Litestar checks parameters and bodies before the handler
# asks for the token).
WELL_FORMED = {
    "/api/v1/customers/lookup": {"params": {"kind": "email", "value": "ana@example.com"}},
    "/api/v1/search": {"params": {"q": "ana"}},
    "/api/v1/cases/{case_id}/reply": {"json": {"text": "hello"}},
    "/api/v1/cases/{case_id}/assign": {"json": {"assignee": "agent-1"}},
    "/api/v1/cases/{case_id}/notes": {"json": {"text": "called back"}},
    "/api/v1/cases/{case_id}/tags": {"json": {"tags": ["vip"]}},
    "/api/v1/cases/{case_id}/priority": {"json": {"priority": "high"}},
    "/api/v1/cases/{case_id}/snooze": {"json": {"until": "2030-01-01T09:00:00+01:00"}},
    "/api/v1/cases/{case_id}/transfer": {"json": {"queue": "billing"}},
    "/api/v1/queues/{name}": {"json": {"strategy": "round_robin"}},
    "/api/v1/canned-responses": {"json": {"shortcut": "hi", "text": "Hello {{customer.name}}"}},
    "/api/v1/attribute-definitions/{key}": {"json": {"type": "text", "applies_to": "customer"}},
    "/api/v1/customers/{customer_id}/attributes": {"json": {"plan": "pro"}},
    "/api/v1/cases/{case_id}/attributes": {"json": {"order": "A-1"}},
    "/api/v1/cases/{case_id}/csat": {"json": {"score": 5}},
    "/api/v1/customers/{customer_id}/consent": {"json": {"channel": "sms", "granted": False}},
    "/api/v1/activities": {
        "json": {
            "customer": {"kind": "email", "value": "ana@example.com"},
            "type": "order.placed",
            "occurred_at": "2026-11-26T10:00:00+00:00",
            "reference": "ORD-1",
        }
    },
    "/api/v1/customers/{customer_id}/merge": {"json": {"other_id": "00000000-0000-0000-0000-000000000002"}},
    "/api/v1/agents": {"json": {"email": "ana@example.com", "name": "Ana", "role": "agent"}},
    "/api/v1/agents/me/status": {"json": {"status": "online"}},
    "/api/v1/agents/{agent_id}": {"json": {"capacity": 3}},
    "/api/v1/teams": {"json": {"name": "billing"}},
    "/api/v1/sla-policies/{name}": {"json": {"first_response": {"normal": "PT15M"}}},
    "/api/v1/automations": {"json": {"name": "r", "on": "case.Classified", "then": [{"add_tags": ["a"]}]}},
    "/api/v1/automations/dead-letters/retry": {"json": {}},
    "/api/v1/segments": {"json": {"name": "vip", "filter": {"all": [{"field": "tags", "op": "eq", "value": "vip"}]}}},
    "/api/v1/campaigns": {
        "json": {"name": "sale", "segment_id": "00000000-0000-0000-0000-000000000004", "channel": "sms", "text": "hi"}
    },
}


@pytest.mark.parametrize(("method", "path"), sorted(AGENT_API))
def test_every_agent_api_route_refuses_a_request_without_a_token(method, path):
    concrete = (
        path.replace("{customer_id}", "00000000-0000-0000-0000-000000000001")
        .replace("{case_id}", "00000000-0000-0000-0000-000000000002")
        .replace("{sha256}", "ab" * 32)
        .replace("{canned_id}", "00000000-0000-0000-0000-000000000003")
        .replace("{key}", "plan")
        .replace("{suggestion_id}", "00000000-0000-0000-0000-000000000003")
        .replace("{agent_id}", "00000000-0000-0000-0000-000000000003")
        .replace("{name}", "gold")
        .replace("{segment_id}", "00000000-0000-0000-0000-000000000004")
        .replace("{campaign_id}", "00000000-0000-0000-0000-000000000005")
    )
    with TestClient(_app("api")) as client:
        response = client.request(method, concrete, **WELL_FORMED.get(path, {}))
    assert response.status_code == 401, (path, response.text)
    assert response.json() == {"error": "unauthorized", "detail": "missing bearer token"}
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_console_and_its_assets_need_no_token():
    with TestClient(_app("api")) as client:
        page, script, style = client.get("/"), client.get("/console.js"), client.get("/console.css")
    assert page.status_code == script.status_code == style.status_code == 200
    assert page.headers["content-type"].startswith("text/html") and 'src="/console.js"' in page.text
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"


def test_the_widget_script_is_the_gateways_and_needs_no_token():
    with TestClient(_app("gateway")) as client:
        script = client.get("/widget.js", headers={"accept-encoding": "identity"})
    assert script.status_code == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert b"widget-launcher" in script.content
    with TestClient(_app("api")) as client:
        assert client.get("/widget.js").status_code == 404
