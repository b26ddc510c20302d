"""The timer role: the SLA clock's breaches and snoozed cases' wake-ups, on time and once."""
