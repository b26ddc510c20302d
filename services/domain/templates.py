"""Canned responses' placeholders, filled when an agent replies with one.

`{{customer.name}}`, `{{agent.name}}` and `{{case.id}}` (spaces inside the braces allowed) become
their values; a value that is missing (a customer we know no name of) becomes nothing, together with
the spaces before it, so "Hi {{customer.name}}, ..." reads "Hi, ..." and never shows the raw
placeholder. Other `{{...}}` text is left as written (it is the agent's text, not ours to guess).
"""

from __future__ import annotations

import re

PLACEHOLDERS = ("customer.name", "agent.name", "case.id")
_PLACEHOLDER = re.compile(r"([ \t]*)\{\{\s*(customer\.name|agent\.name|case\.id)\s*\}\}")


def fill(text: str, values: dict[str, str | None]) -> str:
    def one(match: re.Match[str]) -> str:
        value = (values.get(match.group(2)) or "").strip()
        return match.group(1) + value if value else ""

    return _PLACEHOLDER.sub(one, text)
