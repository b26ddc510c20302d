"""Agents and teams as a use case: creating and changing them, passwords, sign-in sessions."""
