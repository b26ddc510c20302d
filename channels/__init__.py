"""Channel adapters: parse and verify a provider's request, build the normalized `Interaction`.

Thin by design: no business rules, no NATS, no database. Each provider module also carries the
outbound HTTP client that sends replies through that provider.
"""
