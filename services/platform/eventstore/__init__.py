"""The event log: eventsourcing's PostgreSQL persistence, with our codec, per-customer keys and a hash chain."""
