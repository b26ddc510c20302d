"""Pure rules and aggregates: no I/O, no clock, no logging; imports only `events` (and the stdlib, phonenumbers)."""
