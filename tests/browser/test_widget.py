"""The chat widget in a real browser, embedded in a website of another origin, as a visitor uses it;
the agent side goes through the API as the console would."""

from __future__ import annotations

import json
import re
import secrets

import httpx
import pytest

from channels.chat import identity_hash
from tests.fixtures.providers import eventually

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def _page_html(server_url: str, nonce: str, **data: str) -> str:
    attributes = "".join(f' data-{name.replace("_", "-")}="{value}"' for name, value in data.items())
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Example shop</title>"
        f"<style nonce={nonce}>body{{font:16px sans-serif;margin:40px;background:#fafafa}}"
        # Page CSS that would wreck the widget if it leaked into it.
        "div,button,textarea{display:none!important;color:red!important}h1{color:#333}</style></head>"
        "<body><h1>Example shop</h1><p>Questions? Chat with us.</p>"
        f'<script src="{server_url}/widget.js" data-switchboard-url="{server_url}"{attributes} nonce={nonce} async>'
        "</script></body></html>"
    )


def _strict_csp(server_url: str, nonce: str) -> dict[str, str]:
    ws_url = server_url.replace("http://", "ws://")
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            f"connect-src {server_url} {ws_url}; img-src 'none'; base-uri 'none'; form-action 'none'"
        )
    }


class Watch:
    """Every request, WebSocket and CSP complaint of a page."""

    def __init__(self, page):
        self.urls: list[str] = []
        self.csp_errors: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("websocket", lambda ws: self.urls.append(ws.url))
        page.on(
            "console",
            lambda message: self.csp_errors.append(message.text) if "Content Security Policy" in message.text else None,
        )

    def foreign(self, *origins: str) -> list[str]:
        allowed = tuple(origins) + tuple(o.replace("http://", "ws://") for o in origins)
        return [url for url in self.urls if not url.startswith(allowed)]


async def _session_of(page) -> dict:
    raw = await page.evaluate(
        "() => { const k = Object.keys(localStorage).find((k) => k.startsWith('switchboard-chat:'));"
        " return k ? localStorage.getItem(k) : null; }"
    )
    return json.loads(raw) if raw else {}


async def _case_of_session(client: httpx.AsyncClient, session_id: str) -> tuple[dict, str]:
    async def lookup():
        return await client.get("/api/v1/customers/lookup", params={"kind": "chat", "value": session_id})

    customer = (await eventually(lookup, lambda r: r.status_code == 200)).json()

    async def timeline():
        return (await client.get(f"/api/v1/customers/{customer['id']}/timeline")).json()["items"]

    items = await eventually(timeline, lambda items: bool(items))
    return customer, items[0]["case_id"]


async def _visitor_texts(client: httpx.AsyncClient, customer_id: str) -> list[str]:
    items = (await client.get(f"/api/v1/customers/{customer_id}/timeline", params={"limit": 100})).json()["items"]
    return [i["text"] for i in reversed(items) if i["direction"] == "inbound"]


async def _outbox_count(server) -> int:
    js = server.sb.jetstream()
    return (await js.stream_info(server.sb.names.chat_outbox)).state.messages


