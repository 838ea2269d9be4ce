"""The HTTP collector: auth, limits, gzip, CORS, overload, fuzzing, and end to end."""

from __future__ import annotations

import asyncio
import gzip

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.config import load_config
from streams.config.settings import SCHEMAS_DIR
from streams.edge.collector import CollectorSettings, create_collector, parse_write_keys
from tests.support.collector import KEYS, PARSER, SITE, event, post

CONFIG = load_config(SCHEMAS_DIR / "journeys.yaml")


class Recorder:
    """Stands in for the broker in the HTTP-level tests (the end-to-end test uses tansu)."""

    def __init__(self, fail: bool = False, gate: asyncio.Event | None = None) -> None:
        self.messages, self.letters, self.fail, self.gate = [], [], fail, gate

    async def publish(self, messages, letters) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("broker down")
        self.messages += messages
        self.letters += letters

    def events(self) -> list[dict]:
        return [e for _, value in self.messages for e in orjson.loads(value)["events"]]


def run(scenario, recorder=None, **options):
    """Run `scenario(client, recorder)` against a collector on a loopback port."""
    recorder = recorder or Recorder()
    collector_settings = CollectorSettings(write_keys=KEYS, **options)

    async def main():
        app = create_collector(PARSER, recorder.publish, collector_settings)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client, recorder)

    return asyncio.run(main())


def test_write_keys_are_required_and_name_the_source():
    async def scenario(client, recorder):
        assert (await post(client, event(1), headers={}))[0] == 401
        assert (await post(client, event(1), headers={"Authorization": "Bearer nope"}))[0] == 401
        status, body, _ = await post(client, event(1), headers={"X-Write-Key": "crm-key"})
        assert (status, body) == (202, {"accepted": 1, "rejected": 0, "errors": []})
        return recorder

    recorder = run(scenario)
    assert recorder.events()[0]["source"] == "crm"  # filled from the key


def test_a_mixed_batch_accepts_the_good_and_explains_the_bad():
    batch = [
        event(1, "c1"),
        event(2, "c2"),
        event(3, "c1", type="teleport"),
        {"event_id": "e4"},
        event(5, "c1", source="site"),
        event(6, "c1", source="crm"),  # a site key cannot speak for the CRM
    ]

    async def scenario(client, recorder):
        return await post(client, {"events": batch})

    recorder = Recorder()
    status, body, _ = run(scenario, recorder)
    assert status == 202
    assert (body["accepted"], body["rejected"]) == (3, 3)
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [
        (2, "unknown_type"),
        (3, "schema_violation"),
        (5, "source_not_allowed"),
    ]
    assert "not 'crm'" in body["errors"][2]["detail"]
    assert body["errors"][0]["path"] == "$.type"
    # One envelope per customer key, in order; the key's own source may be explicit.
    assert [
        (k, [e["event_id"] for e in orjson.loads(v)["events"]]) for k, v in recorder.messages
    ] == [
        (b"c1", ["e1", "e5"]),
        (b"c2", ["e2"]),
    ]
    assert recorder.events()[1]["source"] == "site"
    assert orjson.loads(recorder.letters[2][0])["event_id"] == "e6"
    headers = dict(recorder.letters[0][1])
    assert (headers["parcours.reason"], headers["parcours.source"]) == (b"unknown_type", b"site")
    assert headers["parcours.origin.topic"] == b"http"
    # The letter keeps what the collector filled in: its receive time as `ts`.
    letter = orjson.loads(recorder.letters[1][0])
    assert letter == {
        "event_id": "e4",
        "source": "site",
        "ts": letter["received_at"],
        "received_at": letter["received_at"],
    }


