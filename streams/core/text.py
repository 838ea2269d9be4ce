"""Text from outside (producers, receivers, files) made safe to print."""

from __future__ import annotations


def printable(text: str, limit: int = 200) -> str:
    """`text` at most `limit` characters long, control characters (escape sequences, bell,
    carriage returns) shown as `\\xNN`, so that bytes from outside cannot drive a terminal
    or forge a log line."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown if len(text) <= limit else shown + "…"


def table(title: str, headers: list[str], rows: list[tuple]) -> str:
    """A titled text table whose columns fit their longest value (or header).

    The title heads the first column; the other headers head theirs. Numbers (and
    texts that read as numbers, like "33.3%") are right-aligned, with thousands
    separators for whole numbers; everything else is left-aligned.
    """
    cells = [[_cell(value) for value in row] for row in rows]
    columns = len(headers) + 1
    widths = [max([0, *(len(row[i]) for row in cells)]) for i in range(columns)]
    widths[0] = max(widths[0], len(title) - 2)
    for i, header in enumerate(headers, start=1):
        widths[i] = max(widths[i], len(header))
    right = [all(_numeric(row[i]) for row in cells) for i in range(columns)]

    def line(values: list[str]) -> str:
        padded = [
            value.rjust(width) if align else value.ljust(width)
            for value, width, align in zip(values, widths, right, strict=True)
        ]
        return "  ".join(padded).rstrip()

    head = title.ljust(widths[0] + 2) + line(["", *headers])[widths[0] :]
    return "\n".join([head.rstrip(), *("  " + line(row) for row in cells)])


def _cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and text.replace(",", "").replace(".", "").rstrip("%").lstrip("-").isdigit()