async def test_a_visitor_chats_with_an_agent_across_reloads_and_a_lost_connection(
    server, admin_headers, browser, site, screenshot_path
):
    from playwright.async_api import expect  # noqa: PLC0415

    nonce = secrets.token_urlsafe(12)
    url = site.add("/", _page_html(server.http_url, nonce), _strict_csp(server.http_url, nonce))
    page = await browser.new_page()
    watch = Watch(page)
    await page.goto(url)

    launcher = page.get_by_test_id("widget-launcher")
    await expect(launcher).to_be_visible()  # the page's `button{display:none}` does not reach it
    await expect(launcher).to_have_attribute("aria-label", "Open chat")
    await page.screenshot(path=screenshot_path("widget-launcher"))
    await launcher.click()
    await expect(launcher).to_have_attribute("aria-expanded", "true")
    field = page.get_by_test_id("widget-input")
    await expect(field).to_be_focused()
    await field.fill("Hello, where is my order 1234?")
    await page.get_by_test_id("widget-send").click()

    messages = page.get_by_test_id("widget-message")
    await expect(messages).to_have_count(1)
    await expect(messages.nth(0)).to_have_attribute("data-state", "sent")  # acknowledged by the gateway

    session = await _session_of(page)
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers, timeout=30) as client:
        customer, case_id = await _case_of_session(client, session["session"])
        reply = await client.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Hi! It ships today."})
        assert reply.status_code == 200, reply.text
        agent = page.locator("[data-testid=widget-message][data-from=agent]")
        await expect(agent).to_have_text(["Hi! It ships today."])  # live, no reload
        await page.screenshot(path=screenshot_path("widget-conversation"))

        # A new page load: the same session and conversation, the panel closed until asked.
        await page.reload()
        await expect(messages).to_have_count(2)
        await expect(messages).to_have_text(["Hello, where is my order 1234?", "Hi! It ships today."])
        await launcher.click()
        await expect(messages.nth(1)).to_be_visible()
        assert (await _session_of(page))["session"] == session["session"]
        status = page.get_by_test_id("widget-status")
        await expect(status).to_have_attribute("data-connection", "open")  # connected again

        # The connection is lost: the network goes away and the server drops the socket.
        await browser.set_offline(True)
        gateway = server.chat_gateway
        for listener in list(gateway.listeners.get(session["session"], ())):
            gateway._close(listener, 1013, "test: connection lost")
        await expect(status).to_have_text(re.compile("Reconnecting"))

        # Meanwhile the agent answers, and the visitor types a message that cannot leave yet.
        before = await _outbox_count(server)
        await client.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Sent while you were away"})
        await eventually(lambda: _outbox_count(server), lambda n: n == before + 1)
        await field.fill("Are you still there?")
        await field.press("Enter")
        await expect(messages.nth(2)).to_have_attribute("data-state", "pending")
        await page.screenshot(path=screenshot_path("widget-offline"))

        await browser.set_offline(False)
        await expect(status).to_have_attribute("data-connection", "open")
        await expect(messages.nth(2)).to_have_attribute("data-state", "sent")
        await expect(agent.filter(has_text="Sent while you were away")).to_have_count(1)
        # Replies come in stream order, the backlog before the live ones: once the next live reply is
        # shown, nothing of the backlog is still on its way. Each was shown once.
        await client.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Yes, still here."})
        await expect(agent).to_have_text(["Hi! It ships today.", "Sent while you were away", "Yes, still here."])
        await expect(messages).to_have_count(5)
        assert sorted(await messages.all_text_contents()) == sorted(
            [
                "Hello, where is my order 1234?",
                "Hi! It ships today.",
                "Sent while you were away",
                "Are you still there?",
                "Yes, still here.",
            ]
        )
        await page.screenshot(path=screenshot_path("widget-reconnected"))

        # The message typed while offline was recorded once.
        texts = await eventually(
            lambda: _visitor_texts(client, customer["id"]), lambda texts: "Are you still there?" in texts
        )
        assert texts == ["Hello, where is my order 1234?", "Are you still there?"]

    assert watch.foreign(site.origin, server.http_url) == []  # no third-party requests
    assert watch.csp_errors == []  # it works under the page's strict CSP


async def test_a_signed_in_visitor_is_linked_to_the_companys_customer_id(
    server, settings, admin_headers, browser, site
):
    from playwright.async_api import expect  # noqa: PLC0415

    nonce = secrets.token_urlsafe(12)
    user_id, email = f"cust-{secrets.token_hex(4)}", "ada@example.com"
    signed = identity_hash(settings.chat_identity_secret, user_id, email)
    html = _page_html(server.http_url, nonce, user_id=user_id, email=email, identity_hash=signed)
    page = await browser.new_page()
    await page.goto(site.add("/account", html, _strict_csp(server.http_url, nonce)))
    await page.get_by_test_id("widget-launcher").click()
    await page.get_by_test_id("widget-input").fill("Change my delivery address please")
    await page.get_by_test_id("widget-send").click()
    await expect(page.get_by_test_id("widget-message")).to_have_attribute("data-state", "sent")

    session = await _session_of(page)
    assert session["uid"] == user_id
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers, timeout=30) as client:

        async def lookup():
            return await client.get("/api/v1/customers/lookup", params={"kind": "external", "value": user_id})

        customer = (await eventually(lookup, lambda r: r.status_code == 200)).json()
    kinds = {(i["kind"], i["value"]) for i in customer["identities"]}
    assert {("external", user_id), ("chat", session["session"]), ("email", email)} <= kinds


