"""The outbound port: agents' replies out through each channel, in the customer's own thread.

The relay builds a `Delivery` for each reply and hands it to the `Sender` of the case's channel;
`channel_senders(settings, js, names)` gives it one per channel it can reply on: chat always,
each provider when configured (`provider_senders(settings)`; a channel without credentials gets
none, and the relay records such a reply as failed: "not configured"). A sender returns the
provider's message id, or raises `ProviderError` saying whether a retry may succeed.

Where a reply goes comes from the case's thread key, written by the inbound adapter that opened it:

| channel   | thread key                                   | sent with                          |
| --------- | -------------------------------------------- | ---------------------------------- |
| email     | root Message-ID of the thread                | SMTP relay, In-Reply-To/References |
| sms       | `sms:<our number>:<customer>`                | Twilio REST                        |
| whatsapp  | `whatsapp:<+our number>:<+customer>`         | Twilio REST (`whatsapp:` addresses)|
| whatsapp  | `whatsapp:<phone_number_id>:<wa_id>`         | Graph API (Cloud API)              |
| messenger | `messenger:<page id>:<PSID>`                 | Graph API                          |
| instagram | `instagram:<account id>:<IGSID>`             | Graph API                          |
| telegram  | `telegram:<chat id>`                         | Bot API `sendMessage`              |
| chat      | `chat:<session id>`                          | the session's outbox stream        |

One module per sender (`email`, `twilio`, `meta`, `whatsapp`, `telegram`, `chat`); `port` holds the
port itself, `registry` which senders a process has.
"""

from channels.outbound.chat import ChatSender
from channels.outbound.email import EmailSender
from channels.outbound.meta import MetaSender
from channels.outbound.port import HTTP_TIMEOUT, Delivery, Sender
from channels.outbound.registry import channel_senders, provider_senders
from channels.outbound.telegram import TelegramSender
from channels.outbound.twilio import TWILIO_STATUS_PATH, TwilioSender
from channels.outbound.whatsapp import WhatsAppSender

__all__ = [
    "HTTP_TIMEOUT",
    "TWILIO_STATUS_PATH",
    "ChatSender",
    "Delivery",
    "EmailSender",
    "MetaSender",
    "Sender",
    "TelegramSender",
    "TwilioSender",
    "WhatsAppSender",
    "channel_senders",
    "provider_senders",
]
