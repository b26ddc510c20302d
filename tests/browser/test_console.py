"""The agent console in a real browser, as two agents work a shift: a visitor's chat arrives live,
one agent takes it and answers with a canned response that the visitor's widget shows, the other
agent sees the case leave Unassigned without reloading, a search never moves the reply box to
another case, and a resolved case leaves the agent's view."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.fixtures.providers import eventually

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

PASSWORD = "correct horse battery staple"


def _widget_page(server_url: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Example shop</title></head>"
        "<body><h1>Example shop</h1>"
        f'<script src="{server_url}/widget.js" data-switchboard-url="{server_url}" async></script></body></html>'
    )


async def _sign_in(page, url: str, email: str) -> None:
    from playwright.async_api import expect  # noqa: PLC0415

    await page.goto(url)
    await page.get_by_test_id("login-email").fill(email)
    await page.get_by_test_id("login-password").fill(PASSWORD)
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("presence")).to_be_visible()
    await expect(page.locator("#live")).to_have_text("live")


async def test_two_agents_work_a_chat_from_arrival_to_resolution(server, admin_headers, browser, site, screenshot_path):
    from playwright.async_api import expect  # noqa: PLC0415

    expect.set_options(timeout=20_000)  # live updates cross NATS, the core and the projector first

    suffix = secrets.token_hex(3)
    ada, bob = f"ada-{suffix}@example.com", f"bob-{suffix}@example.com"
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers, timeout=30) as api:
        for email, name in ((ada, "Ada Lovelace"), (bob, "Bob Kahn")):
            created = await api.post(
                "/api/v1/agents", json={"email": email, "name": name, "role": "agent", "password": PASSWORD}
            )
            assert created.status_code in (200, 201), created.text
        canned = await api.post(
            "/api/v1/canned-responses",
            json={"shortcut": "ship", "text": "Hi {{customer.name}}, {{agent.name}} here: it ships today."},
        )
        assert canned.status_code == 201, canned.text
        listed = await api.get("/api/v1/canned-responses", headers={"Sb-Min-Position": str(canned.json()["position"])})
        assert [c["shortcut"] for c in listed.json()["items"]] == ["ship"]

        # Two agents sign in, each on their own page, both looking at Unassigned.
        first, second = await browser.new_page(), await browser.new_page()
        await first.set_viewport_size({"width": 1400, "height": 860})
        await _sign_in(first, server.http_url + "/", ada)
        await _sign_in(second, server.http_url + "/", bob)
        for page in (first, second):
            await page.get_by_test_id("view-unassigned").click()
            await expect(page.get_by_test_id("view-unassigned")).to_have_attribute("aria-current", "page")

        # A visitor writes from the company's website (another origin), through the widget.
        visitor = await browser.new_page()
        await visitor.goto(site.add("/", _widget_page(server.http_url)))
        await visitor.get_by_test_id("widget-launcher").click()
        await visitor.get_by_test_id("widget-input").fill("My parcel never arrived")
        await visitor.get_by_test_id("widget-send").click()

        # It arrives live in both agents' Unassigned views, with its preview.
        row = first.get_by_test_id("case-row").filter(has_text="My parcel never arrived")
        await expect(row).to_have_count(1)
        await expect(second.get_by_test_id("case-row").filter(has_text="My parcel never arrived")).to_have_count(1)
        case_id = await row.get_attribute("data-case-id")
        await first.screenshot(path=screenshot_path("console-unassigned"))

        # The first agent opens it, takes it, and answers with the canned response.
        await row.click()
        await expect(first.get_by_test_id("timeline-item").filter(has_text="My parcel never arrived")).to_have_count(1)
        await first.get_by_test_id("case-assign").click()
        await expect(second.get_by_test_id("case-row").filter(has_text="My parcel never arrived")).to_have_count(0)
        await first.get_by_test_id("canned-picker").select_option(value=canned.json()["id"])
        await expect(first.get_by_test_id("reply-input")).to_have_value(
            "Hi {{customer.name}}, {{agent.name}} here: it ships today."
        )
        await first.get_by_test_id("reply-send").click()

        # The visitor's widget shows the answer, placeholders filled; so does the console.
        answer = visitor.locator("[data-testid=widget-message][data-from=agent]")
        await expect(answer).to_have_count(1)
        await expect(answer).to_have_text("Hi, Ada Lovelace here: it ships today.")  # an anonymous visitor
        await expect(first.get_by_test_id("timeline-item").filter(has_text="it ships today")).to_have_count(1)
        await first.screenshot(path=screenshot_path("console-case"))

        # A supervisor (here the admin, with an API token) sees the queue and the agents' load.
        boss = await browser.new_page()
        await boss.set_viewport_size({"width": 1400, "height": 860})
        await boss.goto(server.http_url + "/")
        await boss.get_by_text("Sign in with an API token instead").click()
        await boss.locator("#loginToken").fill(admin_headers["Authorization"].split(" ", 1)[1])
        await boss.get_by_role("button", name="Use token").click()
        await expect(boss.locator("#live")).to_have_text("live")
        await boss.get_by_test_id("view-dashboard").click()
        agents = boss.get_by_test_id("dashboard-agents")
        await expect(agents.locator("tr", has_text="Ada Lovelace")).to_contain_text("1 / 5")
        await expect(boss.get_by_test_id("dashboard-queues").locator("tr", has_text="chat")).to_be_visible()
        await boss.screenshot(path=screenshot_path("console-dashboard"))

        # A search shows other people but never moves the reply box to another case.
        await first.get_by_test_id("search-input").fill("parcel")
        await first.get_by_test_id("search-input").press("Enter")
        await expect(first.get_by_test_id("search-result").first).to_be_visible()
        await first.get_by_test_id("reply-input").fill("Anything else I can do?")
        await first.get_by_test_id("reply-send").click()
        view = await eventually(
            lambda: api.get(f"/api/v1/cases/{case_id}"),
            lambda r: any((m.get("text") or "") == "Anything else I can do?" for m in r.json()["messages"]),
        )
        assert view.json()["assignee"] is not None

        # Resolved, it leaves the agent's own view.
        await first.get_by_test_id("view-mine").click()
        await expect(first.locator(f'[data-testid=case-row][data-case-id="{case_id}"]')).to_have_count(1)
        await first.locator(f'[data-testid=case-row][data-case-id="{case_id}"]').click()
        await first.get_by_test_id("case-resolve").click()
        await expect(first.locator(f'[data-testid=case-row][data-case-id="{case_id}"]')).to_have_count(0)
        assert (await api.get(f"/api/v1/cases/{case_id}")).json()["status"] == "resolved"

        # On a phone-sized screen the views sit behind a menu and the list has the whole width.
        await second.set_viewport_size({"width": 390, "height": 800})
        await expect(second.get_by_test_id("view-all")).to_be_hidden()
        await second.get_by_role("button", name="Views").click()
        await second.get_by_test_id("view-all").click()
        await expect(second.get_by_test_id("view-all")).to_be_hidden()  # the menu closes on a choice
        await second.screenshot(path=screenshot_path("console-phone"))
