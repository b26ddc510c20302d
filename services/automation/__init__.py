"""The automation role: rules fired from the event log (runner) and their webhooks (webhooks)."""
