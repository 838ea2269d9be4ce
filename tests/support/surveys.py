"""Survey-decision helpers: events with extras, rule subsets, decisions while events arrive."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, datetime

from streams.core.customer import add_events, advance, new_state
from streams.core.eventtime import Watermark
from streams.core.state import Stamped
from tests.support.journeys import CONFIG, FAR_FUTURE, LATENESS, through_json

MINUTE = 60_000


T0 = int(datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp() * 1000)  # a Monday, 11:00 Paris


def with_surveys(config=CONFIG, **changes):
    return dataclasses.replace(config, surveys=dataclasses.replace(config.surveys, **changes))


def only_rules(*names, config=CONFIG, **changes):
    """The configured rules `names`, sampling everyone (sampling has its own tests)."""
    rules = {
        name: dataclasses.replace(config.surveys.rules[name], sample=(("default", 1.0),))
        for name in names
    }
    return with_surveys(config, rules=rules, **changes)


def decisions(
    arrivals, config=CONFIG, batch_size=1, final_watermark=FAR_FUTURE, profile=None, restart=False
):
    """Invitations and suppressions decided while events arrive in this order.

    With `restart`, the state goes through JSON between batches, as through the changelog.
    Fails if an invitation id is decided twice.
    """
    profile = {name: Stamped(*value) for name, value in (profile or {}).items()}
    state = replace(new_state(), identified=True, profile=profile)
    mark = Watermark(LATENESS, idle_timeout_ms=60_000)
    invited, suppressed = {}, {}

    def collect(out):
        for row in out.invitations:
            assert row["invitation_id"] not in invited | suppressed, "decided twice"
            invited[row["invitation_id"]] = row
        for row in out.suppressions:
            assert row["invitation_id"] not in invited | suppressed, "decided twice"
            suppressed[row["invitation_id"]] = row

    for start in range(0, len(arrivals), batch_size):
        fresh = [e for e in arrivals[start : start + batch_size] if mark.observe(e.ts_ms, 0)]
        out = advance(config, add_events(state, fresh), "c", mark.value, now_ms=1)
        state = through_json(out.state) if restart else out.state
        collect(out)
    out = advance(config, state, "c", final_watermark, now_ms=1)
    collect(out)
    return invited, suppressed


def summary(invited, suppressed):
    return sorted(
        [(r["rule"], r["anchor_event_id"], "sent") for r in invited.values()]
        + [(r["rule"], r["anchor_event_id"], r["reason"]) for r in suppressed.values()]
    )
