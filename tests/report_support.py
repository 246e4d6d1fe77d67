"""Reading a cycle report (reports/cycle_report.py) as a test reads it: its metric cells, images,
links and tags."""

from __future__ import annotations

from html.parser import HTMLParser


class Page(HTMLParser):
    """What a test reads of a page: metric cells, images, links, scripts, ids."""

    def __init__(self, text: str):
        super().__init__()
        self.metrics: list[tuple[str, str, str]] = []  # (key, data-value, text)
        self.images: list[str] = []
        self.refs: list[str] = []
        self.tags: set[str] = set()
        self._open: list | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(a.get("src", ""))
        self.refs += [v for k, v in attrs if k in ("href", "src") and v]
        if "data-metric" in a:
            self._open = [a["data-metric"], a["data-value"], ""]

    def handle_data(self, data):
        if self._open is not None:
            self._open[2] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            self.metrics.append(tuple(self._open))
            self._open = None
