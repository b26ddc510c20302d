"""Segments: saved filters over the customers, whose members are found at query time."""
