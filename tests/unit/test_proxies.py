"""Which proxy headers to believe (channels/proxies.py): pure functions over an ASGI scope."""

from __future__ import annotations

import pytest

from channels.proxies import client_ip, request_url, trusted_networks

pytestmark = pytest.mark.unit


def _scope(peer: str = "127.0.0.1", path: str = "/channels/sms/twilio", query: bytes = b"", scheme: str = "http"):
    return {
        "type": "http",
        "client": (peer, 50000),
        "server": ("127.0.0.1", 8000),
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
    }


HEADERS = {
    "host": "10.1.2.3:8000",
    "x-forwarded-proto": "https",
    "x-forwarded-host": "sb.example.com, evil",
    "x-forwarded-for": "198.51.100.7, 203.0.113.5, 10.0.0.2",
}


def test_the_setting_takes_ips_cidrs_strings_and_lists():
    assert trusted_networks(None) == () and trusted_networks("") == ()
    nets = trusted_networks(" 10.0.0.0/8 , 192.168.1.1,::1")
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.168.1.1/32", "::1/128"]
    assert trusted_networks(["10.0.0.0/8"]) == trusted_networks("10.0.0.0/8")
    with pytest.raises(ValueError):
        trusted_networks("10.0.0.0/8, not-an-ip")


def test_forwarded_headers_count_only_from_a_trusted_peer():
    nets = trusted_networks("10.0.0.0/8")
    trusted, untrusted = _scope(peer="10.0.0.1"), _scope(peer="198.51.100.1")
    assert request_url(trusted, HEADERS, public_url=None, networks=nets) == "https://sb.example.com/channels/sms/twilio"
    assert request_url(untrusted, HEADERS, public_url=None, networks=nets) == "http://10.1.2.3:8000/channels/sms/twilio"
    assert request_url(trusted, HEADERS, public_url=None, networks=()) == "http://10.1.2.3:8000/channels/sms/twilio"


def test_the_public_url_wins_and_keeps_path_prefix_and_raw_query():
    nets = trusted_networks("10.0.0.0/8")
    scope = _scope(peer="10.0.0.1", query=b"a=1&b=%C3%A9")
    for public in ("https://pub.example.com/base", "https://pub.example.com/base/"):
        assert request_url(scope, HEADERS, public_url=public, networks=nets) == (
            "https://pub.example.com/base/channels/sms/twilio?a=1&b=%C3%A9"
        )


def test_client_ip_walks_forwarded_for_from_the_right_past_trusted_hops():
    nets = trusted_networks("10.0.0.0/8")
    assert client_ip(_scope(peer="10.0.0.1"), HEADERS, nets) == "203.0.113.5"
    assert client_ip(_scope(peer="198.51.100.1"), HEADERS, nets) == "198.51.100.1"
    assert client_ip(_scope(peer="10.0.0.1"), {}, nets) == "10.0.0.1"
    assert client_ip(_scope(peer="10.0.0.1"), {"x-forwarded-for": "garbage, 10.0.0.9"}, nets) == "10.0.0.1"
    assert client_ip(_scope(peer="10.0.0.1"), {"x-forwarded-for": "[2001:db8::1]:443"}, nets) == "2001:db8::1"


def test_the_chat_limits_count_the_client_behind_a_trusted_proxy_only():
    from channels.chat_gateway import client_address  # noqa: PLC0415

    scope = {**_scope(peer="10.0.0.1"), "headers": [(b"x-forwarded-for", b"203.0.113.5")]}
    assert client_address(scope, "10.0.0.0/8") == "203.0.113.5"
    assert client_address(scope, None) == "10.0.0.1"
    assert client_address({**scope, "client": ("198.51.100.1", 1)}, "10.0.0.0/8") == "198.51.100.1"
    assert client_address({"type": "http", "headers": []}, "10.0.0.0/8") == "unknown"
