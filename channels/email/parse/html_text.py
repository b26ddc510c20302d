"""HTML as readable text: visible text with its block and paragraph breaks, within a tag budget."""

from __future__ import annotations

import re
from html import unescape

from bs4 import BeautifulSoup
from bs4.element import Comment, Declaration, Doctype, NavigableString, PageElement, ProcessingInstruction, Tag

from channels.email.parse.errors import OverBudget
from channels.email.parse.text import _normalize_newlines, _tidy_text

_INVISIBLE_TAGS = frozenset({"head", "script", "style", "noscript", "template", "title", "meta", "link"})
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main",
    "nav", "ol", "pre", "section", "table", "tr", "ul",
})  # fmt: skip
# Private-use characters mark block and paragraph boundaries while the tree is written out as text.
_BLOCK = "\ue000"
_PARAGRAPH = "\ue001"
# Runs of spacing and marks; a single character class keeps the match linear on any input.
_SPACING_RUN = re.compile(f"[ \n{_BLOCK}{_PARAGRAPH}]+")
_SOURCE_WHITESPACE = re.compile(r"[ \t\r\n\f]+")
_NON_CONTENT_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)
# More tags than any real email has; past this, HTML is read by `_strip_tags`.
_MAX_HTML_TAGS = 50_000
# "[^<>]" rather than "[^>]": a tag never spans another "<", and the match stays linear on a flood of "<".
_ANY_TAG = re.compile(r"<[^<>]*>")
_LINE_BREAKING_TAG = re.compile(r"<(?:br|/?(?:p|div|tr|li|h[1-6]|table|blockquote))\b[^<>]*>", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"<\?xml[^<>]*>", re.IGNORECASE)
# A link label longer than this is layout, not a label; bounds the work for nested links.
_MAX_LINK_LABEL_PIECES = 64


def _html_to_text(html: str, max_depth: int | None = None) -> str:
    """An HTML body as the text a reader sees: blocks on lines of their own, quoted blocks "> "."""
    if "<" not in html:
        return _tidy_text(unescape(html))
    if html.count("<") > _MAX_HTML_TAGS:
        return _strip_tags(html)
    # XHTML mail opens with an XML declaration; it carries no text, and bs4 warns about it.
    html = _XML_DECLARATION.sub("", html)
    return _flatten(_HtmlText(max_depth).render(BeautifulSoup(html, "html.parser")))


def _strip_tags(html: str) -> str:
    """HTML with more tags than any real email (a flood of them costs bs4 seconds): a linear,
    structure-light reading that keeps the words and the line breaks."""
    text = _LINE_BREAKING_TAG.sub("\n", html)
    return _tidy_text(unescape(_ANY_TAG.sub("", text)))


class _HtmlText:
    """Writes parsed HTML out as text with boundary marks (which `_flatten` turns into lines).

    One iterative pass over the tree: hostile nesting must neither exhaust the stack nor cost time
    squared in the depth (which bs4's own tree edits would).
    """

    def __init__(self, max_depth: int | None = None) -> None:
        self.max_depth = max_depth
        self.depth = 0
        self.out: list[str] = []
        self.preformatted = 0
        self.quote_starts: list[int] = []
        self.link_starts: list[int] = []

    def render(self, root: Tag) -> str:
        stack: list[tuple[PageElement, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if leaving:
                self.depth -= 1
                self.leave(node)
            elif isinstance(node, NavigableString):
                self.text(node)
            elif isinstance(node, Tag) and node.name not in _INVISIBLE_TAGS:
                if node.name == "br":
                    self.out.append("\n")
                    continue
                self.enter(node)
                self.depth += 1
                if self.max_depth is not None and self.depth > self.max_depth:
                    raise OverBudget("html_depth", f"HTML nested deeper than {self.max_depth}", structural=True)
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(node.contents))
        return "".join(self.out)

    def text(self, string: NavigableString) -> None:
        if isinstance(string, _NON_CONTENT_STRINGS):
            return
        # Line breaks in HTML source are not line breaks on screen, except inside <pre>.
        self.out.append(str(string) if self.preformatted else _SOURCE_WHITESPACE.sub(" ", string))

    def enter(self, tag: Tag) -> None:
        self.out.append(_boundary_of(tag))
        if tag.name == "li":
            self.out.append("- ")
        elif tag.name == "pre":
            self.preformatted += 1
        elif tag.name == "blockquote":
            self.quote_starts.append(len(self.out))
        elif tag.name == "a":
            self.link_starts.append(len(self.out))

    def leave(self, tag: Tag) -> None:
        if tag.name == "pre":
            self.preformatted -= 1
        elif tag.name == "blockquote":
            self.close_quote()
        elif tag.name == "a":
            self.close_link(tag)
        elif tag.name in ("td", "th"):
            self.out.append(" ")
        self.out.append(_boundary_of(tag))

    def close_quote(self) -> None:
        """Quoted blocks become "> " lines, the way plain-text mail quotes, so quote cutting sees
        them. Only the outermost is marked: inner levels are older history all the same."""
        start = self.quote_starts.pop()
        if self.quote_starts:
            return
        lines = _flatten("".join(self.out[start:])).split("\n")
        del self.out[start:]
        self.out.append("\n".join(f"> {line}" if line else ">" for line in lines))

    def close_link(self, tag: Tag) -> None:
        # A customer's "here" link to their order page is content; the target must stay visible.
        start = self.link_starts.pop()
        href = str(tag.get("href") or "").strip()
        if not href.lower().startswith(("http://", "https://")) or len(self.out) - start > _MAX_LINK_LABEL_PIECES:
            return
        label = "".join(self.out[start:]).strip(f" \n{_BLOCK}{_PARAGRAPH}")
        if label and label != href:
            self.out.append(f" ({href})")


def _boundary_of(tag: Tag) -> str:
    if tag.name == "p":
        # Outlook writes every line as its own <p class=MsoNormal>: lines, not paragraphs.
        classes = tag.get("class") or []
        classes = [classes] if isinstance(classes, str) else classes
        return _BLOCK if any("msonormal" in str(c).lower() for c in classes) else _PARAGRAPH
    return _BLOCK if tag.name in _BLOCK_TAGS else ""


def _flatten(text: str) -> str:
    """Text with boundary marks into lines: a block boundary is a line break, a paragraph's a blank line."""
    text = _SPACING_RUN.sub(_boundary_breaks, text)
    lines = [line.strip() for line in _normalize_newlines(text).replace("\xa0", " ").split("\n")]
    return _tidy_text("\n".join(lines))


def _boundary_breaks(run: re.Match[str]) -> str:
    spacing = run.group(0)
    if _BLOCK not in spacing and _PARAGRAPH not in spacing:
        return spacing
    minimum = 2 if _PARAGRAPH in spacing else 1
    return "\n" * max(minimum, spacing.count("\n") + 1)
