"""One pattern language for `matches`, read the same by RE2 (automations, in Python) and by
PostgreSQL's regular expressions (segments, `~` in SQL).

A pattern is RE2 syntax restricted to what both engines read alike, and `portable` writes it in the
form both run: the shorthand classes spelled out as the ASCII sets RE2 means by them (PostgreSQL's
`\\d`, `\\s` and `\\w` follow the database's locale), `\\A` and `\\z` as `^` and `$`. What either engine
reads differently is refused with the reason and what to write instead:

- `\\b` and `\\B` (word boundaries in RE2, a backspace in PostgreSQL), `\\pN` and `\\p{Greek}` (RE2's
  Unicode classes), `\\Q...\\E`, `\\x41` and octal escapes (PostgreSQL's `\\x` takes any number of hex
  digits), POSIX classes `[[:alpha:]]` (ASCII in RE2, the locale's in PostgreSQL);
- flags other than one `(?i)` at the very start (RE2's `(?s)`, `(?m)`, `(?U)` mean other things in
  PostgreSQL or nothing), `(?i:...)`, named groups;
- a repeat count over 255 (PostgreSQL's limit), a `{` or `}` that is not a repeat count (RE2 reads
  it as a letter, PostgreSQL as an error): `\\{`, `\\}`;
- `(?i)` with letters beyond ASCII (RE2 folds Unicode case, PostgreSQL as its locale does).

`.` matches any character, a newline too, in both: PostgreSQL's rule, and RE2 runs with `dot_nl`
(services.domain.filters). Lazy quantifiers are kept: whether a text matches does not depend on them.
"""

from __future__ import annotations

import re

MAX_REPEAT = 255  # PostgreSQL's RE_DUP_MAX

_CLASSES = {  # RE2's meaning of the shorthands (ASCII), as bracket contents both engines read alike
    "d": "0-9",
    "s": "\\t\\n\\f\\r ",
    "w": "0-9A-Za-z_",
}
_CONTROL = frozenset("ntrfv")  # \n \t \r \f \v: the same character in both
_BOUND = re.compile(r"\{(\d+)(,(\d*))?\}")
_PUNCTUATION = frozenset("\\.^$|?*+()[]{}-/#&~!\"',:;<=>@%`_")


class PatternError(ValueError):
    """The pattern reads differently in RE2 and PostgreSQL; the message says what to write instead."""


def portable(pattern: str) -> str:
    """The pattern as both engines run it, or PatternError. Expects a pattern RE2 compiles."""
    out: list[str] = []
    i, n = 0, len(pattern)
    insensitive = pattern.startswith("(?i)")
    if insensitive:
        if any(ord(ch) > 127 for ch in pattern):
            raise PatternError("(?i) with letters beyond ASCII: case folds differently in PostgreSQL")
        out.append("(?i)")
        i = 4
    atom = False  # is there something a repeat may apply to just before `i`
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            text, i = _escape(pattern, i, in_bracket=False)
            out.append(text)
            atom = True
        elif ch == "[":
            text, i = _bracket(pattern, i)
            out.append(text)
            atom = True
        elif ch == "(":
            if pattern.startswith("(?", i) and not pattern.startswith("(?:", i):
                raise PatternError(
                    "only (?:...) groups and one (?i) at the start: flags, (?i:...) and named groups "
                    "read differently in PostgreSQL"
                )
            out.append("(?:" if pattern.startswith("(?:", i) else "(")
            i += 3 if pattern.startswith("(?:", i) else 1
            atom = False
        elif ch == "{":
            bound = _BOUND.match(pattern, i)
            if bound is None or not atom:
                raise PatternError("a literal { is written \\{")
            low, high = int(bound.group(1)), bound.group(3)
            if low > MAX_REPEAT or (high not in (None, "") and int(high) > MAX_REPEAT):
                raise PatternError(f"repeat counts go up to {MAX_REPEAT} (PostgreSQL's limit)")
            out.append(bound.group(0))
            i = bound.end()
            if i < n and pattern[i] == "?":  # lazy: kept
                out.append("?")
                i += 1
            atom = False
        elif ch == "}":
            raise PatternError("a literal } is written \\}")
        elif ch in "*+?":
            if not atom:
                raise PatternError(f"{ch} repeats nothing here")
            out.append(ch)
            i += 1
            if i < n and pattern[i] == "?":
                out.append("?")
                i += 1
            atom = False
        else:
            out.append(ch)
            i += 1
            atom = ch not in "|^$"
    return "".join(out)


def _escape(pattern: str, i: int, *, in_bracket: bool) -> tuple[str, int]:
    """The escape at `i` (a backslash) as both engines read it, and the index after it."""
    if i + 1 >= len(pattern):
        raise PatternError("a pattern cannot end with \\")
    ch = pattern[i + 1]
    if ch in _CLASSES:
        return (_CLASSES[ch] if in_bracket else f"[{_CLASSES[ch]}]"), i + 2
    if ch.lower() in _CLASSES:  # \D \S \W
        if in_bracket:
            raise PatternError(f"\\{ch} inside [...] reads differently in PostgreSQL: use [^...]")
        return f"[^{_CLASSES[ch.lower()]}]", i + 2
    if ch in _CONTROL or ch in _PUNCTUATION:
        return pattern[i : i + 2], i + 2
    if not in_bracket and ch == "A":
        return "^", i + 2
    if not in_bracket and ch == "z":
        return "$", i + 2
    reasons = {
        "b": "\\b is a word boundary in RE2 and a backspace in PostgreSQL: spell the boundary out, "
        "e.g. (^|[^0-9A-Za-z_])",
        "B": "\\B reads differently in PostgreSQL",
        "p": "Unicode classes (\\p) are RE2's only: list the characters",
        "P": "Unicode classes (\\P) are RE2's only: list the characters",
        "Q": "\\Q...\\E is RE2's only: escape each character with \\",
        "x": "write the character itself rather than \\x (PostgreSQL reads more hex digits)",
    }
    if ch in reasons:
        raise PatternError(reasons[ch])
    raise PatternError(f"\\{ch} reads differently in PostgreSQL: write the character itself")


def _bracket(pattern: str, i: int) -> tuple[str, int]:
    """The bracket expression at `i` (a `[`) as both engines read it, and the index after it."""
    out = ["["]
    i += 1
    if i < len(pattern) and pattern[i] == "^":
        out.append("^")
        i += 1
    if i < len(pattern) and pattern[i] == "]":  # a leading ] is a member in both
        out.append("]")
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        ch = pattern[i]
        if ch == "[" and i + 1 < len(pattern) and pattern[i + 1] in ":.=":
            raise PatternError("POSIX classes such as [[:alpha:]] follow PostgreSQL's locale: list the characters")
        if ch == "\\":
            text, i = _escape(pattern, i, in_bracket=True)
            out.append(text)
            continue
        out.append(ch)
        i += 1
    if i >= len(pattern):
        raise PatternError("missing ]")
    out.append("]")
    return "".join(out), i + 1
