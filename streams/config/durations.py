"""Durations as the configuration writes them: a number and a unit (90s, 30m, 2h, 7d)."""

from __future__ import annotations

_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text: str) -> int:
    """'90s', '30m', '2h', '7d' in milliseconds (the config schema has checked the form)."""
    return int(float(text[:-1]) * _UNIT_MS[text[-1]])


def duration_text(ms: int) -> str:
    """The largest unit that writes `ms` whole: 2592000000 -> '30d', 5400000 -> '90m'."""
    for unit in ("d", "h", "m", "s"):
        if ms % _UNIT_MS[unit] == 0:
            return f"{ms // _UNIT_MS[unit]}{unit}"
    return f"{ms / 1000:g}s"
