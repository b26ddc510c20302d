"""Infrastructure: settings, logs, NATS topology, the event store, embedded servers, quarantine, dead letters."""
