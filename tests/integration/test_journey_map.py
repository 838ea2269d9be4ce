"""Journey map views on the real embedded ClickHouse, against answers computed by hand.

Five journeys of a four-stage journey `buy` (visit → cart → pay → deliver), plus an
older version and superseded rows that the views must ignore (a leak found on a
superseded journey counts for its successor):

    j1  c1 gold   web  visit 0m, cart 10m, pay 30m, deliver 90m   completed
    j2  c2 gold   ads  visit 0m, cart 20m                         expired  leak cart_abandoned
    j3  c3 silver web  visit 0m, cart 5m, pay 35m                 completed
    j4  c4 silver web  visit 0m                                   open     leak bounce
    j5  c5 silver web  visit 0m, pay 40m (no cart touchpoint)     completed
"""

from __future__ import annotations

import pytest

from tests.support.clickhouse import clickhouse
from tests.support.journey_map import EVER, START_MS, fill


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with clickhouse(tmp_path_factory.mktemp("map") / "ch") as ch:
        fill(ch)
        yield ch


def query(client, sql: str, **parameters) -> list[tuple]:
    return client.query(sql, parameters={**EVER, **parameters}).result_rows


def test_the_funnel_counts_stages_reached_conversion_and_time_between_stages(client):
    rows = query(
        client,
        "SELECT stage, journeys, customers, conversion, median_seconds, p90_seconds "
        "FROM journey_funnel(since = {since:String}, until = {until:String}) "
        "WHERE journey = 'buy' AND cut = 'all' ORDER BY stage_index",
    )
    assert rows == [
        ("visit", 5, 5, None, None, None),  # no previous stage: nothing to time
        ("cart", 4, 4, 80.0, 600, 1200),  # j1 10m, j2 20m, j3 5m
        # j5 skipped cart: it reached pay (and so counts), but has no cart→pay time.
        # quantileExact of two values (20m, 30m) takes the upper one as the median.
        ("pay", 3, 3, 75.0, 1800, 1800),
        ("deliver", 1, 1, 33.3, 3600, 3600),
    ]
    gold = query(
        client,
        "SELECT stage, journeys FROM journey_funnel(since = {since:String}, until = "
        "{until:String}) WHERE cut = 'segment' AND value = 'gold' ORDER BY stage_index",
    )
    assert gold == [("visit", 2), ("cart", 2), ("pay", 1), ("deliver", 1)]
    by_channel = query(
        client,
        "SELECT value, journeys FROM journey_funnel(since = {since:String}, until = "
        "{until:String}) WHERE cut = 'channel' AND stage = 'visit' ORDER BY value",
    )
    assert by_channel == [("ads", 1), ("web", 4)]


def test_the_time_range_selects_journeys_by_opening_time(client):
    rows = query(
        client,
        "SELECT count() FROM journey_funnel(since = {since:String}, until = {until:String})",
        since="2000-01-01 00:00:00",
        until="2001-01-01 00:00:00",
    )
    assert rows == [(0,)]


def test_top_paths_to_the_goal_and_to_each_leak(client):
    rows = query(
        client,
        "SELECT outcome, path, journeys, share FROM top_paths(since = {since:String}, "
        "until = {until:String}) ORDER BY outcome, journeys DESC, path",
    )
    assert rows == [
        ("bounce", ["site_visit"], 1, 100.0),
        ("cart_abandoned", ["ad_click", "add_to_cart"], 1, 100.0),
        # repeats in a row are collapsed: j1's two site visits are one step
        ("goal", ["site_visit", "add_to_cart", "purchase"], 1, 33.3),
        ("goal", ["site_visit", "add_to_cart", "purchase", "delivery"], 1, 33.3),
        ("goal", ["site_visit", "purchase"], 1, 33.3),
        ("slow_pay", ["site_visit", "add_to_cart"], 1, 100.0),
    ]


def test_transitions_between_touchpoint_types(client):
    rows = dict(
        ((f, t), n)
        for f, t, n in query(
            client,
            "SELECT from_type, to_type, transitions FROM touchpoint_transitions("
            "since = {since:String}, until = {until:String})",
        )
    )
    assert rows == {
        ("(start)", "site_visit"): 4,
        ("(start)", "ad_click"): 1,
        ("site_visit", "site_visit"): 1,
        ("site_visit", "add_to_cart"): 2,
        ("ad_click", "add_to_cart"): 1,
        ("add_to_cart", "purchase"): 2,
        ("add_to_cart", "(exit)"): 1,
        ("purchase", "delivery"): 1,
        ("purchase", "(goal)"): 2,
        ("delivery", "(goal)"): 1,
        ("site_visit", "purchase"): 1,
        ("site_visit", "(open)"): 1,
    }


def test_leak_rates_per_cut(client):
    rows = query(
        client,
        "SELECT rule, category, cut, value, leaks, journeys, leak_rate FROM leak_rates("
        "since = {since:String}, until = {until:String}) ORDER BY rule, cut, value",
    )
    assert rows == [
        ("bounce", "engagement", "all", "all", 1, 5, 20.0),
        ("bounce", "engagement", "channel", "web", 1, 4, 25.0),
        ("bounce", "engagement", "segment", "silver", 1, 3, 33.3),
        ("bounce", "engagement", "stage", "visit", 1, 5, 20.0),
        ("bounce", "engagement", "week", str(week_of(START_MS)), 1, 5, 20.0),
        ("cart_abandoned", "conversion", "all", "all", 1, 5, 20.0),
        ("cart_abandoned", "conversion", "channel", "ads", 1, 1, 100.0),
        ("cart_abandoned", "conversion", "segment", "gold", 1, 2, 50.0),
        ("cart_abandoned", "conversion", "stage", "cart", 1, 3, 33.3),  # j1, j2, j3 carted
        ("cart_abandoned", "conversion", "week", str(week_of(START_MS)), 1, 5, 20.0),
        ("slow_pay", "conversion", "all", "all", 1, 5, 20.0),
        ("slow_pay", "conversion", "channel", "web", 1, 4, 25.0),
        ("slow_pay", "conversion", "segment", "silver", 1, 3, 33.3),
        ("slow_pay", "conversion", "stage", "pay", 1, 3, 33.3),  # j1, j3, j5 paid
        ("slow_pay", "conversion", "week", str(week_of(START_MS)), 1, 5, 20.0),
    ]


def week_of(ms: int):
    from datetime import UTC, datetime, timedelta

    day = datetime.fromtimestamp(ms / 1000, UTC).date()
    return day - timedelta(days=day.weekday())


def test_customers_at_risk_have_low_health_or_a_leak_on_an_unfinished_journey(client):
    rows = query(
        client,
        "SELECT customer_key, health, open_leaks, leak_rules FROM customers_at_risk "
        "ORDER BY customer_key",
    )
    assert rows == [("c2", 40.0, 1, ["cart_abandoned"]), ("c4", 90.0, 1, ["bounce"])]
