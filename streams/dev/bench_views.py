"""`parcours bench-views`: how fast the journey-map views answer on a large data set.

Fills an embedded ClickHouse with the output of the real pipeline logic: a simulated
population (`streams.dev.simulate`) of N touchpoints over the last weeks goes through the
ingest and journey steps in-process, and every row the worker would write (touchpoints,
journey versions, leaks, invitations, suppressions, health) is inserted as the sink
would. Then each view is queried a few times and its latency printed.
"""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams.clickhouse.client import connect, migrate, write_stage_order
from streams.clickhouse.report import read_map
from streams.clickhouse.rows import TOUCHPOINT_COLUMNS, touchpoint_row
from streams.dev.bench_core import Core
from streams.dev.simulate import Faults, Pace, deliveries
from streams.edge.produce import as_messages
from streams.outputs import OUTPUTS

BATCH = 20_000  # events per core step and per insert
RANGE = "since = '2000-01-01 00:00:00', until = '2100-01-01 00:00:00'"
QUERIES = {
    "journey_funnel, one journey, all": (
        f"SELECT * FROM journey_funnel({RANGE}) WHERE journey = 'purchase' AND cut = 'all'"
    ),
    "journey_funnel, every cut": f"SELECT * FROM journey_funnel({RANGE})",
    "top_paths": f"SELECT * FROM top_paths({RANGE}) ORDER BY journeys DESC LIMIT 5 BY outcome",
    "touchpoint_transitions": f"SELECT * FROM touchpoint_transitions({RANGE})",
    "leak_rates": f"SELECT * FROM leak_rates({RANGE})",
    "customers_at_risk": "SELECT * FROM customers_at_risk ORDER BY health LIMIT 100",
    "scores (every cut)": "SELECT * FROM scores",
}


def fill(url: str, touchpoints: int, seed: int, weeks: int) -> dict[str, int]:
    """Run `touchpoints` simulated events through the core and insert what it writes."""
    client = connect(url)
    core = Core()
    migrate(client)
    write_stage_order(client, {n: list(j.stages) for n, j in core.config.journeys.items()})
    start = datetime.now(UTC) - timedelta(weeks=weeks)
    # Ends about a day ago: arrivals are random, the last event may come hours later.
    pace = Pace(touchpoints / (weeks * 7 * 86400 - 86400))
    stream = (d.event for d in deliveries(seed, start, pace, faults=Faults(0.0, 0.0)))
    rows = dict.fromkeys(["touchpoints", *(o.table for o in OUTPUTS)], 0)
    started = shown = time.monotonic()
    done = 0
    while done < touchpoints:
        events = list(itertools.islice(stream, min(BATCH, touchpoints - done)))
        outcome, result = core.step(as_messages(events))
        tables = {"touchpoints": [touchpoint_row(e) for b in outcome.forward.values() for e in b]}
        for o in OUTPUTS:
            tables[o.table] = [
                o.to_row(r) for by_key in result.rows.get(o.kind, {}).values() for r in by_key
            ]
        columns_of = {"touchpoints": TOUCHPOINT_COLUMNS, **{o.table: o.columns for o in OUTPUTS}}
        for table, batch in tables.items():
            if batch:
                columns = columns_of[table]
                client.insert(table, batch, column_names=columns)
                rows[table] += len(batch)
        done += len(events)
        if time.monotonic() - shown >= 5:
            shown = time.monotonic()
            rate = done / (shown - started)
            print(f"  {done:,} of {touchpoints:,} touchpoints ({rate:,.0f}/s)", file=sys.stderr)
    client.close()
    return rows


def time_queries(url: str, runs: int) -> dict[str, dict[str, float]]:
    client = connect(url)
    timings: dict[str, dict[str, float]] = {}
    try:
        for name, sql in QUERIES.items():
            seconds = []
            for _ in range(runs):
                began = time.perf_counter()
                result = client.query(sql)
                seconds.append(time.perf_counter() - began)
            timings[name] = {
                "median_ms": 1000 * statistics.median(seconds),
                "max_ms": 1000 * max(seconds),
                "rows": len(result.result_rows),
            }
        seconds = []
        for _ in range(runs):
            began = time.perf_counter()
            read_map(client, "purchase", datetime(2000, 1, 1), datetime(2100, 1, 1))
            seconds.append(time.perf_counter() - began)
        timings["parcours report (all its queries)"] = {
            "median_ms": 1000 * statistics.median(seconds),
            "max_ms": 1000 * max(seconds),
            "rows": 0,
        }
    finally:
        client.close()
    return timings


def run(
    touchpoints: int, seed: int, weeks: int, data_dir: Path, runs: int, as_json: bool, reuse: bool
) -> dict:
    path = data_dir / "bench-views" / "clickhouse"
    url = f"chdb://{path}"
    say = (lambda *_: None) if as_json else print
    rows: dict[str, int] = {}
    if not (reuse and path.exists()):
        shutil.rmtree(path, ignore_errors=True)
        say(
            f"parcours bench-views: {touchpoints:,} touchpoints over {weeks} weeks, "
            "through the journey core into the embedded ClickHouse"
        )
        began = time.perf_counter()
        rows = fill(url, touchpoints, seed, weeks)
        say(
            f"  filled in {time.perf_counter() - began:.0f} s: "
            + ", ".join(f"{t} {n:,}" for t, n in rows.items())
        )
    timings = time_queries(url, runs)
    if as_json:
        print(json.dumps({"rows": rows, "timings": timings}, indent=2))
    else:
        print(f"\n{'view':<38} {'median ms':>10} {'max ms':>8} {'rows':>8}  ({runs} runs)")
        for name, t in timings.items():
            print(f"{name:<38} {t['median_ms']:>10.0f} {t['max_ms']:>8.0f} {t['rows']:>8,}")
    return {"rows": rows, "timings": timings}
