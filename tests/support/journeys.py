"""The default configuration, time units and hypothesis histories for journey-core tests."""

from __future__ import annotations

import random

import orjson
from hypothesis import strategies as st

from streams.config import load_config
from streams.config.settings import SCHEMAS_DIR
from streams.core.state import CustomerState, Event, position

CONFIG = load_config(SCHEMAS_DIR / "journeys.yaml")


H = 3_600_000


DAY = 24 * H


LATENESS = 10 * 60_000


FAR_FUTURE = 10**13


def ev(ts, eid, kind, channel="web", **extras):
    """A touchpoint as the core sees it; extras: a survey answer's metric and score, an
    order's amount, a task id."""
    return Event(ts, eid, kind, channel, extras or None)


KINDS = sorted(CONFIG.touchpoint_types)  # every configured type, signals included


histories = st.lists(
    st.tuples(st.integers(0, 30 * DAY // 60_000), st.sampled_from(KINDS)), max_size=40
).map(
    lambda pairs: sorted(
        (ev(minute * 60_000, f"e{i}", kind) for i, (minute, kind) in enumerate(pairs)),
        key=position,
    )
)


def shuffled_within_lateness(events, seed):
    """An arrival order in which no event is late: each waits at most the lateness."""
    rng = random.Random(seed)
    arrivals = ((e.ts_ms + rng.randint(0, LATENESS), e.event_id) for e in events)
    return [e for _, e in sorted(zip(arrivals, events, strict=True))]


def through_json(state: CustomerState) -> CustomerState:
    """The state as a restarted worker reads it back from the changelog."""
    return CustomerState.from_json(orjson.loads(orjson.dumps(state.to_json())))
