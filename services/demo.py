"""`switchboard demo`: realistic multi-channel traffic through the real endpoints of a running instance.

It behaves like the outside world: a chat widget (session + WebSocket), a mail server (SMTP), Twilio
(signed SMS webhooks), Meta (signed WhatsApp webhooks) and Telegram (secret-token updates). Secrets
come from the same settings / data dir as the instance, so the signatures verify.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import smtplib
import time
import uuid
from email.message import EmailMessage
from urllib.parse import urlencode

import httpx
import websockets
from tqdm import tqdm

from services.platform.settings import Settings

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia", "Tim", "Frances", "Linus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Perlman", "Berners-Lee"]
ASKS = [
    "Where is my order {n}?",
    "I was charged twice for invoice {n}.",
    "Can I change my delivery address?",
    "The app crashes when I open settings.",
    "Do you ship to Norway?",
    "I'd like a refund for order {n}.",
    "My password reset email never arrived.",
    "Thanks, that fixed it!",
    "Is there a discount for students?",
]


class DemoCustomer:
    def __init__(self, i: int, rng: random.Random):
        self.name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        self.email = f"{self.name.lower().replace(' ', '.')}.{i}@example.com"
        self.phone = f"+1415555{i:04d}"
        self.telegram_id = 700_000_000 + i
        self.chat_token: str | None = None
        self.thread: list[str] = []


def _twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    payload = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


async def _chat(client: httpx.AsyncClient, ws_base: str, c: DemoCustomer, text: str) -> None:
    if c.chat_token is None:
        response = await client.post("/channels/chat/sessions", json={"name": c.name, "email": c.email})
        while response.status_code == 429:  # the gateway's per-address limit on new sessions: wait our turn
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            response = await client.post("/channels/chat/sessions", json={"name": c.name, "email": c.email})
        response.raise_for_status()
        c.chat_token = response.json()["token"]
    async with websockets.connect(f"{ws_base}/channels/chat/ws?token={c.chat_token}") as ws:
        await ws.send(json.dumps({"type": "message", "text": text, "client_id": str(uuid.uuid4())}))
        await ws.recv()


def _email(smtp: tuple[str, int], c: DemoCustomer, text: str) -> None:
    message = EmailMessage()
    message["From"] = f"{c.name} <{c.email}>"
    message["To"] = "support@switchboard.example"
    message["Subject"] = "Re: your order" if c.thread else "Question about my order"
    message_id = f"<{uuid.uuid4()}@example.com>"
    message["Message-ID"] = message_id
    if c.thread:
        message["In-Reply-To"] = c.thread[-1]
        message["References"] = " ".join(c.thread)
    message.set_content(text)
    c.thread.append(message_id)
    with smtplib.SMTP(*smtp, timeout=10) as server:
        server.send_message(message)


async def _sms(client: httpx.AsyncClient, base: str, settings: Settings, c: DemoCustomer, text: str) -> None:
    url = base + "/channels/sms/twilio"
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": "AC" + "0" * 32,
        "From": c.phone,
        "To": "+14155550000",
        "Body": text,
        "NumMedia": "0",
    }
    signature = _twilio_signature(settings.twilio_auth_token or "", url, params)
    response = await client.post(
        url,
        content=urlencode(params),
        headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature},
    )
    response.raise_for_status()


async def _whatsapp(client: httpx.AsyncClient, settings: Settings, c: DemoCustomer, text: str) -> None:
    wa_id = c.phone.lstrip("+")
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"display_phone_number": "14155550000", "phone_number_id": "1000"},
                                "contacts": [{"profile": {"name": c.name}, "wa_id": wa_id}],
                                "messages": [
                                    {
                                        "from": wa_id,
                                        "id": "wamid." + uuid.uuid4().hex,
                                        "timestamp": str(int(time.time())),
                                        "type": "text",
                                        "text": {"body": text},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()
    signature = "sha256=" + hmac.new((settings.meta_app_secret or "").encode(), body, hashlib.sha256).hexdigest()
    response = await client.post(
        "/channels/social/meta",
        content=body,
        headers={"content-type": "application/json", "x-hub-signature-256": signature},
    )
    response.raise_for_status()


async def _telegram(client: httpx.AsyncClient, settings: Settings, c: DemoCustomer, text: str, n: int) -> None:
    first, _, last = c.name.partition(" ")
    update = {
        "update_id": n,
        "message": {
            "message_id": n,
            "date": int(time.time()),
            "text": text,
            "from": {"id": c.telegram_id, "is_bot": False, "first_name": first, "last_name": last},
            "chat": {"id": c.telegram_id, "type": "private"},
        },
    }
    response = await client.post(
        "/channels/social/telegram",
        json=update,
        headers={"x-telegram-bot-api-secret-token": settings.telegram_secret_token or ""},
    )
    response.raise_for_status()


async def run_demo(
    settings: Settings, url: str, smtp: tuple[str, int], customers: int, interactions: int, seed: int = 7
) -> int:
    rng = random.Random(seed)
    people = [DemoCustomer(i, rng) for i in range(customers)]
    ws_base = url.replace("http://", "ws://").replace("https://", "wss://")
    sent = 0
    async with httpx.AsyncClient(base_url=url, timeout=15) as client:
        for n in tqdm(range(interactions), unit="msg", desc="demo"):
            c = rng.choice(people)
            text = rng.choice(ASKS).format(n=rng.randint(1000, 9999))
            channel = rng.choice(["chat", "email", "sms", "whatsapp", "telegram"])
            if channel == "chat":
                await _chat(client, ws_base, c, text)
            elif channel == "email":
                await asyncio.to_thread(_email, smtp, c, text)
            elif channel == "sms":
                await _sms(client, url, settings, c, text)
            elif channel == "whatsapp":
                await _whatsapp(client, settings, c, text)
            else:
                await _telegram(client, settings, c, text, int(time.time() * 1000) % 2_000_000_000 + n)
            sent += 1
    return sent
