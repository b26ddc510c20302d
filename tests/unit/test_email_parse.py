"""The email parser: raw RFC 5322 bytes in, the normalized inbound interaction out.

The fixtures are real-world shapes (Gmail, Outlook, Apple Mail, Thunderbird, Japanese and Chinese
mailers, bounces, out-of-office replies); the targeted tests pin each rule; the fuzz tests hold the
promise the channel endpoints rely on: any bytes give a `ParsedEmail` or `MalformedEmail`, quickly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import quopri
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.email.parse import MalformedEmail, ParsedEmail, parse_email
from events.interactions import ENCODER, INTERACTION_DECODER, interaction_id

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "email"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
RECEIVED_AT = datetime(2024, 6, 20, 12, 0, tzinfo=UTC)
# Hostile input must not hold a channel worker: a generous bound for a slow CI machine.
MAX_SECONDS_PER_MESSAGE = 2.0


def parse(raw: bytes) -> ParsedEmail:
    return parse_email(raw, received_at=RECEIVED_AT)


def message(
    body: bytes | str = "Hello, my order has not arrived.",
    *,
    headers: list[tuple[str, str]] | None = None,
    content_type: str = "text/plain; charset=utf-8",
    transfer_encoding: str | None = None,
    sender: str = "Customer <customer@example.com>",
) -> bytes:
    """A one-part message; `headers` come after From and may override nothing else."""
    lines = [f"From: {sender}", "To: support@shop.example.com", "Message-ID: <m1@example.com>"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    lines += ["MIME-Version: 1.0", f"Content-Type: {content_type}"]
    if transfer_encoding:
        lines.append(f"Content-Transfer-Encoding: {transfer_encoding}")
    data = body.encode("utf-8") if isinstance(body, str) else body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + data


def multipart(subtype: str, parts: list[bytes], *, headers: str = "", params: str = "") -> bytes:
    boundary = "b-" + hashlib.sha256(b"".join(parts)).hexdigest()[:12]
    head = (
        "From: Customer <customer@example.com>\r\nMessage-ID: <mp@example.com>\r\n"
        + headers
        + f'MIME-Version: 1.0\r\nContent-Type: multipart/{subtype}; boundary="{boundary}"{params}\r\n\r\n'
    )
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return head.encode() + body + b"--" + boundary.encode() + b"--\r\n"


def part(body: bytes | str, content_type: str, *extra_headers: str, transfer_encoding: str = "") -> bytes:
    data = body.encode("utf-8") if isinstance(body, str) else body
    headers = [f"Content-Type: {content_type}", *extra_headers]
    if transfer_encoding == "base64":
        headers.append("Content-Transfer-Encoding: base64")
        data = base64.encodebytes(data)
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + data


def encoded_word(text: str, charset: str, encoding: str = "B") -> str:
    data = text.encode(charset)
    if encoding == "B":
        return f"=?{charset}?B?{base64.b64encode(data).decode()}?="
    # Q encoding by hand: quopri would add soft line breaks, which encoded-words may not contain.
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!*+-/"
    encoded = "".join("_" if byte == 32 else chr(byte) if byte in safe else f"={byte:02X}" for byte in data)
    return f"=?{charset}?Q?{encoded}?="


# --- the fixture set -----------------------------------------------------------------------------


def test_every_fixture_has_an_expectation_and_there_are_enough():
    names = sorted(path.name for path in FIXTURES.glob("*.eml"))
    assert names == sorted(EXPECTED)
    assert len(names) >= 12


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_gives_the_expected_timeline_entry(name):
    parsed = parse((FIXTURES / name).read_bytes())
    interaction = parsed.interaction
    entry = {
        "sender": interaction.identities[0].value,
        "text": interaction.text,
        "kind": interaction.kind,
        "thread_key": interaction.thread_key,
        "attachments": [
            {"name": a.name, "content_type": a.content_type, "size": a.size} for a in interaction.attachments
        ],
    }
    assert entry == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_interaction_is_a_wellformed_inbound_email(name):
    parsed = parse((FIXTURES / name).read_bytes())
    interaction = parsed.interaction
    assert interaction.channel == "email"
    assert interaction.direction == "inbound"
    assert interaction.identities[0].kind == "email"
    assert interaction.identities[0].verified is True
    assert interaction.provider_message_id == interaction.meta["message_id"]
    assert interaction.id == interaction_id("email", interaction.meta["message_id"])
    assert interaction.occurred_at.tzinfo is not None and interaction.occurred_at.utcoffset() == timedelta(0)
    assert {"subject", "message_id", "in_reply_to", "references", "thread_ids", "to"} <= set(interaction.meta)
    assert interaction.text in parsed.full_text or not interaction.text
    assert len(parsed.attachment_bytes) == len(interaction.attachments)
    assert INTERACTION_DECODER.decode(ENCODER.encode(interaction)) == interaction


def test_fixture_headers_in_foreign_charsets_are_readable():
    def read(name):
        return parse((FIXTURES / name).read_bytes()).interaction

    assert read("03_latin1_quoted_printable.eml").profile == {"name": "Jürgen Müller"}
    assert read("03_latin1_quoted_printable.eml").meta["subject"] == "Beschädigte Lieferung"
    assert read("05_shift_jis.eml").meta["subject"] == "商品が届きません"
    assert read("05_shift_jis.eml").profile == {"name": "山田 太郎"}
    assert read("06_iso2022jp_encoded_words.eml").meta["subject"] == "返品について問い合わせ"
    assert read("13_koi8r.eml").meta["subject"] == "Вопрос по заказу"
    assert read("14_gb2312_gbk.eml").profile == {"name": "王镕"}
    assert read("07_pdf_and_image_attachments.eml").profile == {"name": "Zoë Schröder"}


def test_full_text_keeps_the_quoted_conversation():
    parsed = parse((FIXTURES / "01_gmail_alternative_reply.eml").read_bytes())
    assert "> we have shipped a replacement unit" in parsed.full_text
    assert "shipped" not in parsed.interaction.text


# --- identity and profile ------------------------------------------------------------------------


def test_sender_address_is_lower_cased_and_display_name_becomes_the_profile():
    interaction = parse(message(sender='"Doe, Jane" <Jane.Doe@Example.COM>')).interaction
    assert interaction.identities[0].value == "jane.doe@example.com"
    assert interaction.profile == {"name": "Doe, Jane"}


def test_bare_address_gives_no_profile():
    assert parse(message(sender="jane@example.com")).interaction.profile == {}


def test_display_name_that_repeats_the_address_is_not_a_name():
    assert parse(message(sender="jane@example.com <jane@example.com>")).interaction.profile == {}


def test_encoded_display_name_is_decoded():
    sender = f"{encoded_word('Zoë Ångström', 'utf-8', 'Q')} <zoe@example.com>"
    assert parse(message(sender=sender)).interaction.profile == {"name": "Zoë Ångström"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \r\n\r\n  ",
        b"Subject: no sender\r\n\r\nhello",
        b"From: \r\n\r\nhello",
        b"From: Jane Doe\r\n\r\nhello",
        b"From: <>\r\n\r\nbounce without sender",
        b"just some text, not an email at all",
        b"\x00\x01\x02\xff\xfe",
    ],
)
def test_input_without_a_sender_address_is_malformed(raw):
    with pytest.raises(MalformedEmail):
        parse(raw)


def test_malformed_email_is_a_value_error():
    assert issubclass(MalformedEmail, ValueError)


# --- ids, threading, time ------------------------------------------------------------------------


def test_message_id_is_normalized_and_drives_the_interaction_id():
    raw = message(headers=[]).replace(b"Message-ID: <m1@example.com>", b"Message-ID:   < abc.123@Example.com >  ")
    interaction = parse(raw).interaction
    assert interaction.provider_message_id == "abc.123@Example.com"
    assert interaction.id == interaction_id("email", "abc.123@Example.com")


def test_message_without_message_id_gets_a_stable_id_from_its_bytes():
    raw = b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
    first, again = parse(raw).interaction, parse(raw).interaction
    assert first.provider_message_id == again.provider_message_id
    assert first.id == again.id
    assert hashlib.sha256(raw).hexdigest() in first.provider_message_id
    assert first.thread_key == first.provider_message_id
    assert parse(raw + b"!").interaction.id != first.id


def test_thread_key_is_the_first_reference_and_thread_ids_hold_every_id():
    raw = message(
        headers=[
            ("In-Reply-To", "<r2@shop.example.com> (Support's message of Monday)"),
            ("References", "<root@shop.example.com>\r\n <r1@shop.example.com> <r2@shop.example.com>"),
        ]
    )
    interaction = parse(raw).interaction
    assert interaction.thread_key == "root@shop.example.com"
    assert interaction.meta["in_reply_to"] == "r2@shop.example.com"
    assert interaction.meta["references"] == "root@shop.example.com r1@shop.example.com r2@shop.example.com"
    assert interaction.meta["thread_ids"] == (
        "m1@example.com r2@shop.example.com root@shop.example.com r1@shop.example.com"
    )


def test_thread_key_falls_back_to_in_reply_to_then_own_id():
    assert parse(message(headers=[("In-Reply-To", "<r9@x>")])).interaction.thread_key == "r9@x"
    assert parse(message()).interaction.thread_key == "m1@example.com"


def test_references_without_brackets_are_still_read():
    interaction = parse(message(headers=[("References", "a1@x.example, a2@x.example")])).interaction
    assert interaction.meta["references"] == "a1@x.example a2@x.example"


def test_recipients_are_kept_in_meta():
    raw = message().replace(b"To: support@shop.example.com", b"To: Support <Support@Shop.example.com>, b@x.example")
    assert parse(raw).interaction.meta["to"] == "support@shop.example.com, b@x.example"


def test_reply_to_is_kept_in_meta_only_when_present():
    assert "reply_to" not in parse(message()).interaction.meta
    raw = message(
        sender="Shop website <noreply@shop.example.com>",
        headers=[("Reply-To", "Visitor <Visitor@x.example>")],
    )
    interaction = parse(raw).interaction
    assert interaction.identities[0].value == "noreply@shop.example.com"
    assert interaction.meta["reply_to"] == "visitor@x.example"


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Tue, 4 Jun 2024 11:15:12 +0200", datetime(2024, 6, 4, 9, 15, 12, tzinfo=UTC)),
        ("4 Jun 2024 11:15:12 -0000", datetime(2024, 6, 4, 11, 15, 12, tzinfo=UTC)),
        ("Tue, 04 Jun 2024 11:15:12 GMT", datetime(2024, 6, 4, 11, 15, 12, tzinfo=UTC)),
        ("not a date", RECEIVED_AT),
        ("Tue, 31 Feb 2024 25:61:00 +0000", RECEIVED_AT),
        ("Fri, 1 Jan 2100 00:00:00 +0000", RECEIVED_AT),
        ("Thu, 1 Jan 1970 00:00:00 +0000", RECEIVED_AT),
    ],
)
def test_occurred_at_is_the_date_header_when_plausible_else_the_receipt_time(date, expected):
    assert parse(message(headers=[("Date", date)])).interaction.occurred_at == expected


def test_occurred_at_defaults_to_receipt_time_and_naive_receipt_time_is_utc():
    parsed = parse_email(message(), received_at=datetime(2024, 6, 20, 12, 0))
    assert parsed.interaction.occurred_at == RECEIVED_AT


# --- charsets and transfer encodings -------------------------------------------------------------

CHARSET_SAMPLES = [
    ("utf-8", "Grüße, 你好, привет, 😀"),
    ("iso-8859-1", "Grüße aus Köln, Ça va?"),
    ("windows-1252", "“Smart quotes” – and € signs…"),
    ("shift_jis", "注文がまだ届いていません。"),
    ("iso-2022-jp", "返品をお願いします。"),
    ("koi8-r", "Здравствуйте, где мой заказ?"),
    ("gb2312", "您好，我的订单还没有到。"),
    ("gbk", "王镕的退款申请"),
    ("big5", "您好，我的訂單還沒有到。"),
    ("euc-kr", "안녕하세요, 주문이 아직 도착하지 않았습니다."),
]


@pytest.mark.parametrize(("charset", "text"), CHARSET_SAMPLES)
@pytest.mark.parametrize("transfer_encoding", ["8bit", "base64", "quoted-printable"])
def test_body_in_every_common_charset_is_decoded(charset, text, transfer_encoding):
    data = text.encode(charset)
    if transfer_encoding == "base64":
        data = base64.encodebytes(data)
    elif transfer_encoding == "quoted-printable":
        data = quopri.encodestring(data)
    raw = message(data, content_type=f'text/plain; charset="{charset}"', transfer_encoding=transfer_encoding)
    assert parse(raw).interaction.text == text


@pytest.mark.parametrize(("charset", "text"), CHARSET_SAMPLES)
@pytest.mark.parametrize("encoding", ["B", "Q"])
def test_subject_encoded_word_in_every_common_charset_is_decoded(charset, text, encoding):
    raw = message(headers=[("Subject", encoded_word(text, charset, encoding))])
    assert parse(raw).interaction.meta["subject"] == text


def test_html_body_in_a_foreign_charset_is_decoded():
    html = "<p>Доставка задерживается</p>".encode("koi8-r")
    raw = message(html, content_type="text/html; charset=koi8-r", transfer_encoding="8bit")
    assert parse(raw).interaction.text == "Доставка задерживается"


def test_html_meta_charset_is_used_when_mime_names_none():
    html = '<html><head><meta charset="windows-1252"></head><body>Preis: 12 €</body></html>'.encode("cp1252")
    raw = message(html, content_type="text/html", transfer_encoding="8bit")
    assert parse(raw).interaction.text == "Preis: 12 €"


@pytest.mark.parametrize(
    ("declared", "data", "expected"),
    [
        ("iso-8859-1", "Perché è già qui".encode(), "Perché è già qui"),
        ("us-ascii", "naïve café".encode(), "naïve café"),
        ("utf-8", "Grüße – €5".encode("cp1252"), "Grüße – €5"),
        ("x-klingon", "Grüße".encode(), "Grüße"),
        ("x-klingon", "Grüße".encode("cp1252"), "Grüße"),
        ("base64", b"plain words", "plain words"),
        ("idna", "Grüße".encode(), "Grüße"),
        ("undefined", b"plain words", "plain words"),
        ('"UTF-8"', "ok ✓".encode(), "ok ✓"),
    ],
)
def test_wrong_or_unknown_declared_charset_falls_back_leniently(declared, data, expected):
    raw = message(data, content_type=f"text/plain; charset={declared}", transfer_encoding="8bit")
    assert parse(raw).interaction.text == expected


def test_damaged_multibyte_text_keeps_what_reads():
    data = "注文番号 5521 の商品がまだ届いていません。確認をお願いいたします。".encode("shift_jis")
    damaged = data[:10] + b"\xff" + data[10:]
    raw = message(damaged, content_type="text/plain; charset=shift_jis", transfer_encoding="8bit")
    text = parse(raw).interaction.text
    assert "注文番号" in text and "確認をお願いいたします" in text


def test_undecodable_bytes_never_crash():
    raw = message(bytes(range(256)), content_type="text/plain; charset=utf-8", transfer_encoding="8bit")
    text = parse(raw).interaction.text
    assert "\x00" not in text
    assert text.encode("utf-8")


def test_broken_base64_body_gives_what_it_can():
    encoded = base64.b64encode(b"Please cancel my order 4411 today.").decode()
    broken = encoded[:8] + "*&" + encoded[8:].rstrip("=")[:-1]
    raw = message(broken, transfer_encoding="base64")
    assert parse(raw).interaction.text.startswith("Please cancel my order 4411")


def test_unknown_transfer_encoding_reads_the_raw_text():
    raw = message("Hello there", transfer_encoding="x-weird")
    assert parse(raw).interaction.text == "Hello there"


# --- RFC 2047 encoded-words ----------------------------------------------------------------------


def test_encoded_words_split_inside_a_multibyte_character_are_joined():
    data = "Ärger mit der Lieferung".encode()
    subject = f"=?utf-8?B?{base64.b64encode(data[:1]).decode()}?= =?utf-8?B?{base64.b64encode(data[1:]).decode()}?="
    assert parse(message(headers=[("Subject", subject)])).interaction.meta["subject"] == "Ärger mit der Lieferung"


def test_whitespace_between_encoded_words_is_dropped_but_around_plain_text_kept():
    subject = "Re: =?utf-8?Q?Caf=C3=A9?=\r\n =?utf-8?Q?_au_lait?= order"
    assert parse(message(headers=[("Subject", subject)])).interaction.meta["subject"] == "Re: Café au lait order"


def test_encoded_word_with_language_suffix_and_missing_padding():
    subject = "=?UTF-8*en?B?SGVsbG8gd29ybGQ?="
    assert parse(message(headers=[("Subject", subject)])).interaction.meta["subject"] == "Hello world"


def test_encoded_word_with_wrong_charset_is_read_leniently():
    subject = "=?utf-8?Q?caf=E9?= =?x-unknown?Q?na=C3=AFve?="
    assert parse(message(headers=[("Subject", subject)])).interaction.meta["subject"] == "cafénaïve"


def test_raw_utf8_and_latin1_in_headers_are_readable():
    raw = message(headers=[]).replace(b"MIME-Version", "Subject: Rückgabe ✓\r\nMIME-Version".encode(), 1)
    assert parse(raw).interaction.meta["subject"] == "Rückgabe ✓"
    raw = message(headers=[]).replace(b"MIME-Version", "Subject: Rückgabe\r\nMIME-Version".encode("latin-1"), 1)
    assert parse(raw).interaction.meta["subject"] == "Rückgabe"


# --- quoted replies ------------------------------------------------------------------------------

QUOTE_CASES = {
    "english one line": (
        "Yes please.\n\nOn Mon, Jun 3, 2024 at 9:00 AM Sam <s@x.example> wrote:\n> Shall we?",
        "Yes please.",
    ),
    "gmail wrapped attribution": (
        "Yes please.\n\nOn Mon, Jun 3, 2024 at 9:00 AM Switchboard Support <\nsupport@shop.example.com> wrote:\n\n> Shall we?",
        "Yes please.",
    ),
    "german": (
        "Ja, gerne.\n\nAm 03.06.2024 um 09:00 schrieb Sam <s@x.example>:\n> Sollen wir?",
        "Ja, gerne.",
    ),
    "french": ("Oui.\n\nLe lun. 3 juin 2024 à 09:00, Sam <s@x.example> a écrit :\n> On y va ?", "Oui."),
    "spanish": ("Sí.\n\nEl lun, 3 jun 2024 a las 9:00, Sam (<s@x.example>) escribió:\n> ¿Vamos?", "Sí."),
    "outlook original message": (
        "Please refund.\n\n-----Original Message-----\nFrom: Billing <b@x.example>\nSent: Monday\n\nOld text",
        "Please refund.",
    ),
    "german outlook original message": (
        "Bitte erstatten.\n\n-----Ursprüngliche Nachricht-----\nVon: Billing\nGesendet: Montag\n\nAlt",
        "Bitte erstatten.",
    ),
    "outlook header block with rule": (
        "Thanks!\n\n________________________________\nFrom: Support <s@x.example>\nSent: Monday, June 3, 2024 9:00 AM\n"
        "To: Me\nSubject: Case\n\nOld text",
        "Thanks!",
    ),
    "french outlook header block": (
        "Merci.\n\nDe : Support <s@x.example>\nEnvoyé : lundi 3 juin 2024 09:00\nÀ : Moi\nObjet : Dossier\n\nAncien",
        "Merci.",
    ),
    "interleaved quotes": (
        "> Which colour?\nBlue.\n> Which size?\nLarge.",
        "Blue.\nLarge.",
    ),
    "bottom posting keeps the reply": (
        "On Mon, 3 Jun 2024, Sam <s@x.example> wrote:\n> Which colour?\n\nBlue, thanks.",
        "Blue, thanks.",
    ),
    "inline forward is kept": (
        "See below.\n\n---------- Forwarded message ---------\nFrom: Courier <c@x.example>\nDate: Mon, 3 Jun 2024\n"
        "Subject: Delivery\n\nWe could not deliver your parcel.",
        "See below.\n\n---------- Forwarded message ---------\nFrom: Courier <c@x.example>\nDate: Mon, 3 Jun 2024\n"
        "Subject: Delivery\n\nWe could not deliver your parcel.",
    ),
    "ordinary sentence starting with On is kept": (
        "On Monday the parcel came.\nIt was broken.",
        "On Monday the parcel came.\nIt was broken.",
    ),
}


@pytest.mark.parametrize("case", sorted(QUOTE_CASES))
def test_quoted_reply_is_cut(case):
    body, expected = QUOTE_CASES[case]
    parsed = parse(message(body))
    assert parsed.interaction.text == expected
    assert parsed.full_text == body


def test_message_that_is_only_a_quote_keeps_its_text():
    parsed = parse(message("> just the old text\n> nothing new"))
    assert parsed.interaction.text == "> just the old text\n> nothing new"


def test_format_flowed_lines_are_rejoined():
    body = "This is one long \r\nparagraph split by \r\nthe mailer.\r\n\r\nNext.\r\n-- \r\nSig"
    raw = message(body, content_type="text/plain; charset=utf-8; format=flowed")
    assert parse(raw).interaction.text == "This is one long paragraph split by the mailer.\n\nNext.\n--\nSig"


def test_format_flowed_with_delsp_removes_the_joining_space():
    raw = message("注文が \r\n届きません", content_type="text/plain; charset=utf-8; format=flowed; delsp=yes")
    assert parse(raw).interaction.text == "注文が届きません"


# --- HTML ----------------------------------------------------------------------------------------


def test_html_only_gmail_reply_is_readable_and_its_blockquote_cut():
    html = (
        '<div dir="ltr">New address is <b>Main St 5</b>.<div><br></div><div>Ana</div></div><br>'
        '<div class="gmail_quote"><div class="gmail_attr">On Mon, 3 Jun 2024 at 09:12, Sam &lt;s@x.example&gt; wrote:<br></div>'
        "<blockquote>Which address?<blockquote>older</blockquote></blockquote></div>"
    )
    parsed = parse(message(html, content_type="text/html; charset=utf-8"))
    assert parsed.interaction.text == "New address is Main St 5.\n\nAna"
    assert "> Which address?" in parsed.full_text


def test_html_invisible_parts_are_dropped_and_structure_kept():
    html = (
        "<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style><script>alert(1)</script></head>"
        "<body><!-- tracking --><h1>Order&nbsp;issue</h1><p>First   paragraph\nwrapped in source.</p>"
        "<p>Second &amp; last.</p><ul><li>one</li><li>two</li></ul>"
        "<table><tr><td>Qty</td><td>2</td></tr></table><pre>  keep\n  this</pre></body></html>"
    )
    text = parse(message(html, content_type="text/html; charset=utf-8")).interaction.text
    assert text == (
        "Order issue\n\nFirst paragraph wrapped in source.\n\nSecond & last.\n\n- one\n- two\nQty 2\nkeep\nthis"
    )


def test_html_link_targets_stay_visible():
    html = '<p>See <a href="https://shop.example.com/orders/77">my order</a> and <a href="mailto:x@y">me</a>.</p>'
    text = parse(message(html, content_type="text/html")).interaction.text
    assert text == "See my order (https://shop.example.com/orders/77) and me."


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "html",
    [
        '<?xml version="1.0" encoding="utf-8"?><!DOCTYPE html><html><body><p>Hi</p></body></html>',
        '<!DOCTYPE html><?xml version="1.0"?><p>Hi</p>',
        "https://x.example/<b>Hi</b>",
    ],
)
def test_xhtml_and_url_like_html_parse_without_warnings(html):
    assert "Hi" in parse(message(html, content_type="text/html")).interaction.text


def test_html_tag_flood_is_read_cheaply():
    html = "<div>" * 60_000 + "deep text" + "<br>" * 10
    started = time.process_time()  # CPU time of this process: other load on the machine does not count
    assert parse(message(html, content_type="text/html")).interaction.text == "deep text"
    assert time.process_time() - started < MAX_SECONDS_PER_MESSAGE


def test_alternative_prefers_plain_text_and_falls_back_to_html():
    both = multipart(
        "alternative",
        [
            part("plain version", "text/plain; charset=utf-8"),
            part("<p>html version</p>", "text/html; charset=utf-8"),
        ],
    )
    assert parse(both).interaction.text == "plain version"
    empty_plain = multipart(
        "alternative",
        [
            part("  \r\n", "text/plain; charset=utf-8"),
            part("<p>html version</p>", "text/html; charset=utf-8"),
        ],
    )
    assert parse(empty_plain).interaction.text == "html version"


def test_html_without_markup_is_read_as_text():
    assert parse(message("Tom &amp; Jerry", content_type="text/html")).interaction.text == "Tom & Jerry"


# --- auto-replies and bounces --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ([("Auto-Submitted", "auto-replied")], "auto_reply"),
        ([("Auto-Submitted", "auto-generated; owner-email=x@y")], "auto_reply"),
        ([("Auto-Submitted", "No")], "message"),
        ([("X-Autoreply", "yes")], "auto_reply"),
        ([("X-Autorespond", "Out of office")], "auto_reply"),
        ([("X-Autoreply", "no")], "message"),
        ([("Precedence", "bulk")], "auto_reply"),
        ([("Precedence", "junk")], "auto_reply"),
        ([("Precedence", "auto_reply")], "auto_reply"),
        ([("Precedence", "list")], "message"),
        ([("X-Auto-Response-Suppress", "All"), ("Subject", "Out of Office: order 77")], "auto_reply"),
        ([("X-Auto-Response-Suppress", "All"), ("Subject", "Automatic reply: order 77")], "auto_reply"),
        ([("X-Auto-Response-Suppress", "All"), ("Subject", "Abwesenheitsnotiz: Bestellung")], "auto_reply"),
        ([("X-Auto-Response-Suppress", "All"), ("Subject", "Re: order 77")], "message"),
        ([("Subject", "Out of office question")], "message"),
    ],
)
def test_auto_replies_are_recognised(headers, kind):
    assert parse(message(headers=headers)).interaction.kind == kind


def test_read_receipt_report_is_an_auto_reply():
    raw = multipart(
        "report",
        [
            part("Your message was displayed.", "text/plain"),
            part("Final-Recipient: rfc822; a@b\r\n", "message/disposition-notification"),
        ],
        params="; report-type=disposition-notification",
    )
    interaction = parse(raw).interaction
    assert interaction.kind == "auto_reply"
    assert interaction.attachments == []


def test_delivery_status_report_is_a_bounce_with_its_details():
    interaction = parse((FIXTURES / "09_dsn_bounce.eml").read_bytes()).interaction
    assert interaction.kind == "bounce"
    assert interaction.meta["bounce_recipients"] == "no.such.user@customer.example"
    assert interaction.meta["bounce_status"] == "5.1.1"
    assert interaction.meta["bounced_message_id"] == "case-3301.reply-7@shop.example.com"


def test_returned_full_message_gives_the_bounced_message_id():
    returned = b"From: support@shop.example.com\r\nMessage-ID: <case-9.reply-1@shop.example.com>\r\n\r\nHi\r\n"
    raw = multipart(
        "report",
        [
            part("Delivery failed.", "text/plain"),
            part(
                "Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; gone@x.example\r\nStatus: 5.0.0\r\n",
                "message/delivery-status",
            ),
            part(returned, "message/rfc822"),
        ],
        params="; report-type=delivery-status",
    )
    interaction = parse(raw).interaction
    assert interaction.kind == "bounce"
    assert interaction.text == "Delivery failed."
    assert interaction.meta["bounced_message_id"] == "case-9.reply-1@shop.example.com"
    assert interaction.meta["bounce_recipients"] == "gone@x.example"


@pytest.mark.parametrize(
    ("sender", "subject", "kind"),
    [
        ("MAILER-DAEMON@mx.example.com", "Undeliverable: Your case 12", "bounce"),
        (
            "Mail Delivery Subsystem <mailer-daemon@googlemail.example>",
            "Delivery Status Notification (Failure)",
            "bounce",
        ),
        ("postmaster@outlook.example", "Unzustellbar: Ihre Anfrage", "bounce"),
        ("postmaster@outlook.example", "Question about your domain", "message"),
        ("customer@example.com", "Undeliverable: why?", "message"),
    ],
)
def test_mailer_daemon_with_delivery_failure_subject_is_a_bounce(sender, subject, kind):
    assert parse(message(sender=sender, headers=[("Subject", subject)])).interaction.kind == kind


# --- attachments ---------------------------------------------------------------------------------


def test_attachment_hashes_sizes_and_bytes_line_up():
    parsed = parse((FIXTURES / "07_pdf_and_image_attachments.eml").read_bytes())
    assert [a.name for a in parsed.interaction.attachments] == ["Quittung März 2024.pdf", "Lampe defekt.png"]
    for attachment, data in zip(parsed.interaction.attachments, parsed.attachment_bytes, strict=True):
        assert attachment.size == len(data)
        assert attachment.sha256 == hashlib.sha256(data).hexdigest()
        assert attachment.ref is None
    assert parsed.attachment_bytes[0].startswith(b"%PDF-1.4")
    assert parsed.attachment_bytes[1].startswith(b"\x89PNG")


def test_rfc2231_continued_filename_and_unsafe_paths():
    raw = multipart(
        "mixed",
        [
            part("see files", "text/plain"),
            part(
                b"a",
                "application/pdf",
                "Content-Disposition: attachment; filename*0*=utf-8''Rechnung%20M%C3%A4; filename*1=rz.pdf",
            ),
            part(b"b", "text/plain", 'Content-Disposition: attachment; filename="../../etc/evil.txt"'),
            part(
                b"e",
                "text/plain",
                "Content-Disposition: attachment; filename*=utf-8''..%5C..%5Cwin%5Cbad.txt",
            ),
            part(b"c", "application/pdf"),
            part(
                b"d",
                "application/octet-stream",
                'Content-Disposition: attachment; filename="=?utf-8?Q?=C3=BCbersicht.xlsx?="',
            ),
        ],
    )
    parsed = parse(raw)
    assert parsed.interaction.text == "see files"
    assert [(a.name, a.content_type) for a in parsed.interaction.attachments] == [
        ("Rechnung März.pdf", "application/pdf"),
        ("evil.txt", "text/plain"),
        ("bad.txt", "text/plain"),
        ("attachment.pdf", "application/pdf"),
        ("übersicht.xlsx", "application/octet-stream"),
    ]
    assert parsed.attachment_bytes == [b"a", b"b", b"e", b"c", b"d"]


def test_named_text_is_the_body_when_whole_or_inline_and_a_file_otherwise():
    assert parse(message(content_type="text/plain; name=body.txt")).interaction.text.startswith("Hello")
    raw = multipart(
        "mixed",
        [
            part("typed text", "text/plain"),
            part("shown inline", "text/plain", 'Content-Disposition: inline; filename="inline.txt"'),
            part("log lines", "text/plain; name=log.txt"),
        ],
    )
    interaction = parse(raw).interaction
    assert interaction.text == "typed text\n\nshown inline"
    assert [a.name for a in interaction.attachments] == ["log.txt"]


def test_forwarded_message_is_an_eml_attachment_not_text():
    forwarded = b"From: courier@x.example\r\nSubject: Parcel held\r\nMessage-ID: <f@x>\r\n\r\nCome pick it up.\r\n"
    raw = multipart("mixed", [part("Please look at this.", "text/plain"), part(forwarded, "message/rfc822")])
    parsed = parse(raw)
    assert parsed.interaction.text == "Please look at this."
    attachment = parsed.interaction.attachments[0]
    assert (attachment.name, attachment.content_type) == ("Parcel held.eml", "message/rfc822")
    assert b"Come pick it up." in parsed.attachment_bytes[0]


def test_image_beside_html_alternative_is_kept_and_alternative_text_not_doubled():
    parsed = parse((FIXTURES / "15_apple_related_image.eml").read_bytes())
    assert parsed.full_text.count("Checkout fails") == 1
    assert [a.content_type for a in parsed.interaction.attachments] == ["image/png"]


def test_nested_multiparts_collect_text_from_each_inline_part():
    inner = multipart("alternative", [part("inner plain", "text/plain"), part("<b>inner html</b>", "text/html")])
    inner_part = inner.split(b"\r\n", 2)[2]  # drop From/Message-ID, keep its Content-Type and body
    raw = multipart("mixed", [part("first", "text/plain"), inner_part, part("last", "text/plain")])
    assert parse(raw).interaction.text == "first\n\ninner plain\n\nlast"


def test_hostile_nesting_depth_is_survived():
    depth = 200
    head = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    body = b"".join(
        f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode() for i in range(depth)
    )
    raw = head + body + b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % depth
    parse_within_bounds(raw)


# --- fuzzing: any bytes give ParsedEmail or MalformedEmail, quickly ------------------------------

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def parse_within_bounds(raw: bytes) -> ParsedEmail | None:
    """Parse; None for MalformedEmail; any other exception fails the test. Checks time and storability."""
    started = time.process_time()  # CPU time of this process: other load on the machine does not count
    try:
        parsed = parse(raw)
    except MalformedEmail:
        parsed = None
    assert time.process_time() - started < MAX_SECONDS_PER_MESSAGE
    if parsed is not None:
        assert_storable(parsed)
    return parsed


def assert_storable(parsed: ParsedEmail) -> None:
    """Every string encodes as UTF-8 (JSON, NATS) and holds no NUL (PostgreSQL text)."""
    encoded = msgspec.json.encode(parsed.interaction)
    assert b"\\u0000" not in encoded
    assert "\x00" not in parsed.full_text
    parsed.full_text.encode("utf-8")
    assert len(parsed.attachment_bytes) == len(parsed.interaction.attachments)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(raw):
    parse_within_bounds(raw)


@FUZZ
@given(st.sampled_from(sorted(EXPECTED)), st.data())
def test_fuzz_mutated_fixtures(name, data):
    raw = bytearray((FIXTURES / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(raw) // 2, len(raw)))
    parse_within_bounds(bytes(raw[:cut]))


header_value_bytes = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["Subject", "Date", "Message-ID", "In-Reply-To", "References", "Content-Type",
             "Content-Transfer-Encoding", "Content-Disposition", "Auto-Submitted", "Precedence", "To"]
        ),
        header_value_bytes,
        max_size=8,
    ),
    st.binary(max_size=1024),
)  # fmt: skip
def test_fuzz_random_header_values_never_lose_a_message_with_a_sender(headers, body):
    raw = b"From: Fuzzy <fuzzy@example.com>\r\n"
    raw += b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers.items())
    parsed = parse_within_bounds(raw + b"\r\n" + body)
    assert parsed is not None
    assert parsed.interaction.identities[0].value == "fuzzy@example.com"


CHARSETS = [
    "utf-8", "iso-8859-1", "windows-1252", "shift_jis", "iso-2022-jp", "koi8-r", "gb2312", "gbk",
    "big5", "euc-kr", "utf-16", "utf-7", "x-unknown", "base64", "idna", "undefined", "",
]  # fmt: skip
TRANSFER_ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "bogus", ""]


def encode_text(text: str, charset: str) -> bytes:
    try:
        return text.encode(charset or "utf-8", "replace")
    except (LookupError, UnicodeError, TypeError):
        return text.encode("utf-8", "surrogatepass")


@st.composite
def leaf_parts(draw) -> bytes:
    content_type = draw(
        st.sampled_from(["text/plain", "text/html", "application/pdf", "image/png", "message/rfc822", "text/calendar"])
    )
    charset = draw(st.sampled_from(CHARSETS))
    transfer_encoding = draw(st.sampled_from(TRANSFER_ENCODINGS))
    text = draw(st.text(max_size=200))
    if content_type == "text/html":
        text = draw(
            st.sampled_from(["<p>{}</p>", "<blockquote>{}<blockquote>{}", "<div>{}<br>{}</div>", "{}</td>"])
        ).format(text, text)
    data = encode_text(text, charset)
    if transfer_encoding == "base64":
        data = base64.encodebytes(data)
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))] + b"!*"  # broken base64
    elif transfer_encoding == "quoted-printable":
        data = quopri.encodestring(data)
    headers = [f'Content-Type: {content_type}; charset="{charset}"']
    if transfer_encoding:
        headers.append(f"Content-Transfer-Encoding: {transfer_encoding}")
    if draw(st.booleans()):
        filename = encoded_word(draw(st.text(min_size=1, max_size=30)), "utf-8")
        headers.append(f'Content-Disposition: {draw(st.sampled_from(["attachment", "inline"]))}; filename="{filename}"')
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + data


@st.composite
def multipart_parts(draw, children) -> bytes:
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report", "digest"]))
    boundary = f"fuzz-{draw(st.integers(0, 10**9))}"
    parts = draw(st.lists(children, max_size=4))
    body = b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts)
    closing = f"--{boundary}--\r\n".encode() if draw(st.booleans()) else b""  # truncated multiparts happen
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"; report-type=delivery-status\r\n\r\n'
    return head.encode() + body + closing


mime_trees = st.recursive(leaf_parts(), lambda children: multipart_parts(children), max_leaves=8)


@st.composite
def whole_messages(draw) -> tuple[bytes, str]:
    address = draw(st.from_regex(r"[a-z0-9][a-z0-9.+-]{0,15}@[a-z0-9-]{1,12}\.example", fullmatch=True))
    display = draw(st.one_of(st.just(""), st.text(max_size=30).map(lambda t: encoded_word(t, "utf-8"))))
    sender = f"{display} <{address}>" if display else address
    subject_charset = draw(st.sampled_from([c for c in CHARSETS if c]))
    subject = draw(st.text(max_size=60))
    headers = [
        f"From: {sender}",
        f"Subject: =?{subject_charset}?B?{base64.b64encode(encode_text(subject, subject_charset)).decode()}?=",
    ]
    if draw(st.booleans()):
        headers.append(f"Message-ID: <{draw(st.text(max_size=40)).replace('>', '')}>")
    if draw(st.booleans()):
        headers.append(f"References: {' '.join(f'<r{n}@x>' for n in range(draw(st.integers(0, 50))))}")
    if draw(st.booleans()):
        headers.append(
            f"Date: {draw(st.sampled_from(['Tue, 4 Jun 2024 11:15:12 +0200', 'yesterday', '', '31 Dec 9999 23:59:59 +1400']))}"
        )
    if draw(st.booleans()):
        headers.append(f"Auto-Submitted: {draw(st.sampled_from(['no', 'auto-replied', '']))}")
    head = "\r\n".join(headers).encode("utf-8", "surrogatepass") + b"\r\nMIME-Version: 1.0\r\n"
    return head + draw(mime_trees), address.lower()


@FUZZ
@given(whole_messages())
def test_fuzz_structured_messages_with_a_sender_always_parse(generated):
    raw, address = generated
    parsed = parse_within_bounds(raw)
    assert parsed is not None
    assert parsed.interaction.identities[0].value == address
    assert parsed.interaction.kind in {"message", "auto_reply", "bounce"}


@FUZZ
@given(st.text(max_size=2000), st.sampled_from(["text/plain", "text/html"]))
def test_fuzz_any_body_text_survives_quote_cutting_and_html(text, content_type):
    raw = message(
        text.encode("utf-8", "surrogatepass"),
        content_type=f"{content_type}; charset=utf-8",
        transfer_encoding="8bit",
    )
    parsed = parse_within_bounds(raw)
    assert parsed is not None
