"""`parcours report`: the journey map of one journey over a time range, from ClickHouse.

Reads the journey-map views (schemas/clickhouse/0007_journey_map.sql) and renders them
three ways: text for the terminal (funnel with bars, top leaks, scores per touchpoint),
a self-contained HTML page (charts drawn as inline SVG: no script, no network), and JSON
for machines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from streams.core.text import printable

TOP_PATHS = 5  # per outcome
SANKEY_STEPS = 5  # touchpoints per path in the Sankey, after collapsing repeats
AT_RISK_ROWS = 20


@dataclass
class JourneyMap:
    journey: str
    since: str
    until: str
    funnel: list[dict] = field(default_factory=list)
    paths: list[dict] = field(default_factory=list)
    flows: list[dict] = field(default_factory=list)  # Sankey links: from/to (step:type), n
    leaks: list[dict] = field(default_factory=list)
    leak_weeks: list[dict] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    at_risk: list[dict] = field(default_factory=list)


def _rows(client: Client, sql: str, parameters: dict[str, Any]) -> list[dict]:
    result = client.query(sql, parameters=parameters)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


RANGE = "since = {since:String}, until = {until:String}"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def journeys_opened(client: Client, journey: str, since: datetime, until: datetime) -> int:
    """How many journeys of `journey` opened in [since, until)."""
    p = {"journey": journey, "since": _when(since), "until": _when(until)}
    sql = f"SELECT count() FROM journeys_between({RANGE}) WHERE journey = {{journey:String}}"
    return int(client.query(sql, parameters=p).result_rows[0][0])


def data_range(client: Client, journey: str) -> tuple[datetime, datetime] | None:
    """The whole days over which journeys of `journey` opened: [first day, last day + 1),
    None if there are none."""
    result = client.query(
        "SELECT toDate(min(opened_at)), toDate(max(opened_at)), count() FROM journeys "
        "WHERE journey = {journey:String}",
        parameters={"journey": journey},
    ).result_rows[0]
    if not result[2]:
        return None
    first, last = (datetime(d.year, d.month, d.day) for d in result[:2])
    return first, last + timedelta(days=1)


def read_map(client: Client, journey: str, since: datetime, until: datetime) -> JourneyMap:
    """Query the views for `journey` and journeys opened in [since, until)."""
    p = {"journey": journey, "since": _when(since), "until": _when(until)}
    found = JourneyMap(journey, p["since"], p["until"])
    found.funnel = _rows(
        client,
        "SELECT stage, journeys, customers, conversion, median_seconds, p90_seconds "
        f"FROM journey_funnel({RANGE}) WHERE journey = {{journey:String}} AND cut = 'all' "
        "ORDER BY stage_index",
        p,
    )
    found.paths = _rows(
        client,
        f"SELECT outcome, path, journeys, share FROM top_paths({RANGE}) "
        "WHERE journey = {journey:String} "
        "ORDER BY outcome = 'goal' DESC, outcome, journeys DESC, path "
        f"LIMIT {TOP_PATHS} BY outcome",
        p,
    )
    found.flows = _rows(
        client,
        "SELECT concat(toString(step), ':', pair.1) AS source, "
        "concat(toString(step + 1), ':', pair.2) AS target, count() AS journeys FROM ("
        "  SELECT arrayConcat(arraySlice(arrayCompact(path), 1, {steps:UInt8}), [multiIf("
        "    completed_at IS NOT NULL, '(goal)', status = 'expired', '(exit)', '(open)')]) AS p"
        f"  FROM journeys_between({RANGE}) WHERE journey = {{journey:String}}) "
        "ARRAY JOIN arrayZip(arrayPopBack(p), arrayPopFront(p)) AS pair, "
        "arrayEnumerate(arrayPopBack(p)) AS step "
        "GROUP BY source, target ORDER BY journeys DESC, source, target",
        {**p, "steps": SANKEY_STEPS},
    )
    found.leaks = _rows(
        client,
        f"SELECT rule, category, leaks, journeys, leak_rate FROM leak_rates({RANGE}) "
        "WHERE journey = {journey:String} AND cut = 'all' ORDER BY leaks DESC, rule",
        p,
    )
    found.leak_weeks = _rows(
        client,
        "SELECT category, value AS week, sum(leaks) AS leaks, any(journeys) AS journeys, "
        "round(100 * leaks / journeys, 1) AS leak_rate "
        f"FROM leak_rates({RANGE}) WHERE journey = {{journey:String}} AND cut = 'week' "
        "GROUP BY category, week ORDER BY week, category",
        p,
    )
    found.scores = _rows(
        client,
        "SELECT value AS touchpoint, metric, responses, score, small_sample "
        f"FROM scores_between({RANGE}) WHERE cut = 'touchpoint' ORDER BY metric, touchpoint",
        p,
    )
    found.at_risk = _rows(
        client,
        "SELECT customer_key, round(health, 1) AS health, segment, open_leaks, leak_rules "
        f"FROM customers_at_risk ORDER BY health, customer_key LIMIT {AT_RISK_ROWS}",
        p,
    )
    return found


def as_json(found: JourneyMap) -> str:
    return orjson.dumps(asdict(found), option=orjson.OPT_INDENT_2, default=str).decode()


def duration_label(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _bar(value: float, top: float, width: int = 30) -> str:
    return "█" * max(1 if value else 0, round(width * value / top)) if top else ""


def as_text(found: JourneyMap) -> str:
    lines = [f"Journey map: {found.journey}, journeys opened {found.since} - {found.until}", ""]
    top = max((s["journeys"] for s in found.funnel), default=0)
    lines.append("Funnel (journeys reaching each stage; conversion from the stage before)")
    for s in found.funnel:
        conversion = "" if s["conversion"] is None else f"{s['conversion']:5.1f}%"
        lines.append(
            f"  {s['stage']:<14} {_bar(s['journeys'], top):<30} {s['journeys']:>7,} "
            f"{conversion:>7}  median {duration_label(s['median_seconds'])}"
        )
    if not found.funnel:
        lines.append("  (no journeys in this range)")
    lines += ["", "Top leaks"]
    for leak in found.leaks[:8]:
        lines.append(
            f"  {leak['rule']:<28} {leak['category']:<12} {leak['leaks']:>6,} "
            f"({leak['leak_rate']:.1f} per 100 journeys)"
        )
    if not found.leaks:
        lines.append("  (none)")
    lines += ["", "Scores per touchpoint (answers given in the range; * = under 30 answers)"]
    for score in found.scores:
        flag = " *" if score["small_sample"] else ""
        lines.append(
            f"  {printable(score['metric'].upper(), 40):<5} "
            f"{printable(score['touchpoint'], 40):<16} {shown_score(score['score']):>7}"
            f"  from {score['responses']:,}{flag}"
        )
    if not found.scores:
        lines.append("  (no answers)")
    lines += ["", f"Customers at risk now: {len(found.at_risk)} shown (lowest health first)"]
    return "\n".join(lines)


def shown_score(score: float | None) -> str:
    """A score as shown; a metric with no formula (not nps, csat or ces) has none."""
    return "n/a" if score is None else f"{score:g}"


# --- HTML: inline SVG charts --------------------------------------------------------------
