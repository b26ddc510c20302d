"""Plain text: line breaks, control characters and whitespace made safe to store; format=flowed rejoined."""

from __future__ import annotations

import re

from channels.email.parse.charsets import _restore_8bit

# Controls that are noise in text (and NUL, which PostgreSQL text refuses); tab and newline stay.
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufeff\ue000\ue001]")
_WHITESPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _normalize_newlines(text: str) -> str:
    return _LINE_BREAK.sub("\n", text)


def _clean_line(text: str) -> str:
    """One-line text (a header, a name) safe to store: real characters, single spaces."""
    text = _restore_8bit(text)
    return _WHITESPACE.sub(" ", _CONTROL_CHARACTERS.sub("", text)).strip()


def _tidy_text(text: str) -> str:
    """Body text safe to store and pleasant to read: no controls, no trailing spaces, few blank lines."""
    text = _CONTROL_CHARACTERS.sub("", _normalize_newlines(_restore_8bit(text)))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip("\n")


def _unflow(text: str, *, delete_space: bool) -> str:
    """format=flowed (RFC 3676): a line ending in a space goes on in the next line; rejoin them."""
    paragraphs: list[list] = []  # [quote depth, text]
    continues = False
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        content = content[1:] if content.startswith(" ") else content  # undo space-stuffing
        if continues and paragraphs and paragraphs[-1][0] == depth:
            paragraphs[-1][1] += content
        else:
            paragraphs.append([depth, content])
        continues = content.endswith(" ") and content != "-- "
        if continues and delete_space:
            paragraphs[-1][1] = paragraphs[-1][1][:-1]
    return "\n".join((">" * depth + " " if depth else "") + content for depth, content in paragraphs)
