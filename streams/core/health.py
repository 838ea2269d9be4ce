"""Customer health: a 0-100 score from what happened to the customer recently. Pure.

    score = 100 - sum of the weights of the window's leaks (by severity), detractor and
            promoter answers, and support contacts; clamped to 0-100

Recency (`idle_day` per day since the last touchpoint) depends on the reading time,
not on events, so the row carries the weight and the view `customer_health_now`
applies it. Survey answers are classified the usual way: NPS 0-6 detractor, 9-10
promoter; CSAT 1-2 detractor, 4-5 promoter; CES 5-7 detractor, 1-2 promoter.
"""

from __future__ import annotations

from collections.abc import Iterable

from streams.config.rules import Health
from streams.core.state import Event

DAY_MS = 86_400_000
# metric -> (detractor test, promoter test)
_CLASSES = {
    "nps": (lambda s: s <= 6, lambda s: s >= 9),
    "csat": (lambda s: s <= 2, lambda s: s >= 4),
    "ces": (lambda s: s >= 5, lambda s: s <= 2),
}
KINDS = ("leak_high", "leak_medium", "leak_low", "detractor", "promoter", "contact")


def answer_class(metric: object, score: object) -> str | None:
    """'detractor', 'promoter' or None for a survey answer."""
    tests = _CLASSES.get(metric) if isinstance(metric, str) else None
    if tests is None or not isinstance(score, int | float):
        return None
    if tests[0](score):
        return "detractor"
    return "promoter" if tests[1](score) else None


def update_health(
    health: Health,
    state: dict | None,
    customer_key: str,
    fresh: list[Event],
    leak_rows: Iterable[dict],
    segment: str,
    watermark_ms: int,
    now_ms: int,
) -> tuple[dict, dict | None]:
    """The health state with `fresh` touchpoints and new leaks in; a row if it changed."""
    state = state or {"items": [], "last_ms": None, "emitted": None, "version": 0}
    items = list(state["items"])  # [ts_ms, kind]; never changed in place
    for event in fresh:
        if event.type in health.contacts:
            items.append([event.ts_ms, "contact"])
        extras = event.extras or {}
        kind = answer_class(extras.get("metric"), extras.get("score"))
        if kind:
            items.append([event.ts_ms, kind])
    items += [[row["due_ms"], f"leak_{row['severity']}"] for row in leak_rows]
    horizon_ms = watermark_ms - health.window_ms
    items = [i for i in items if i[0] > horizon_ms]
    last_ms = max([e.ts_ms for e in fresh], default=state["last_ms"])

    counts = dict.fromkeys(KINDS, 0)
    for _, kind in items:
        counts[kind] += 1
    penalty = sum(health.weights[kind] * n for kind, n in counts.items())
    score = round(min(100.0, max(0.0, 100.0 - penalty)), 1)
    day = None if last_ms is None else last_ms // DAY_MS
    signature = [score, [counts[k] for k in KINDS], segment, day]
    updated = {**state, "items": items, "last_ms": last_ms}
    if last_ms is None or signature == state["emitted"]:
        return updated, None
    version = state["version"] + 1
    row = {
        "customer_key": customer_key,
        "score": score,
        "segment": segment,
        "leaks": counts["leak_high"] + counts["leak_medium"] + counts["leak_low"],
        "detractors": counts["detractor"],
        "promoters": counts["promoter"],
        "contacts": counts["contact"],
        "last_touchpoint_ms": last_ms,
        "idle_day_weight": health.weights["idle_day"],
        "window_days": health.window_ms / DAY_MS,
        "version": version,
        "updated_ms": now_ms,
    }
    return {**updated, "emitted": signature, "version": version}, row
