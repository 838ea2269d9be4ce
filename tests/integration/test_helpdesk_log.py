"""The whole public Helpdesk log through the core, checked against the CSV itself.

Every figure parcours gives (journeys, leaks, invitations, touchpoints outside journeys)
is compared with the same figure computed here straight from the CSV, with the rules of
schemas/examples/helpdesk.yaml restated in a few lines: one journey per ticket, from its
first event until 90 days pass without an event (with `after_close: outside`, only to
its first "Closed", included); its goal is the first "Resolve ticket". Nothing here reads
parcours' own helpers to get the expected answer.
"""

from __future__ import annotations

import csv
import gzip
import statistics
import tempfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path
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
DAY_MS = 86_400_000
EXPIRY_MS = 90 * DAY_MS
ROME = ZoneInfo("Europe/Rome")


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("helpdesk") / "helpdesk_tickets.csv"
    path.write_bytes(gzip.decompress(LOG.read_bytes()))
    return path


def config_with(after_close: str):
    """The shipped Helpdesk config with `after_close` set as asked."""
    text = HELPDESK_CONFIG.read_text()
    assert "after_close: reopen" in text
    return load_config_text(text.replace("after_close: reopen", f"after_close: {after_close}"))


def load_config_text(text: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "helpdesk.yaml"
        path.write_text(text)
        return load_config(path)


def read_tickets(csv_path) -> dict[str, list[tuple[int, str, str]]]:
    """Case ID -> its rows as (ms, event id, activity), in the documented order: event
    time, then event id (the mapping names rows "helpdesk-<case>-<row number>")."""
    tickets: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            local = datetime.strptime(row["Complete Timestamp"], "%Y/%m/%d %H:%M:%S.%f")
            ms = int(local.replace(tzinfo=ROME).timestamp() * 1000)
            event_id = f"helpdesk-{row['Case ID']}-{number:06d}"
            tickets[row["Case ID"]].append((ms, event_id, row["Activity"]))
    for rows in tickets.values():
        rows.sort()
    return tickets


def expected(csv_path, after_close: str) -> dict:
    """The figures, from the CSV rows alone. A ticket's journey runs from its first event
    to a 90-day silence; with `after_close: outside` it also ends at its first "Closed"
    (included), and what follows is outside it; with `reopen` a later event re-opens it."""
    tickets = read_tickets(csv_path)
    figures: dict = {"tickets": sorted(tickets), "outside": [], "closed": 0, "reopened": 0}
    hours_to_resolution, unresolved = [], {1: 0, 7: 0, 30: 0}
    assigned_twice = assigned_3_within_90d = 0
    for rows in tickets.values():
        span: list[tuple[int, str, str]] = []
        for row in rows:
            if span and row[0] - span[-1][0] >= EXPIRY_MS:
                break
            span.append(row)
            if row[2] == "Closed" and after_close == "outside":
                break
        figures["outside"] += [event_id for _, event_id, _ in rows[len(span) :]]
        closes = [i for i, (_, _, activity) in enumerate(span) if activity == "Closed"]
        figures["closed"] += bool(closes)
        figures["reopened"] += sum(i < len(span) - 1 for i in closes)
        opened = span[0][0]
        resolved = next((ms for ms, _, activity in span if activity == "Resolve ticket"), None)
        if resolved is not None:
            hours_to_resolution.append((resolved - opened) / 3_600_000)
        for days in unresolved:
            unresolved[days] += resolved is None or resolved - opened >= days * DAY_MS
        taken = [ms for ms, _, activity in span if activity == "Take in charge ticket"]
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


def replay_through_the_core(csv_path, config, settle_ms: tuple[int, ...]) -> dict[str, dict]:
    """The log in time order, 500 events per batch, as `parcours replay` sends it, on a
    wall clock a day after its last event; then ticks `settle_ms` later on that clock.
    The latest row of each id."""
    summary = Summary()
    parser = EventParser(config.touchpoint_types, max_age_seconds=0)
    events = read_events(csv_path, load_mapping(HELPDESK_MAPPING), parser, summary)
    assert summary.accepted == summary.rows == 21_348
    core = Core(partitions=4, config=config)
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
    for later in settle_ms:
        ticks = [Message(None, p, 0, {"control": "tick"}) for p in range(4)]
        keep(
            journey_step(
                config,
                ticks,
                lambda key, _p: core.states.get(key),
                core.watermarks,
                core.due,
                wall_ms=wall_ms + later,
            )
        )
    return latest


A_YEAR_ON = (365 * DAY_MS, 366 * DAY_MS)  # every journey closes, every key is quiet


@pytest.mark.parametrize("after_close", ["reopen", "outside"])
def test_the_helpdesk_log_gives_the_figures_its_csv_gives(csv_path, after_close):
    want = expected(csv_path, after_close)
    got = replay_through_the_core(csv_path, config_with(after_close), A_YEAR_ON)
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

    # "Closed" is the closure stage of the ticket's journey, reached through a touchpoint;
    # a ticket re-opened after it keeps each closure it undid.
    assert sum("closure" in j["stages_reached"] for j in journeys) == want["closed"]
    assert sum(j["reopened"] for j in journeys) == want["reopened"]
    assert sum(len(j["closures_ms"]) for j in journeys) == want["reopened"]
    if after_close == "reopen":
        assert want["reopened"] > 0

    # Leaks: not resolved within 7 days (the clock runs from the ticket's first event and
    # does not restart when it re-opens); taken in charge 3 times within 90 days.
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

    # A CES invitation per resolved ticket (each ticket is its own customer: no cap hits),
    # not a second one when a re-opened ticket is resolved again.
    assert len(got["invitations"]) == want["resolved"]

    # Touchpoints after a ticket's journey ended are outside it, each with its reason;
    # every other one is in its journey.
    outside = got.get("outside", {}).values()
    assert sorted(row["event_id"] for row in outside) == sorted(want["outside"])
    assert {row["reason"] for row in outside} <= {"reentry_not_allowed", "no_open_journey"}
    in_journeys = sum(j["touchpoints"] for j in journeys)
    assert in_journeys + len(outside) == 21_348


def test_a_settled_replay_reports_every_touchpoint_after_a_close(csv_path):
    """Ten minutes after the replay, not a year: the keys are not quiet, no journey has
    expired, and still every touchpoint after its ticket's close is reported, because the
    watermark has passed it."""
    want = expected(csv_path, "outside")
    assert len(want["outside"]) == 19  # those the log has: second "Closed", re-opened tickets
    got = replay_through_the_core(csv_path, config_with("outside"), (10 * 60_000,))
    outside = got.get("outside", {}).values()
    assert sorted(row["event_id"] for row in outside) == sorted(want["outside"])
