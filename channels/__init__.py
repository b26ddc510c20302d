"""Channel adapters, in and out.

In: parse and verify a provider's request, build the normalized `Interaction`, publish it
(`channels.publish`), answer (`channels.routes`, `channels.chat_gateway`, `channels.email.smtp`).
Out: the outbound port (`channels.outbound`): `Delivery`, the `Sender` protocol and every sender,
chat's included; a provider's HTTP client lives with its inbound parser (`channels.sms.twilio`,
`channels.social.meta.graph`, `channels.social.telegram`) and the senders use it.

Thin by design: no business rules and no database here; the use cases above decide what a message
means (services/core) and when a reply goes out (services/relay).
"""
