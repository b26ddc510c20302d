"""Meta's webhooks (WhatsApp Cloud API, Messenger, Instagram messaging) and the Graph API sends.

One endpoint receives all three: the envelope's `object` tells them apart
(`whatsapp_business_account`, `page`, `instagram`). Every request is signed with the app secret
(`X-Hub-Signature-256`); the endpoint's GET answers Meta's subscription handshake.

Cut along its seams: `signature` (request checks), `envelope` (the decoded body shapes), `webhook`
(one request as interactions), `whatsapp` and `messenger` (each product's events), `fields` (value
conversions both share), `graph` (the outbound client).
"""

from channels.social.meta.graph import DEFAULT_GRAPH_BASE, MetaClient
from channels.social.meta.signature import SIGNATURE_HEADER, meta_signature, verify_handshake, verify_meta_signature
from channels.social.meta.webhook import parse_meta_webhook

__all__ = [
    "DEFAULT_GRAPH_BASE",
    "SIGNATURE_HEADER",
    "MetaClient",
    "meta_signature",
    "parse_meta_webhook",
    "verify_handshake",
    "verify_meta_signature",
]
