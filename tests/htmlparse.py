"""An HTML parser for the report tests: counts tables and scripts, collects cell texts."""

from __future__ import annotations

from html.parser import HTMLParser


class Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables, self.scripts, self._cell = 0, 0, None
        self.cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tables += tag == "table"
        self.scripts += tag == "script"
        if tag == "td":
            self._cell = ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None
