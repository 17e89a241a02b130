"""HTML to plain text, good enough for content patterns (not for display)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_SKIPPED = frozenset({"script", "style", "head", "title"})
_BREAKS = frozenset({"br", "p", "div", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "table"})


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skip_depth += 1
        elif tag in _BREAKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED and self._skip_depth:
            self._skip_depth -= 1
        elif tag in _BREAKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.chunks.append(data)


def html_to_text(markup: str) -> str:
    """The visible text of an HTML document; falls back to a crude strip if parsing fails."""
    collector = _TextCollector()
    try:
        collector.feed(markup)
        collector.close()
        return "".join(collector.chunks)
    except Exception:  # the parser is lenient, but a malformed document must not stop us
        return html.unescape(re.sub(r"<[^>]*>", " ", markup))