def test_arrays_single_events_and_gzip_are_accepted():
    async def scenario(client, recorder):
        array = await post(client, [event(1), event(2)])
        zipped = gzip.compress(orjson.dumps([event(3), event(4), event(5)]))
        headers = {**SITE, "Content-Encoding": "gzip"}
        gz = await post(client, zipped, headers=headers, raw=True)
        return array[1]["accepted"], gz[1]["accepted"], len(recorder.events())

    assert run(scenario) == (2, 3, 5)


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"{not json", {}, 400, "not JSON"),
        (b"42", {}, 400, "one event object"),
        (b'{"events": 3}', {}, 400, "array of events"),
        (b"x" * 2001, {}, 413, "limit"),
        (orjson.dumps([event(i) for i in range(11)]), {}, 413, "11 events"),
        (b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
        (
            gzip.compress(b"[" + b" " * 5000 + b"]", mtime=0),
            {"Content-Encoding": "gzip"},
            413,
            "decompressed",
        ),
        (b"[]", {"Content-Encoding": "br"}, 415, "gzip or none"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body, headers, status, says):
    async def scenario(client, recorder):
        got = await post(client, body, headers={**SITE, **headers}, raw=True)
        return got[0], got[1], len(recorder.messages)

    got_status, answer, published = run(scenario, max_body_bytes=2000, max_events=10)
    assert (got_status, published) == (status, 0)
    assert says in answer["error"]


def test_a_broker_failure_is_a_503_with_retry_after_and_accepts_nothing():
    async def scenario(client, recorder):
        return await post(client, [event(1)])

    status, body, headers = run(scenario, Recorder(fail=True))
    assert (status, headers["Retry-After"]) == (503, "5")
    assert "retry" in body["error"]


def test_overload_is_a_429_with_retry_after():
    async def scenario(client, recorder):
        waiting = [asyncio.create_task(post(client, [event(i)])) for i in range(2)]
        await asyncio.sleep(0.2)  # both are in flight, held by the gate
        third = await post(client, [event(3)])
        recorder.gate.set()
        first_two = await asyncio.gather(*waiting)
        return third, [s for s, _, _ in first_two]

    (status, _, headers), others = run(scenario, Recorder(gate=asyncio.Event()), max_in_flight=2)
    assert (status, headers["Retry-After"], others) == (429, "1", [202, 202])


def test_concurrent_clients_lose_nothing():
    async def scenario(client, recorder):
        answers = await asyncio.gather(
            *(post(client, [event(i * 10 + j, f"c{i}") for j in range(10)]) for i in range(30))
        )
        return sum(a[1]["accepted"] for a in answers), len(recorder.events())

    assert run(scenario) == (300, 300)


def test_cors_for_configured_origins_only():
    async def scenario(client, recorder):
        allowed = {"Origin": "https://shop.example"}
        pre = await client.options("/v1/events", headers=allowed)
        ok = await client.post(
            "/v1/events", data=orjson.dumps(event(1)), headers={**SITE, **allowed}
        )
        other = await client.post(
            "/v1/events",
            data=orjson.dumps(event(2)),
            headers={**SITE, "Origin": "https://evil.example"},
        )
        return pre.status, pre.headers, ok.headers, other.headers

    status, pre, ok, other = run(scenario, cors_origins=frozenset({"https://shop.example"}))
    assert status == 204 and "Authorization" in pre["Access-Control-Allow-Headers"]
    assert (
        pre["Access-Control-Allow-Origin"]
        == ok["Access-Control-Allow-Origin"]
        == "https://shop.example"
    )
    assert "Access-Control-Allow-Origin" not in other


def test_health_and_metrics():
    async def scenario(client, recorder):
        await post(client, [event(1), event(2, type="teleport")])
        health = await client.get("/healthz")
        metrics = await (await client.get("/metrics")).text()
        return health.status, metrics

    status, metrics = run(scenario)
    assert status == 200
    assert 'parcours_collector_events_total{result="accepted",source="site"}' in metrics
    assert 'parcours_collector_requests_total{status="202"}' in metrics


def test_write_keys_setting_is_checked():
    assert parse_write_keys("site:a, crm:b") == {"a": "site", "b": "crm"}
    with pytest.raises(ValueError, match="source:key"):
        parse_write_keys("site")
    with pytest.raises(ValueError, match="empty"):
        parse_write_keys(" ")


# --- fuzzing -------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
event_like = st.builds(
    lambda n, changes: {**event(n), **changes},
    st.integers(0, 10**6),
    st.dictionaries(
        st.sampled_from(["type", "ts", "channel", "customer_id", "x"]), json_values, max_size=2
    ),
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(orjson.dumps),
    st.lists(event_like, max_size=6).map(orjson.dumps),
    st.lists(event_like, max_size=6).map(lambda e: gzip.compress(orjson.dumps({"events": e}))),
    # Members nested deeper than orjson writes (254) or jsonschema recurses: one bad event.
    st.integers(200, 1000).map(
        lambda depth: b'[{"event_id":"deep","x":' + b"[" * depth + b"]" * depth + b"}]"
    ),
)
header_sets = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.sampled_from(["Bearer site-key", "Bearer x", "Basic abc", ""]),
        "Content-Encoding": st.sampled_from(["gzip", "identity", "deflate", "GZIP"]),
        "Content-Type": st.sampled_from(["application/json", "text/plain", "nonsense"]),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(bodies, header_sets), min_size=1, max_size=5))
def test_fuzzed_requests_never_fail_the_server_and_every_accepted_event_is_published(requests):
    async def scenario(client, recorder):
        accepted = 0
        for body, headers in requests:
            response = await client.post("/v1/events", data=body, headers=headers)
            answer = await response.json()
            assert response.status in (202, 400, 401, 413, 415), (response.status, answer)
            if response.status == 202:
                accepted += answer["accepted"]
                assert answer["rejected"] == len(answer["errors"])
            else:
                assert answer["error"]
        return accepted, len(recorder.events())

    accepted, published = run(scenario, max_body_bytes=4000, max_events=5)
    assert accepted == published


# --- end to end ----------------------------------------------------------------------
