"""Text from outside (producers, receivers, files) made safe to print."""

from __future__ import annotations


def printable(text: str, limit: int = 200) -> str:
    """`text` at most `limit` characters long, control characters (escape sequences, bell,
    carriage returns) shown as `\\xNN`, so that bytes from outside cannot drive a terminal
    or forge a log line."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown if len(text) <= limit else shown + "…"
