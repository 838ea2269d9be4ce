"""What a producer may leave out of an event, filled in at the edge. Pure.

The collector and the producer helper call `stamped` on each event before validating it:
- `event_id` absent: a new UUIDv7 (RFC 9562), time-ordered, so ids sort by creation;
- `ts` absent: the receiver's clock (the producer helper's, or the collector's);
- `sent_at` given (collector only): the client's clock may be wrong, but the gap between
  its `ts` and its `sent_at` is right, so `ts` becomes `received_at - (sent_at - ts)`,
  as Segment and RudderStack do; the client's value stays in `original_ts`.
A value that does not parse is left as it is: validation then names the field.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Any

from streams.core.eventtime import epoch_ms, from_epoch_ms


def uuid7(now_ms: int) -> str:
    """A UUID version 7: 48 bits of Unix milliseconds, then 74 random bits."""
    random = int.from_bytes(os.urandom(10))
    value = (
        (now_ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version
        | (random >> 62 & 0xFFF) << 64  # rand_a
        | 0b10 << 62  # variant
        | random & 0x3FFF_FFFF_FFFF_FFFF  # rand_b
    )
    return str(uuid.UUID(int=value))


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as the RFC 3339 text events carry: 2026-11-26T21:26:43.120Z."""
    text = from_epoch_ms(ms).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return epoch_ms(parsed) if parsed.tzinfo else None


def stamped(event: Any, now_ms: int, *, received: bool = False) -> Any:
    """`event` with `event_id` and `ts` filled in when absent; with `received` (the
    collector), also `received_at`, and `ts` corrected for the client's clock skew when
    `sent_at` is given. Anything but an object comes back as it is, for validation."""
    if not isinstance(event, dict):
        return event
    out = dict(event)
    if "event_id" not in out:
        out["event_id"] = uuid7(now_ms)
    if not received:
        out.setdefault("ts", rfc3339(now_ms))
        return out
    out["received_at"] = rfc3339(now_ms)
    if "ts" not in out:
        out["ts"] = rfc3339(now_ms)
        return out
    sent_ms, ts_ms = _ms(out.get("sent_at")), _ms(out["ts"])
    if sent_ms is not None and ts_ms is not None:
        out["original_ts"] = out["ts"]
        out["ts"] = rfc3339(ts_ms + now_ms - sent_ms)
    return out
