"""Routing: assigns cases of routed queues to online agents with the skills and the room for them."""
