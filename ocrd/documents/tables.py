"""Tables as Mistral's ``table_format`` wants them: taken out of the page's markdown into
``tables[]`` (``tbl-N.html`` or ``tbl-N.md``, numbered across the document) and replaced there by
a link to their id, in the format asked for. Models write tables as HTML (dots.ocr, olmOCR,
DeepSeek-OCR, the builtin engines' table regions) or as markdown pipe tables; either converts to
the other. Merged cells (colspan/rowspan) are repeated as empty cells in markdown, which has none.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_HTML_TABLE = re.compile(r"<table\b.*?</table>", re.S | re.I)
# A pipe table: a header row, a separator row of dashes, then rows; each line starts with "|".
_PIPE_ROW = r"^[ \t]*\|.*\|[ \t]*"
_PIPE_SEPARATOR = r"^[ \t]*\|[ \t:|-]*-[ \t:|-]*\|[ \t]*\n"
_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
_PIPE_TABLE = re.compile(rf"(?:{_PIPE_ROW}\n)(?:{_PIPE_SEPARATOR})(?:{_PIPE_ROW}(?:\n|\Z))*", re.M)


class TableCollector:
    """One per request: numbers tables across pages."""

    def __init__(self, table_format: str):
        self.format = table_format
        self.ext = "html" if table_format == "html" else "md"
        self.count = 0

    def extract(self, text: str) -> tuple[str, list[dict[str, str]]]:
        """``text`` with its tables replaced by links, and the tables."""
        tables: list[dict[str, str]] = []

        def replace(match: re.Match[str], source: str) -> str:
            rows = html_rows(match.group(0)) if source == "html" else pipe_rows(match.group(0))
            table_id = f"tbl-{self.count}.{self.ext}"
            self.count += 1
            content = rows_to_html(rows) if self.format == "html" else rows_to_markdown(rows)
            tables.append({"id": table_id, "content": content, "format": self.format})
            tail = "\n" if source == "pipe" and match.group(0).endswith("\n") else ""
            return f"[{table_id}]({table_id})" + tail

        text = _HTML_TABLE.sub(lambda m: replace(m, "html"), text)
        text = _PIPE_TABLE.sub(lambda m: replace(m, "pipe"), text)
        return text, tables


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[tuple[str, int, int]]] = []  # (text, colspan, rowspan)
        self._cell: list[str] | None = None
        self._span = (1, 1)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            if not self.rows:
                self.rows.append([])
            values = dict(attrs)
            self._cell, self._span = [], (_int(values.get("colspan")), _int(values.get("rowspan")))
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append((" ".join("".join(self._cell).split()), *self._span))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _int(value: str | None) -> int:
    try:
        return max(1, min(int(value or 1), 1000))
    except ValueError:
        return 1


def html_rows(table: str) -> list[list[str]]:
    """An HTML table's cells as a grid; merged cells fill their span with empty cells."""
    parser = _Cells()
    parser.feed(table)
    grid: dict[tuple[int, int], str] = {}
    for r, row in enumerate(parser.rows):
        c = 0
        for text, colspan, rowspan in row:
            while (r, c) in grid:
                c += 1
            for dr in range(rowspan):
                for dc in range(colspan):
                    grid[(r + dr, c + dc)] = text if (dr, dc) == (0, 0) else ""
            c += colspan
    if not grid:
        return []
    height = max(r for r, _ in grid) + 1
    width = max(c for _, c in grid) + 1
    return [[grid.get((r, c), "") for c in range(width)] for r in range(height)]


def pipe_rows(table: str) -> list[list[str]]:
    rows = []
    for line in table.strip().splitlines():
        inner = line.strip().removeprefix("|")
        inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
        cells = [cell.strip().replace("\\|", "|") for cell in _UNESCAPED_PIPE.split(inner)]
        if all(re.fullmatch(r":?-+:?", cell) for cell in cells if cell):  # the separator row
            continue
        rows.append(cells)
    return rows


def rows_to_markdown(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    padded = [[cell.replace("|", "\\|") for cell in row] + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(padded[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(row) + " |" for row in padded[1:]]
    return "\n".join(lines)


def rows_to_html(rows: list[list[str]]) -> str:
    body = "".join("<tr>" + "".join(f"<{tag}>{html.escape(cell)}</{tag}>" for cell in row) + "</tr>"
                   for row, tag in ((row, "th" if i == 0 else "td") for i, row in enumerate(rows)))
    return f"<table>{body}</table>"
