"""The published specs: the OpenAPI document validates, the collector's real answers
match it, and the topics' messages (real invitations and follow-ups of a synthetic day)
match the AsyncAPI document's schemas."""

from __future__ import annotations

import gzip
import re
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from streams.config import settings as topics
from streams.core.events import REASONS, UNKNOWN_TYPE, Rejection
from streams.core.ingest import DeadLetter, customer_key
from streams.dev.bench_core import Core
from streams.dev.synth import generate
from streams.edge.specs import spec_document
from tests.support.collector import SITE, event, post
from tests.unit.test_collector import Recorder, run

OPENAPI = spec_document("openapi")
ASYNCAPI = spec_document("asyncapi")


def resolve(doc: dict, ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def followed(doc: dict, node: dict) -> dict:
    """`node` with its local `$ref` followed (responses and parameters are shared too)."""
    while "$ref" in node:
        node = resolve(doc, node["$ref"])
    return node


def schema_check(doc: dict, schema: dict) -> jsonschema.Draft202012Validator:
    """A validator for `schema` (a node of `doc`) whose references resolve in `doc`."""
    registry = Registry().with_resource("urn:spec", Resource(doc, DRAFT202012))
    text = orjson.dumps(schema).decode().replace('"#/', '"urn:spec#/')
    return jsonschema.Draft202012Validator(orjson.loads(text), registry=registry)


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_openapi_document_is_valid_and_every_reference_resolves():
    validate(OPENAPI)  # openapi-spec-validator: OpenAPI 3.1, schemas and all
    for doc in (OPENAPI, ASYNCAPI):
        for ref in refs(doc):
            assert ref.startswith("#/"), ref  # self-contained: served as one document
            resolve(doc, ref)
    assert OPENAPI["info"]["version"] == ASYNCAPI["info"]["version"]
    touchpoint = OPENAPI["components"]["schemas"]["Touchpoint"]
    assert touchpoint["x-parcours-id"].endswith(f"/{OPENAPI['info']['version']}.json")


def test_the_collectors_answers_match_the_openapi_document():
    """Every answer of a real collector (each status it gives) is documented for its
    path and method, and its body validates against the documented schema."""
    operation = OPENAPI["paths"]["/v1/events"]["post"]
    request = schema_check(
        OPENAPI, operation["requestBody"]["content"]["application/json"]["schema"]
    )
    bare = {"type": "site_visit", "customer_id": "c9", "channel": "mobile"}  # ids filled in
    bodies = [event(1), [event(2), bare], {"events": [event(3)]}]
    for body in bodies:
        request.validate(body)

    gzipped = {**SITE, "Content-Encoding": "gzip"}
    posts = [  # (body, headers, raw)
        *[(body, SITE, False) for body in bodies],
        ([event(4), {"event_id": "x"}], SITE, False),  # one rejected: 202 with errors
        (event(5), {}, False),  # no write key: 401
        (b"{", SITE, True),  # not JSON: 400
        (gzip.compress(b"[]")[:-3], gzipped, True),  # bad gzip: 400
        ([event(n) for n in range(1001)], SITE, False),  # too many events: 413
        (b"x", {**SITE, "Content-Encoding": "br"}, True),  # 415
    ]

    async def scenario(client, recorder):
        answers = []
        for body, headers, raw in posts:
            answers.append(("post", "/v1/events", await post(client, body, headers, raw)))
        recorder.fail = True  # the broker does not acknowledge: 503
        answers.append(("post", "/v1/events", await post(client, event(6))))
        for path in ("/healthz", "/openapi.json"):
            response = await client.get(path)
            answers.append(("get", path, (response.status, await response.json(), {})))
        return answers

    answers = run(scenario, Recorder())
    statuses = set()
    for method, path, (status, body, _) in answers:
        documented = OPENAPI["paths"][path][method]["responses"]
        assert str(status) in documented, (path, status, body)
        response = followed(OPENAPI, documented[str(status)])
        schema = response["content"]["application/json"]["schema"]
        schema_check(OPENAPI, schema).validate(body)
        statuses.add((path, status))
    assert {s for p, s in statuses if p == "/v1/events"} == {202, 400, 401, 413, 415, 503}
    assert answers[-1][2][1] == orjson.loads(orjson.dumps(OPENAPI))  # served as printed
    # Every reason an answer may give is documented, and only those.
    documented = OPENAPI["components"]["schemas"]["Accepted"]["properties"]["errors"]["items"]
    reasons = set(documented["properties"]["reason"]["enum"])
    assert reasons == set(REASONS) - {"late", "sink_rejected"}


def test_the_asyncapi_channels_are_the_topics_and_their_messages_match():
    addresses = {c["address"] for c in ASYNCAPI["channels"].values()}
    assert addresses == {
        topics.TOUCHPOINTS,
        topics.TOUCHPOINTS_DLQ,
        topics.SURVEY_INVITATIONS,
        topics.FOLLOW_UPS,
        topics.DISPATCH_DLQ,
    }
    messages = ASYNCAPI["components"]["messages"]
    # Dead-letter headers: exactly those the worker and the collector write.
    letter = DeadLetter(Rejection(UNKNOWN_TYPE, "", "$.type", 0, b"{}"), "touchpoints", 0, 0, 0)
    written = {name for name, _ in letter.headers("site")}
    assert set(messages["DeadLetter"]["headers"]["properties"]) == written
    # A synthetic day through the core: every touchpoint, invitation and follow-up
    # message is valid under its channel's payload schema (additionalProperties: false
    # in both row schemas, so a field added to a row without the spec fails here).
    core = Core()
    # A fixed day: how many invitations it decides depends on the hour (quiet hours).
    events = generate(300, seed=3, now=datetime(2026, 11, 26, 6, tzinfo=UTC))
    envelope = schema_check(ASYNCAPI, messages["TouchpointEnvelope"]["payload"])
    envelope.validate({"events": events[:50]})
    rows: dict[str, list[dict]] = {"invitations": [], "follow_ups": []}
    chunk = [(customer_key(e).encode(), orjson.dumps(e)) for e in events]
    for start in range(0, len(chunk), 500):
        _, result = core.step(chunk[start : start + 500])
        for kind in rows:
            rows[kind] += [r for by_key in result.rows.get(kind, {}).values() for r in by_key]
    assert len(rows["invitations"]) > 20 and len(rows["follow_ups"]) > 5
    invitations = schema_check(ASYNCAPI, messages["SurveyInvitations"]["payload"])
    invitations.validate({"invitations": rows["invitations"]})
    follow_ups = schema_check(ASYNCAPI, messages["FollowUps"]["payload"])
    follow_ups.validate({"follow_ups": rows["follow_ups"]})
    # The webhooks carry the same rows (the default template is the item as it is).
    for kind, name in (("invitations", "SurveyInvitation"), ("follow_ups", "FollowUp")):
        hook = OPENAPI["webhooks"][kind]["post"]
        schema = hook["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{name}"}
        schema_check(OPENAPI, schema).validate(rows[kind][0])


def test_the_webhook_headers_are_those_the_dispatcher_sends():
    from streams.edge import destinations

    params = {
        followed(OPENAPI, p)["name"].lower()
        for p in OPENAPI["webhooks"]["invitations"]["post"]["parameters"]
    }
    sent = {
        destinations.ID_HEADER,
        destinations.TIMESTAMP_HEADER,
        destinations.SIGNATURE_HEADER,
        destinations.IDEMPOTENCY_HEADER,
        destinations.KIND_HEADER,
    }
    assert params == {h.lower() for h in sent}
    assert all(re.fullmatch(r"[A-Za-z-]+", h) for h in sent)
