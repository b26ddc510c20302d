"""The email channel's pure rules for abuse and identity: what one message may cost to read, and who
vouches for its From. No I/O."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from channels.email.parse import EmailBudget, OverBudget, parse_email
from channels.email.trust import SenderTrust, TrustedNetworks, parse_authserv_ids, single_node_trust
from events.interactions import Identity
from services.domain.identity import registers_on_claims_alone
from services.platform.settings import load_settings

RECEIVED_AT = datetime(2024, 6, 20, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parents[1] / "fixtures" / "email"


def parse(raw: bytes, budget: EmailBudget | None = None, trust: SenderTrust | None = None):
    return parse_email(raw, received_at=RECEIVED_AT, budget=budget, trust=trust)


def multipart(parts: list[bytes], boundary: str = "b") -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return (
        b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="
        + boundary.encode()
        + b"\r\n\r\n"
        + body
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )


def attachment(name: str, data: bytes) -> bytes:
    return (
        f'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="{name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + base64.encodebytes(data)


def html_message(html: str) -> bytes:
    return ("From: a@example.org\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html).encode()


# --- the budget ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.eml")))
def test_real_world_mail_is_within_the_default_budget(name):
    raw = (FIXTURES / name).read_bytes()
    try:
        unbudgeted = parse(raw)
    except Exception as exc:  # noqa: BLE001 — a fixture that is malformed without a budget stays so
        with pytest.raises(type(exc)):
            parse(raw, EmailBudget())
        return
    assert parse(raw, EmailBudget()) == unbudgeted


def test_too_many_parts_is_over_budget_as_size():
    raw = multipart([b"Content-Type: text/plain\r\n\r\nx"] * 6)
    assert parse(raw, EmailBudget(max_parts=7)).interaction.text  # 6 parts and the container
    with pytest.raises(OverBudget) as refused:
        parse(raw, EmailBudget(max_parts=6))
    assert (refused.value.limit, refused.value.structural) == ("mime_parts", False)


def test_too_many_attachments_is_over_budget():
    raw = multipart([attachment(f"f{i}.bin", bytes([i]) * 10) for i in range(4)])
    assert len(parse(raw, EmailBudget(max_attachments=4)).interaction.attachments) == 4
    with pytest.raises(OverBudget) as refused:
        parse(raw, EmailBudget(max_attachments=3))
    assert refused.value.limit == "attachments"


def test_too_many_decoded_bytes_is_over_budget():
    raw = multipart([attachment("a.bin", b"a" * 3000), attachment("b.bin", b"b" * 3000)])
    parse(raw, EmailBudget(max_decoded_bytes=6000))
    with pytest.raises(OverBudget) as refused:
        parse(raw, EmailBudget(max_decoded_bytes=5999))
    assert refused.value.limit == "decoded_bytes"


def test_html_tag_flood_is_over_budget_as_structure():
    raw = html_message("<b>x</b>" * 100)
    assert parse(raw, EmailBudget(max_html_tags=200)).interaction.text
    with pytest.raises(OverBudget) as refused:
        parse(raw, EmailBudget(max_html_tags=199))
    assert (refused.value.limit, refused.value.structural) == ("html_tags", True)


def test_html_tags_count_across_all_parts():
    part = b"Content-Type: text/html\r\n\r\n" + b"<i>y</i>" * 30
    raw = multipart([part, part])
    with pytest.raises(OverBudget) as refused:
        parse(raw, EmailBudget(max_html_tags=100))  # 60 in each, 120 in all
    assert refused.value.limit == "html_tags"


def test_deep_html_nesting_is_over_budget():
    raw = html_message("<div>" * 50 + "deep" + "</div>" * 50)
    assert parse(raw, EmailBudget(max_html_depth=60)).interaction.text == "deep"
    with pytest.raises(OverBudget) as refused:
        parse(raw, EmailBudget(max_html_depth=40))
    assert (refused.value.limit, refused.value.structural) == ("html_depth", True)


def test_deep_mime_nesting_is_over_budget():
    depth = 10
    head = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    body = b"".join(
        f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode() for i in range(depth)
    )
    raw = head + body + b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % depth
    assert parse(raw, EmailBudget(max_mime_depth=depth + 1)).interaction.text == "deep"
    with pytest.raises(OverBudget) as refused:
        parse(raw, EmailBudget(max_mime_depth=depth - 1))
    assert (refused.value.limit, refused.value.structural) == ("mime_depth", True)


def test_over_budget_survives_the_process_boundary():
    import pickle  # noqa: PLC0415

    again = pickle.loads(pickle.dumps(OverBudget("html_tags", "more than 5 HTML tags", structural=True)))
    assert (again.limit, again.detail, again.structural, str(again)) == (
        "html_tags",
        "more than 5 HTML tags",
        True,
        "more than 5 HTML tags",
    )


def test_budget_defaults_come_from_settings():
    settings = load_settings(environ={"SWITCHBOARD_EMAIL_MAX_PARTS": "7", "SWITCHBOARD_EMAIL_MAX_HTML_TAGS": "9"})
    budget = EmailBudget.from_settings(settings)
    assert (budget.max_parts, budget.max_html_tags, budget.max_attachments) == (7, 9, 50)


# --- who vouches for From ------------------------------------------------------------------------

TRUSTED_MX = frozenset({"mx.shop.test"})


def mail(*headers: str, sender: str = "Ann <ann@example.org>") -> bytes:
    lines = [*headers, f"From: {sender}", "Subject: hi", "Message-ID: <m1@example.org>", "", "Hello"]
    return "\r\n".join(lines).encode()


def sender_of(raw: bytes, trust: SenderTrust | None) -> Identity:
    return parse(raw, trust=trust).interaction.identities[0]


def test_without_any_trust_from_is_a_claim():
    assert sender_of(mail(), SenderTrust()) == Identity("email", "ann@example.org", verified=False)


def test_a_trusted_relay_vouches_for_from():
    assert sender_of(mail(), SenderTrust(upstream_vouches=True)).verified


def test_callers_without_a_door_keep_the_old_assertion():
    assert sender_of(mail(), None).verified  # the pure parser's own tests and tools


DMARC_PASS = (
    "Authentication-Results: mx.shop.test; spf=pass smtp.mailfrom=example.org; "
    "dkim=pass (good signature) header.i=@example.org; dmarc=pass (p=REJECT; dis=none) header.from=Example.org"
)


def test_dmarc_pass_from_a_trusted_authserv_id_through_an_authenticated_upstream_verifies():
    trust = SenderTrust(upstream_authenticated=True, authserv_ids=TRUSTED_MX)
    assert sender_of(mail(DMARC_PASS), trust).verified


def test_the_same_header_from_an_unauthenticated_peer_is_ignored():
    trust = SenderTrust(upstream_authenticated=False, authserv_ids=TRUSTED_MX)
    assert not sender_of(mail(DMARC_PASS), trust).verified


@pytest.mark.parametrize(
    "header",
    [
        "Authentication-Results: mx.other.test; dmarc=pass header.from=example.org",  # not our authserv-id
        "Authentication-Results: mx.shop.test; dmarc=fail header.from=example.org",
        "Authentication-Results: mx.shop.test; dmarc=pass header.from=evil.test",  # another domain's pass
        "Authentication-Results: mx.shop.test; dkim=pass header.i=@example.org",  # DKIM alone is not alignment
        "Authentication-Results: mx.shop.test; dmarc=pass",
        "Authentication-Results: mx.shop.test; dmarc=pass header.from=",
        "Authentication-Results: ;;; dmarc=pass header.from=example.org",
        "Authentication-Results: mx.shop.test (dmarc=pass header.from=example.org)",
    ],
)
def test_anything_short_of_our_dmarc_pass_for_the_from_domain_leaves_a_claim(header):
    trust = SenderTrust(upstream_authenticated=True, authserv_ids=TRUSTED_MX)
    assert not sender_of(mail(header), trust).verified


def test_only_the_topmost_header_of_a_trusted_authserv_id_counts():
    # Our MX adds its verdict on top; a lower one with our id was written by the sender.
    ours = "Authentication-Results: mx.shop.test; dmarc=fail header.from=example.org"
    trust = SenderTrust(upstream_authenticated=True, authserv_ids=TRUSTED_MX)
    assert not sender_of(mail(ours, DMARC_PASS), trust).verified
    assert sender_of(mail(DMARC_PASS, ours), trust).verified


def test_trusted_networks_match_addresses_cidrs_and_mapped_ipv4():
    relays = TrustedNetworks.parse(" 192.0.2.10, 10.1.0.0/16 ,2001:db8::/32")
    assert "192.0.2.10" in relays and "10.1.200.3" in relays and "2001:db8::1" in relays
    assert "::ffff:10.1.0.9" in relays
    assert "192.0.2.11" not in relays and "127.0.0.1" not in relays and "not-an-ip" not in relays
    assert None not in relays
    assert "127.0.0.1" not in TrustedNetworks.parse(None)


def test_a_typo_in_the_trusted_relays_is_an_error_not_silent_distrust():
    with pytest.raises(ValueError, match="SMTP_TRUSTED_RELAYS"):
        TrustedNetworks.parse("10.0.0.0/8, mx.shop.test")


def test_authserv_ids_are_compared_lower_case():
    assert parse_authserv_ids(" MX.Shop.Test ,, mx2.shop.test") == frozenset({"mx.shop.test", "mx2.shop.test"})


def test_switchboard_up_trusts_loopback_and_its_own_webhook_unless_told_otherwise():
    default = single_node_trust(load_settings(environ={}))
    assert (default.smtp_trusted_relays, default.email_webhook_trusted) == ("127.0.0.0/8,::1", True)
    told = single_node_trust(
        load_settings(environ={"SWITCHBOARD_SMTP_TRUSTED_RELAYS": "", "SWITCHBOARD_EMAIL_WEBHOOK_TRUSTED": "false"})
    )
    assert (told.smtp_trusted_relays, told.email_webhook_trusted) == ("", False)
    production = load_settings(environ={})
    assert (production.smtp_trusted_relays, production.email_webhook_trusted) == (None, None)


def test_only_an_inbound_email_registers_its_sender_on_a_claim_alone():
    claim = [Identity("email", "ann@example.org", verified=False)]
    assert registers_on_claims_alone("email", "inbound", claim)
    assert not registers_on_claims_alone("sms", "inbound", claim)  # a connector that lost its sender
    assert not registers_on_claims_alone("email", "outbound", claim)
    assert not registers_on_claims_alone("email", "inbound", [])
