"""`parcours demo`, the README's first command, on a small population."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from streams.config.settings import PROJECT_ROOT
from streams.dev.demo import run_demo
from tests.support.clickhouse import clickhouse
from tests.support.observability import journey_map_queries


def readme_demo_headings() -> list[str]:
    """The section headings of the demo output the README shows (its unindented lines)."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = readme.split("## What `make demo` does", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line and not line.startswith((" ", "..."))]


def views_readme() -> tuple[set[str], list[str]]:
    """The views schemas/clickhouse/README.md names in its headings, and its SQL blocks."""
    text = (PROJECT_ROOT / "schemas" / "clickhouse" / "README.md").read_text()
    headings = re.findall(r"^### (.+)$", text, flags=re.MULTILINE)
    names = {name for h in headings for name in re.sub(r"\(.*?\)", "", h).split(", ")}
    return names, re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)


def test_the_demo_lands_every_event_and_delivers_every_invitation(tmp_path, capsys):
    summary = run_demo(customers=80, seed=3, data_dir=tmp_path, timeout=240)
    out = capsys.readouterr().out
    assert summary["tables"]["touchpoints"] >= summary["customers"] > 0
    assert summary["invitation_count"] > 0
    assert summary["delivered"] == summary["invitation_count"]
    # The receiver verifies with the Standard Webhooks library: every request passed.
    assert summary["bad_signatures"] == 0
    assert "Delivered to the local webhook, each signed and once" in out
    still_open = sum(n for *_, n, _ in summary["follow_ups"])  # detractors, repeated calls
    closed = sum(n for *_, n in summary["follow_ups"])
    assert still_open + closed > 0
    # Each task is delivered when it opens, and again when it closes.
    assert summary["follow_ups_delivered"] == still_open + 2 * closed
    assert "Follow-up tasks for a person" in out
    assert (tmp_path / "demo" / "report.html").stat().st_size > 1000
    headings = readme_demo_headings()
    assert len(headings) >= 10
    for heading in headings:  # the README shows what the demo prints today
        assert heading.split(":")[0].split("   ")[0].strip() in out, heading

    # The Grafana Journey map's queries, with its variables filled in as Grafana does, on
    # the demo's data in the embedded engine: each runs and returns rows.
    now = datetime.now(UTC).replace(tzinfo=None)
    since, until = (t.strftime("%Y-%m-%d %H:%M:%S") for t in (now - timedelta(days=30), now))
    empty = []
    with clickhouse(tmp_path / "demo" / "clickhouse") as client:
        for panel, sql in journey_map_queries(since, until, "purchase"):
            if not client.query(sql).result_rows:
                empty.append(panel)
        # Every view has its section in schemas/clickhouse/README.md, and each query
        # there runs as pasted, with rows.
        views = {
            name
            for (name,) in client.query(
                "SELECT name FROM system.tables WHERE database = currentDatabase() "
                "AND engine = 'View'"
            ).result_rows
        }
        documented, queries = views_readme()
        answered = {sql: len(client.query(sql).result_rows) for sql in queries}
    assert empty == []
    assert views <= documented, views - documented
    assert len(queries) >= len(views) - 3  # some sections show two views at once
    # Outside journeys too: the demo's shoppers open marketing emails and answer surveys
    # before they buy, which the purchase journey keeps out (goal_not_reached), reported
    # once the watermark has passed them.
    assert [sql for sql, rows in answered.items() if not rows] == []
