"""The console page works under its Content-Security-Policy: nothing inline, script that parses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from services.api.headers import API_CSP, CONSOLE_CSP, policy_for

pytestmark = pytest.mark.unit

STATIC = Path(__file__).parents[2] / "services" / "api" / "static"


def test_the_page_has_no_inline_script_style_or_handlers():
    html = (STATIC / "console.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/console.js">']
    assert '<link rel="stylesheet" href="/console.css">' in html
    assert "<style" not in html and not re.search(r"\sstyle=|\son[a-z]+=|javascript:", html)


def test_the_script_gets_a_ticket_and_never_puts_the_token_in_a_url():
    script = (STATIC / "console.js").read_text()
    assert "access_token" not in script and "?token" not in script
    assert re.search(r'api\("/api/v1/events/ticket", \{ method: "POST"[^}]*\}\)', script)
    # Every call of the API sends the token in the Authorization header, and only there.
    assert 'authorization: "Bearer " + S.token' in script
    assert 'new EventSource("/api/v1/events?ticket=" + encodeURIComponent(ticket))' in script


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to parse the script with")
def test_the_script_parses():
    subprocess.run(["node", "--check", str(STATIC / "console.js")], check=True, capture_output=True, timeout=30)


def test_policies_per_path():
    assert policy_for("/") == policy_for("/console.js") == CONSOLE_CSP
    assert "'unsafe-inline'" not in CONSOLE_CSP and "frame-ancestors 'none'" in CONSOLE_CSP
    assert policy_for("/api/v1/cases") == policy_for("/channels/sms/twilio") == API_CSP
    assert policy_for("/schema/swagger") == "frame-ancestors 'none'"
