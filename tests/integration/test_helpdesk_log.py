"""The whole public Helpdesk log through the core, checked against the CSV itself.

Every figure parcours gives (journeys, leaks, invitations, touchpoints outside journeys)
is compared with the same figure computed here straight from the CSV, with the rules of
schemas/examples/helpdesk.yaml restated in a few lines: one journey per ticket, from its
first event to its first "Closed" (included), or until 90 days pass without an event;
its goal is the first "Resolve ticket". Nothing here reads parcours' own helpers to get
the expected answer.
"""

from __future__ import annotations

import csv
import gzip
import statistics
from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from streams.config import load_config
from streams.config.settings import PROJECT_ROOT
from streams.core.events import EventParser
from streams.core.stitching import Message, journey_step
from streams.dev.bench_core import Core
from streams.edge.replay import Summary, load_mapping, read_events
from tests.support.helpdesk import HELPDESK_CONFIG, HELPDESK_MAPPING

LOG = PROJECT_ROOT / "tests" / "data" / "helpdesk_tickets.csv.gz"
CONFIG = load_config(HELPDESK_CONFIG)
DAY_MS = 86_400_000
EXPIRY_MS = 90 * DAY_MS
ROME = ZoneInfo("Europe/Rome")


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("helpdesk") / "helpdesk_tickets.csv"
    path.write_bytes(gzip.decompress(LOG.read_bytes()))
    return path


def expected(csv_path) -> dict:
    """The figures, from the CSV rows alone."""
    tickets: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            local = datetime.strptime(row["Complete Timestamp"], "%Y/%m/%d %H:%M:%S.%f")
            ms = int(local.replace(tzinfo=ROME).timestamp() * 1000)
            tickets[row["Case ID"]].append((ms, number, row["Activity"]))
    figures: dict = {"tickets": sorted(tickets), "outside": 0, "closed": 0}
    hours_to_resolution, unresolved = [], {1: 0, 7: 0, 30: 0}
    assigned_twice = assigned_3_within_90d = 0
    for rows in tickets.values():
        rows.sort()
        span = []  # the journey: first event to the first Closed, or a 90-day silence
        for ms, _, activity in rows:
            if span and ms - span[-1][0] >= EXPIRY_MS:
                break
            span.append((ms, activity))
            if activity == "Closed":
                break
        figures["outside"] += len(rows) - len(span)
        figures["closed"] += span[-1][1] == "Closed"
        opened = span[0][0]
        resolved = next((ms for ms, activity in span if activity == "Resolve ticket"), None)
        if resolved is not None:
            hours_to_resolution.append((resolved - opened) / 3_600_000)
        for days in unresolved:
            unresolved[days] += resolved is None or resolved - opened >= days * DAY_MS
        taken = [ms for ms, activity in span if activity == "Take in charge ticket"]
        assigned_twice += len(taken) >= 2
        assigned_3_within_90d += any(
            b - a < EXPIRY_MS for a, b in zip(taken, taken[2:], strict=False)
        )
    figures.update(
        resolved=len(hours_to_resolution),
        median_hours=statistics.median(hours_to_resolution),
        p90_hours=statistics.quantiles(hours_to_resolution, n=10, method="inclusive")[-1],
        unresolved=unresolved,
        assigned_twice=assigned_twice,
        assigned_3_within_90d=assigned_3_within_90d,
    )
    return figures


def replay_through_the_core(csv_path) -> dict[str, dict]:
    """The log in time order, 500 events per batch, as `parcours replay` sends it; then
    the wall clock a year on, so every journey closes. The latest row of each id."""
    summary = Summary()
    parser = EventParser(CONFIG.touchpoint_types, max_age_seconds=0)
    events = read_events(csv_path, load_mapping(HELPDESK_MAPPING), parser, summary)
    assert summary.accepted == summary.rows == 21_348
    core = Core(partitions=4, config=CONFIG)
    wall_ms = events[-1][0] + DAY_MS  # replayed fast: the whole log within one "day"
    latest: dict[str, dict] = defaultdict(dict)
    id_of = {"journeys": "journey_id", "leaks": "leak_id", "invitations": "invitation_id"}

    def keep(result) -> None:
        for kind, by_key in result.rows.items():
            for rows in by_key.values():
                for row in rows:
                    row_id = row.get(id_of.get(kind, ""), None) or row.get("event_id")
                    old = latest[kind].get(row_id)
                    if old is None or row.get("version", 0) >= old.get("version", 0):
                        latest[kind][row_id] = row

    messages = [(event["customer_id"].encode(), orjson.dumps(event)) for _, event in events]
    for start in range(0, len(messages), 500):
        outcome, result = core.step(messages[start : start + 500], wall_ms=wall_ms)
        assert not outcome.dead_letters and not result.late
        keep(result)
    for later in (wall_ms + 365 * DAY_MS, wall_ms + 366 * DAY_MS):
        ticks = [Message(None, p, 0, {"control": "tick"}) for p in range(4)]
        keep(
            journey_step(
                CONFIG,
                ticks,
                lambda key, _p: core.states.get(key),
                core.watermarks,
                core.due,
                wall_ms=later,
            )
        )
    return latest


def test_the_helpdesk_log_gives_the_figures_its_csv_gives(csv_path):
    want = expected(csv_path)
    got = replay_through_the_core(csv_path)
    journeys = [j for j in got["journeys"].values() if j["status"] != "superseded"]

    # Every ticket has exactly one journey, whatever its first event.
    assert sorted(j["customer_key"] for j in journeys) == sorted(
        f"ticket-{case}" for case in want["tickets"]
    )
    assert len(journeys) == 4_580
    assert {j["entry_stage"] for j in journeys} > {"opened", "in_progress"}
    assert {j["status"] for j in journeys} <= {"closed", "expired"}  # all final a year on

    resolved = [j for j in journeys if j["completed_ms"] is not None]
    assert len(resolved) == want["resolved"]
    hours = [(j["completed_ms"] - j["opened_ms"]) / 3_600_000 for j in resolved]
    assert statistics.median(hours) == pytest.approx(want["median_hours"])
    p90 = statistics.quantiles(hours, n=10, method="inclusive")[-1]
    assert p90 == pytest.approx(want["p90_hours"])
    for days, count in want["unresolved"].items():
        late = [h for h in hours if h >= days * 24]
        assert len(late) + len(journeys) - len(resolved) == count, days

    # "Closed" is the closure stage of the ticket's journey, reached through a touchpoint.
    assert sum("closure" in j["stages_reached"] for j in journeys) == want["closed"]

    # Leaks: not resolved within 7 days; taken in charge 3 times (within the 90-day window).
    leaks = got["leaks"].values()
    assert (
        sum(leak["rule"] == "not_resolved_within_7_days" for leak in leaks) == want["unresolved"][7]
    )
    assert (
        sum(leak["rule"] == "taken_in_charge_3_times" for leak in leaks)
        == want["assigned_3_within_90d"]
    )
    twice = sum(j["path"].count("ticket_assigned") >= 2 for j in journeys)
    assert twice == want["assigned_twice"]

    # A CES invitation per resolved ticket (each ticket is its own customer: no cap hits).
    assert len(got["invitations"]) == want["resolved"]

    # Touchpoints after a ticket's journey ended (after "Closed", or after 90 silent
    # days) are outside it, each with its reason; every other one is in its journey.
    outside = got.get("outside", {}).values()
    assert len(outside) == want["outside"]
    assert {row["reason"] for row in outside} <= {"reentry_not_allowed", "no_open_journey"}
    in_journeys = sum(j["touchpoints"] for j in journeys)
    assert in_journeys + len(outside) == 21_348
