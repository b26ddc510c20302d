"""Read models built from the event log, each with its position stored in the same transaction."""
