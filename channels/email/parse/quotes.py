"""Cutting the quoted earlier conversation: what the customer wrote in this message."""

from __future__ import annotations

import re

from channels.email.parse.text import _tidy_text

# Our own small rules rather than a reply-parser library: the ones on PyPI are either unmaintained
# (email-reply-parser, talon) or large regex tables whose behaviour on hostile input we would have
# to vet anyway (mail-parser-reply). These lines cover the mailers our customers use, are bounded in
# time on any input, and are tested line by line.

_ATTRIBUTION = re.compile(
    r"""^\s*(?:
        On\s.{1,300}\swrote\s?:                    # English: Gmail, Apple Mail, Thunderbird
      | Am\s.{1,300}\sschrieb(?:\s.{0,200})?:      # German: "Am 3. Mai 2024 um 10:00 schrieb Anna <a@x>:"
      | Le\s.{1,300}\sa\s[ée]crit\s?:              # French: "Le 3 mai 2024 à 10:00, Anne <a@x> a écrit :"
      | El\s.{1,300}\sescribi[óo]\s?:              # Spanish
      | Il\s.{1,300}\sha\sscritto\s?:              # Italian
      | Op\s.{1,300}\sschreef(?:\s.{0,200})?:      # Dutch
      | Em\s.{1,300}\sescreveu\s?:                 # Portuguese
    )\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_ATTRIBUTION_START = re.compile(r"^\s*(?:On|Am|Le|El|Il|Op|Em)\s", re.IGNORECASE)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(?:Original Message|Urspr[üu]ngliche Nachricht|Message d'origine|Mensaje original"
    r"|Messaggio originale|Oorspronkelijk bericht|Mensagem original)\s*-{2,}\s*$",
    re.IGNORECASE,
)
# Outlook's header block: "From: ..." with "Sent: ..." (or "Date:") a few lines below, localized.
_HEADER_FROM = re.compile(r"^\s*\*?(?:From|Von|De|Da|Van|Fr[åa]n|Fra)\s?:\*?\s*\S", re.IGNORECASE)
_HEADER_SENT = re.compile(
    r"^\s*\*?(?:Sent|Date|Gesendet|Datum|Envoy[ée]|Enviado|Inviato|Verzonden|Skickat|Sendt|Data)"
    r"(?:\s\w+)?\s?:",
    re.IGNORECASE,
)
_RULE_LINE = re.compile(r"^\s*(?:_{8,}|-{8,})\s*$")
# An inline forward is something the customer wants us to read, not an old reply to cut.
_FORWARD_MARKER = re.compile(r"forward|weitergeleitet|transf[ée]r|reenviado|inoltrato|doorgestuurd", re.I)
_HEADER_BLOCK_REACH = 6


def _cut_quoted_reply(text: str) -> str:
    """What the customer wrote in this message: the earlier conversation they quoted is cut away.

    Cut at the first reply header ("On ... wrote:", "-----Original Message-----", Outlook's
    "From:/Sent:" block) with everything after it, and drop "> " lines above it. When nothing is
    left (a reply written below the quote), keep every line that is not quoted.
    """
    lines = text.split("\n")
    end = _quote_start(lines)
    reply = _tidy_text("\n".join(line for line in lines[:end] if not _is_quoted(line)))
    if reply:
        return reply
    unquoted = (line for line in lines if not _is_quoted(line) and not _is_reply_header(line))
    return _tidy_text("\n".join(unquoted)) or text


def _quote_start(lines: list[str]) -> int:
    for index in range(len(lines)):
        if (
            _starts_attribution(lines, index)
            or _ORIGINAL_MESSAGE.match(lines[index])
            or _starts_header_block(lines, index)
        ):
            return _include_rule_above(lines, index)
    return len(lines)


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _is_reply_header(line: str) -> bool:
    return bool(_ATTRIBUTION.match(line) or _ORIGINAL_MESSAGE.match(line) or _RULE_LINE.match(line))


def _starts_attribution(lines: list[str], index: int) -> bool:
    if not _ATTRIBUTION_START.match(lines[index]):
        return False
    # Gmail wraps a long attribution over two or three lines.
    for span in (1, 2, 3):
        joined = " ".join(line.strip() for line in lines[index : index + span])
        if _ATTRIBUTION.match(joined):
            return True
    return False


def _starts_header_block(lines: list[str], index: int) -> bool:
    if not _HEADER_FROM.match(lines[index]):
        return False
    following = lines[index + 1 : index + 1 + _HEADER_BLOCK_REACH]
    if not any(_HEADER_SENT.match(line) for line in following):
        return False
    return not _FORWARD_MARKER.search(_previous_nonblank(lines, index))


def _include_rule_above(lines: list[str], index: int) -> int:
    """Outlook draws a line of underscores above its header block; it belongs to the quote."""
    above = index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    return above if above >= 0 and _RULE_LINE.match(lines[above]) else index


def _previous_nonblank(lines: list[str], index: int) -> str:
    for line in reversed(lines[max(0, index - 3) : index]):
        if line.strip():
            return line
    return ""
