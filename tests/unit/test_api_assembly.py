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
}
AGENT_API = {
    ("GET", "/api/v1/customers/lookup"),
    ("GET", "/api/v1/customers"),
    ("GET", "/api/v1/customers/{customer_id}"),
    ("GET", "/api/v1/customers/{customer_id}/timeline"),
    ("GET", "/api/v1/attachments/{sha256}"),
    ("GET", "/api/v1/cases"),
    ("GET", "/api/v1/cases/{case_id}"),
    *(
        ("POST", f"/api/v1/cases/{{case_id}}/{command}")
        for command in ("reply", "assign", "resolve", "reopen", "notes", "tags", "priority", "snooze")
    ),
    ("POST", "/api/v1/events/ticket"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/metrics"),
    ("PUT", "/api/v1/sla-policies/{name}"),
    ("GET", "/api/v1/sla-policies"),
}
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
        (("api",), PROBES | AGENT_API | CONSOLE),
        (("gateway", "api"), PROBES | CHANNEL_ROUTES | AGENT_API | CONSOLE),
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
    "/api/v1/cases/{case_id}/reply": {"json": {"text": "hello"}},
    "/api/v1/cases/{case_id}/assign": {"json": {"assignee": "agent-1"}},
    "/api/v1/cases/{case_id}/notes": {"json": {"text": "called back"}},
    "/api/v1/cases/{case_id}/tags": {"json": {"tags": ["vip"]}},
    "/api/v1/cases/{case_id}/priority": {"json": {"priority": "high"}},
    "/api/v1/cases/{case_id}/snooze": {"json": {"until": "2030-01-01T09:00:00+01:00"}},
    "/api/v1/sla-policies/{name}": {"json": {"first_response": {"normal": "PT15M"}}},
}


@pytest.mark.parametrize(("method", "path"), sorted(AGENT_API))
def test_every_agent_api_route_refuses_a_request_without_a_token(method, path):
    concrete = (
        path.replace("{customer_id}", "00000000-0000-0000-0000-000000000001")
        .replace("{case_id}", "00000000-0000-0000-0000-000000000002")
        .replace("{sha256}", "ab" * 32)
        .replace("{name}", "gold")
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
