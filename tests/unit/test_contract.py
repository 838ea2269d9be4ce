"""The producer contract: ids and times filled in, clock skew corrected, `context`,
schema versions and their compatibility rules, the IP privacy policy."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.clickhouse.rows import TOUCHPOINT_COLUMNS, flat_context, touchpoint_row
from streams.config.settings import SCHEMAS_DIR
from streams.core import events as ev
from streams.core.eventtime import epoch_ms
from streams.core.ingest import RawMessage, resolved_event
from streams.edge.stamps import rfc3339, stamped, uuid7
from tests.support.events import NOW_MS, make_event

TIMES = st.integers(min_value=1_000_000_000_000, max_value=4_000_000_000_000)


def ms(text: str) -> int:
    return epoch_ms(datetime.fromisoformat(text))


@given(TIMES, TIMES)
def test_uuid7_has_the_rfc_9562_layout_and_sorts_by_time(earlier, later):
    earlier, later = sorted((earlier, later))
    first, second = uuid.UUID(uuid7(earlier)), uuid.UUID(uuid7(later))
    assert (first.version, first.variant) == (7, uuid.RFC_4122)
    assert first.int >> 80 == earlier
    if later > earlier:
        assert str(first) < str(second)  # time-ordered, as text too


@given(TIMES)
def test_times_go_to_text_and_back_to_the_same_millisecond(at_ms):
    """RFC 3339 text and epoch milliseconds convert exactly, both ways (through a float
    timestamp a quarter of all milliseconds came back one short)."""
    text = rfc3339(at_ms)
    assert ms(text) == at_ms
    seconds, millis = divmod(at_ms, 1000)
    assert text.endswith(f".{millis:03d}Z") and int(text[17:19]) == seconds % 60


def test_uuid7_ids_made_in_the_same_millisecond_differ():
    assert len({uuid7(NOW_MS) for _ in range(10_000)}) == 10_000


@given(TIMES, st.integers(-86_400_000, 86_400_000), st.integers(0, 3_600_000))
def test_the_collector_corrects_ts_by_the_clients_clock_skew(true_send_ms, skew_ms, age_ms):
    """A client whose clock is `skew_ms` off sends an event `age_ms` after it happened;
    the corrected ts is the true event time, whatever the skew (to the millisecond)."""
    client_ts, client_sent = true_send_ms - age_ms + skew_ms, true_send_ms + skew_ms
    event = make_event(ts=rfc3339(client_ts), sent_at=rfc3339(client_sent))
    out = stamped(event, true_send_ms, received=True)
    assert ms(out["ts"]) == true_send_ms - age_ms
    assert (out["original_ts"], out["sent_at"]) == (event["ts"], event["sent_at"])
    assert ms(out["received_at"]) == true_send_ms


def test_what_is_absent_is_filled_in_and_what_is_bad_is_left_to_validation():
    bare = {"type": "site_visit", "customer_id": "c", "channel": "web", "source": "site"}
    out = stamped(bare, NOW_MS, received=True)
    assert uuid.UUID(out["event_id"]).version == 7
    assert out["ts"] == out["received_at"] == rfc3339(NOW_MS)
    assert "original_ts" not in out and "event_id" not in bare
    # The producer helper: no receive stamp, its own clock for ts.
    assert set(stamped(bare, NOW_MS)) == {*bare, "event_id", "ts"}
    # A sent_at that does not parse corrects nothing; the schema names it.
    odd = stamped(make_event(sent_at="soon"), NOW_MS, received=True)
    assert "original_ts" not in odd
    assert stamped([1, 2], NOW_MS, received=True) == [1, 2]


def test_sent_at_that_is_not_rfc_3339_is_rejected_naming_the_field(parser):
    _, rejected = parser.check_items([make_event(sent_at="soon")], NOW_MS)
    assert [(r.reason, r.path) for r in rejected] == [(ev.SCHEMA_VIOLATION, "$.sent_at")]


def test_context_takes_groups_and_keys_of_your_own_but_no_deeper_nesting(parser):
    context = {
        "page": {"url": "https://shop.example/p/1", "referrer": ""},
        "campaign": {"source": "newsletter", "medium": "email"},
        "locale": "fr-FR",
        "loyalty": {"tier": "gold", "points": 120},  # a group of our own
        "experiment": "b",
    }
    valid, rejected = parser.check_items(
        [make_event(1, context=context), make_event(2, context={"page": {"a": {"b": 1}}})],
        NOW_MS,
    )
    assert [v.event["context"] for v in valid] == [context]
    assert [(r.reason, r.path) for r in rejected] == [(ev.SCHEMA_VIOLATION, "$.context.page.a")]
    assert flat_context(context) == {
        "page.url": "https://shop.example/p/1",
        "page.referrer": "",
        "campaign.source": "newsletter",
        "campaign.medium": "email",
        "locale": "fr-FR",
        "loyalty.tier": "gold",
        "loyalty.points": "120",
        "experiment": "b",
    }


@pytest.mark.parametrize(
    ("policy", "ip", "kept"),
    [
        ("keep", "203.0.113.77", "203.0.113.77"),
        ("truncate", "203.0.113.77", "203.0.113.0"),
        ("truncate", "2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        ("truncate", "not an address", None),
        ("drop", "203.0.113.77", None),
    ],
)
def test_the_ip_in_context_is_kept_truncated_or_dropped(policy, ip, kept, config):
    parser = ev.EventParser(config.touchpoint_types, context_ip=policy)
    valid, _ = parser.check_items([make_event(context={"ip": ip, "locale": "fr"})], NOW_MS)
    assert valid[0].event["context"] == ({"locale": "fr"} | ({"ip": kept} if kept else {}))


def test_an_unknown_ip_policy_is_refused_naming_the_choices(config):
    with pytest.raises(ValueError, match=r"keep.*truncate.*drop"):
        ev.EventParser(config.touchpoint_types, context_ip="hash")


def test_the_schema_id_carries_the_version_the_parser_reads(parser):
    schema = json.loads((SCHEMAS_DIR / "touchpoint.schema.json").read_text())
    assert schema["$id"].endswith(f"/touchpoint/{parser.version[0]}.{parser.version[1]}.json")
    assert parser.version >= (1, 1)


def test_schema_versions_follow_the_compatibility_policy(parser):
    major, minor = parser.version
    older = make_event(1, schema_version=f"{major}.0")
    newer = make_event(
        2, schema_version=f"{major}.{minor + 1}", channel="hologram", loyalty_tier="gold"
    )
    unknown_field_now = make_event(3, schema_version=f"{major}.{minor}", loyalty_tier="gold")
    other_major = make_event(4, schema_version=f"{major + 1}.0")
    malformed = make_event(5, schema_version="one")
    valid, rejected = parser.check_items(
        [older, newer, unknown_field_now, other_major, malformed], NOW_MS
    )
    # A newer minor is accepted: a new channel passes, a new field is kept aside.
    assert [v.event["event_id"] for v in valid] == ["e-1", "e-2"]
    assert valid[1].event["extensions"] == {"loyalty_tier": "gold"}
    assert "loyalty_tier" not in valid[1].event and valid[1].event["channel"] == "hologram"
    # At this version an unknown field is a typo, named; another major is refused.
    assert [(r.index, r.reason, r.path) for r in rejected] == [
        (2, ev.SCHEMA_VIOLATION, "$"),
        (3, ev.SCHEMA_VIOLATION, "$.schema_version"),
        (4, ev.SCHEMA_VIOLATION, "$.schema_version"),
    ]
    assert "loyalty_tier" in rejected[0].detail
    assert f"send {major}.x events or upgrade" in rejected[1].detail


def test_a_full_event_becomes_a_row_with_every_contract_column(parser):
    event = stamped(
        make_event(
            ts="2026-11-26T10:00:00Z",
            sent_at="2026-11-26T10:00:05Z",
            schema_version="1.1",
            context={"campaign": {"source": "ads"}, "locale": "de"},
        ),
        ms("2026-11-26T10:00:02Z"),
        received=True,
    )
    valid, rejected = parser.check_items([event], ms("2026-11-26T10:00:02Z"))
    assert rejected == []
    message = RawMessage(None, b"", "touchpoints", 0, 7)
    resolved = resolved_event(valid[0], message, {}, "c-1", NOW_MS)
    row = dict(zip(TOUCHPOINT_COLUMNS, touchpoint_row(resolved), strict=True))
    assert row["ts"] == datetime(2026, 11, 26, 9, 59, 57, tzinfo=UTC)  # 3 s skew taken off
    assert row["original_ts"] == datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
    assert row["sent_at"] == datetime(2026, 11, 26, 10, 0, 5, tzinfo=UTC)
    assert row["received_at"] == datetime(2026, 11, 26, 10, 0, 2, tzinfo=UTC)
    assert row["context"] == {"campaign.source": "ads", "locale": "de"}
    assert (row["schema_version"], row["extensions"]) == ("1.1", {})


def test_the_configuration_knows_the_same_channels_as_the_event_schema():
    touchpoint = json.loads((SCHEMAS_DIR / "touchpoint.schema.json").read_text())
    journeys = json.loads((SCHEMAS_DIR / "journeys.schema.json").read_text())
    declared = journeys["properties"]["touchpoint_types"]["additionalProperties"]["properties"]
    channels = touchpoint["properties"]["channel"]["enum"]
    assert declared["channel"]["enum"] == channels
    assert {"mobile", "push", "in_app", "other"} <= set(channels)