async def test_the_widget_is_keyboard_usable_and_announces_replies(server, admin_headers, browser, site):
    from playwright.async_api import expect  # noqa: PLC0415

    nonce = secrets.token_urlsafe(12)
    page = await browser.new_page()
    await page.goto(site.add("/", _page_html(server.http_url, nonce), _strict_csp(server.http_url, nonce)))
    launcher = page.get_by_test_id("widget-launcher")
    # Its own style applies under the page's CSP: a round button in the bottom-right corner.
    box = await launcher.bounding_box()
    assert box["x"] > 900 and box["y"] > 600 and box["width"] == box["height"] == 56

    await launcher.focus()
    await page.keyboard.press("Enter")
    field = page.get_by_test_id("widget-input")
    await expect(field).to_be_focused()
    await expect(page.get_by_label("Your message")).to_have_count(1)
    await page.keyboard.type("Hello")
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("widget-message")).to_have_attribute("data-state", "sent")
    await expect(page.get_by_role("log")).to_have_attribute("aria-live", "polite")
    await page.keyboard.press("Escape")
    await expect(field).to_be_hidden()
    await expect(launcher).to_be_focused()
    await expect(launcher).to_have_attribute("aria-expanded", "false")

    session = await _session_of(page)
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers, timeout=30) as client:
        _, case_id = await _case_of_session(client, session["session"])
        await client.post(f"/api/v1/cases/{case_id}/reply", json={"text": "We are on it"})
    await expect(launcher).to_have_attribute("aria-label", "Open chat (1 new)")  # arrived while closed
    await launcher.click()
    await expect(launcher).to_have_attribute("aria-label", "Close chat")
    await expect(page.get_by_role("log").get_by_text("We are on it")).to_be_visible()


async def test_an_expired_session_is_replaced_and_the_unsent_message_goes_with_the_new_one(
    server, admin_headers, browser, site
):
    from playwright.async_api import expect  # noqa: PLC0415

    nonce = secrets.token_urlsafe(12)
    page = await browser.new_page()
    await page.goto(site.add("/", _page_html(server.http_url, nonce), _strict_csp(server.http_url, nonce)))
    await page.get_by_test_id("widget-launcher").click()
    field = page.get_by_test_id("widget-input")
    await field.fill("First visit")
    await field.press("Enter")
    messages = page.get_by_test_id("widget-message")
    await expect(messages.nth(0)).to_have_attribute("data-state", "sent")
    status = page.get_by_test_id("widget-status")
    await expect(status).to_have_attribute("data-connection", "open")
    old = (await _session_of(page))["session"]

    # The session store forgets the session (retention), and the socket drops.
    await browser.set_offline(True)
    await server.services.chat.kv.delete(old)
    for listener in list(server.chat_gateway.listeners.get(old, ())):
        server.chat_gateway._close(listener, 1013, "test: connection lost")
    await expect(status).to_have_text(re.compile("Reconnecting"))
    await field.fill("Back again")
    await field.press("Enter")
    await expect(messages.nth(1)).to_have_attribute("data-state", "pending")
    await browser.set_offline(False)

    await expect(messages.nth(1)).to_have_attribute("data-state", "sent")
    await expect(messages).to_have_text(["First visit", "Back again"])
    new = (await _session_of(page))["session"]
    assert new and new != old
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers, timeout=30) as client:
        customer, _ = await _case_of_session(client, new)
        texts = await eventually(lambda: _visitor_texts(client, customer["id"]), lambda texts: bool(texts))
    assert texts == ["Back again"]


async def test_two_tabs_of_the_site_share_one_conversation(server, admin_headers, browser, site):
    from playwright.async_api import expect  # noqa: PLC0415

    nonce = secrets.token_urlsafe(12)
    url = site.add("/", _page_html(server.http_url, nonce), _strict_csp(server.http_url, nonce))
    first = await browser.new_page()
    await first.goto(url)
    await first.get_by_test_id("widget-launcher").click()
    await first.get_by_test_id("widget-input").fill("From the first tab")
    await first.get_by_test_id("widget-send").click()
    await expect(first.get_by_test_id("widget-message")).to_have_attribute("data-state", "sent")

    second = await browser.new_page()
    await second.goto(url)
    await second.get_by_test_id("widget-launcher").click()
    await expect(second.get_by_test_id("widget-status")).to_have_attribute("data-connection", "open")
    await second.get_by_test_id("widget-input").fill("From the second tab")
    await second.get_by_test_id("widget-send").click()
    both = ["From the first tab", "From the second tab"]
    await expect(second.get_by_test_id("widget-message")).to_have_text(both)
    await expect(first.get_by_test_id("widget-message")).to_have_text(both)  # through the shared storage

    session = await _session_of(first)
    assert (await _session_of(second))["session"] == session["session"]
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers, timeout=30) as client:
        customer, case_id = await _case_of_session(client, session["session"])
        await client.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Seen in both"})
        for page in (first, second):
            await expect(page.get_by_test_id("widget-message")).to_have_text([*both, "Seen in both"])
        texts = await eventually(lambda: _visitor_texts(client, customer["id"]), lambda texts: len(texts) >= 2)
        assert texts == both
    await first.reload()
    await expect(first.get_by_test_id("widget-message")).to_have_text([*both, "Seen in both"])
