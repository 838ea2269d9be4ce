"""`parcours collector`: the HTTP front door for producers that cannot talk to Kafka.

    POST /v1/events   one event, a JSON array of events, or {"events": [...]};
                      `event_id` and `ts` may be left out, and `sent_at` corrects `ts`
                      for the client's clock skew (see streams.edge.stamps);
                      optionally Content-Encoding: gzip. Authorised by a write key
                      (Authorization: Bearer KEY, or X-Write-Key: KEY) that names the
                      source. Each event is validated with the worker's own schema; valid
                      ones go to `touchpoints` as one batch envelope per customer key,
                      rejected ones to the dead-letter topic. 202 only once the broker
                      has acknowledged both, with {"accepted", "rejected", "errors"}.
    GET  /healthz     200 while the broker answers (probed every few seconds), else 503
    GET  /metrics     Prometheus metrics
    GET  /openapi.json  this API as OpenAPI 3.1 (schemas/openapi.yaml, schemas filled in)

Refusals: 401 (no or unknown write key), 413 (body or batch over the limit, also after
gunzip), 400 (not JSON, not events, bad gzip), 408 (the body did not arrive in time),
415 (another content encoding), 429 with Retry-After (the client address or the write
key has too many requests open, or too many are being published), 503 with Retry-After
(the broker did not acknowledge: nothing of the request was accepted, send it again;
event ids make the retry harmless). Browsers get CORS headers for the configured origins.

A write key is public (a site's lives in its JavaScript), so no one client may hold the
collector: request lines and headers must arrive within `header_timeout_seconds` (also
the idle keep-alive), a body within `body_timeout_seconds`; a client address and a write
key may each be sending only so many bodies at once; and the slots of the publishing
stage are taken only once a body is in, so a slow sender holds none of them. An event may not claim
a source other than its key's (`source_not_allowed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import zlib
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from streams.core.events import SOURCE_NOT_ALLOWED, EventParser, Rejection, ValidEvent
from streams.core.ingest import DeadLetter
from streams.edge.produce import (
    MAX_ENVELOPE_BYTES,
    envelopes_by_partition,
    kafka_producer,
    start_producer,
)
from streams.edge.specs import spec_document
from streams.edge.stamps import stamped

log = logging.getLogger("parcours.collector")

ORIGIN_TOPIC = "http"  # dead letters from the collector name this as their origin
REQUESTS = Counter(
    "parcours_collector_requests_total", "HTTP requests to the collector, by status", ["status"]
)
COLLECTED = Counter(
    "parcours_collector_events_total",
    "Events received by the collector, by source and result (accepted, rejected)",
    ["source", "result"],
)
REQUEST_SECONDS = Histogram(
    "parcours_collector_request_seconds",
    "Time to answer POST /v1/events, broker acknowledgement included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

# (key, value) messages for `touchpoints`; (value, headers) dead letters.
Messages = list[tuple[bytes, bytes]]
Letters = list[tuple[bytes, list[tuple[str, bytes]]]]
Publish = Callable[[Messages, Letters], Awaitable[None]]


class CollectorConfigError(ValueError):
    """A collector setting is unusable; the message names the variable and the fix."""


@dataclass(frozen=True)
class CollectorSettings:
    write_keys: dict[str, str]  # write key -> source name
    max_body_bytes: int = 1_048_576  # before and after gunzip
    max_events: int = 1000  # per request
    max_envelope_bytes: int = MAX_ENVELOPE_BYTES  # split a partition's events above this
    partitions: int = 4  # of the touchpoints topic: one envelope per partition
    max_in_flight: int = 64  # requests being published at once; more get 429
    max_per_client: int = 16  # bodies one client address may be sending at once
    max_per_key: int = 512  # bodies one write key may be sending at once (a site's: all browsers)
    header_timeout_seconds: float = 10.0  # request line and headers; also idle keep-alive
    body_timeout_seconds: float = 10.0  # the whole body, once the headers are in
    cors_origins: frozenset[str] = field(default_factory=frozenset)  # "*" for any


def parse_write_keys(text: str) -> dict[str, str]:
    """'site:KEY1,crm:KEY2' -> {KEY1: site, KEY2: crm}."""
    keys: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        source, _, key = part.partition(":")
        if not source or not key:
            raise CollectorConfigError(
                f"PARCOURS_WRITE_KEYS: {part!r} is not source:key; e.g. site:s3cret,crm:0th3r"
            )
        keys[key] = source
    if not keys:
        raise CollectorConfigError(
            "PARCOURS_WRITE_KEYS is empty; set it to source:key pairs, e.g. site:s3cret"
        )
    return keys


class OpenRequests:
    """How many bodies each client address (or write key) is sending, up to a limit."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what, self.open = limit, what, Tally[str]()

    @contextlib.contextmanager
    def slot(self, who: str) -> Iterator[None]:
        if self.open[who] >= self.limit:
            raise Refused(
                429, f"this {self.what} is sending {self.limit} bodies already; retry shortly", 1
            )
        self.open[who] += 1
        try:
            yield
        finally:
            self.open[who] -= 1
            if not self.open[who]:
                del self.open[who]


class Refused(Exception):
    """A request answered with an error status and a reason."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.retry_after = status, reason, retry_after


def create_collector(
    parser: EventParser,
    publish: Publish,
    settings: CollectorSettings,
    healthy: Callable[[], bool] = lambda: True,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    in_flight = 0
    sequence = itertools.count()
    per_client = OpenRequests(settings.max_per_client, "client address")
    per_key = OpenRequests(settings.max_per_key, "write key")

    async def post_events(request: web.Request) -> web.Response:
        nonlocal in_flight
        started = time.perf_counter()
        key, source = _source(request, settings.write_keys)
        # Receiving the body is the one phase a client paces: that is what the per-address
        # and per-key slots bound. Publishing is paced by the broker.
        with per_client.slot(request.remote or ""), per_key.slot(key):
            try:
                async with asyncio.timeout(settings.body_timeout_seconds):
                    body = await _body(request, settings.max_body_bytes)
            except TimeoutError:
                raise Refused(
                    408, f"the body did not arrive within {settings.body_timeout_seconds:g}s"
                ) from None
        if in_flight >= settings.max_in_flight:
            raise Refused(429, "too many requests in flight; retry shortly", retry_after=1)
        in_flight += 1
        try:
            now_ms = int(clock() * 1000)
            items = [stamped(item, now_ms, received=True) for item in _events_in(body, settings)]
            for item in items:
                if isinstance(item, dict) and "source" not in item:
                    item["source"] = source
            valid, rejected = parser.check_items(items, now_ms, whole_raw=body)
            valid, rejected = _sources_checked(valid, rejected, source)
            letters = [
                (r.payload, _letter(r, next(sequence), now_ms).headers(source)) for r in rejected
            ]
            envelopes = envelopes_by_partition(
                (v.event for v in valid), settings.partitions, settings.max_envelope_bytes
            )
            try:
                await publish(envelopes, letters)
            except Exception as exc:  # any broker failure means "not accepted"
                raise Refused(503, f"the broker did not acknowledge ({exc}); retry", 5) from None
        finally:
            in_flight -= 1
        COLLECTED.labels(source, "accepted").inc(len(valid))
        COLLECTED.labels(source, "rejected").inc(len(rejected))
        REQUEST_SECONDS.observe(time.perf_counter() - started)
        answer = {
            "accepted": len(valid),
            "rejected": len(rejected),
            "errors": [_error(r) for r in rejected],
        }
        return web.json_response(answer, status=202, dumps=_dumps)

    async def healthz(_: web.Request) -> web.Response:
        ok = healthy()
        return web.json_response(
            {"status": "ok" if ok else "broker unavailable"}, status=200 if ok else 503
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    openapi = orjson.dumps(spec_document("openapi"))

    async def openapi_json(_: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    # Decompression is ours, so the size limit holds after gunzip too (no zip bombs).
    app = web.Application(
        middlewares=[_answers(settings.cors_origins)], handler_args={"auto_decompress": False}
    )
    app.router.add_post("/v1/events", post_events)
    app.router.add_route("OPTIONS", "/v1/events", _preflight)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_json)
    return app


def _answers(origins: frozenset[str]) -> Callable:
    """Turn refusals into JSON errors, count statuses, add CORS headers for allowed origins."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            response = await handler(request)
        except Refused as refused:
            response = web.json_response({"error": refused.reason}, status=refused.status)
            if refused.retry_after is not None:
                response.headers["Retry-After"] = str(refused.retry_after)
        except web.HTTPException as exc:  # aiohttp's own: 404, 405
            response = web.json_response({"error": exc.reason}, status=exc.status)
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        if request.path == "/v1/events":
            REQUESTS.labels(str(response.status)).inc()
        return response

    return middleware


async def _preflight(_: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding, "
            "X-Write-Key",
            "Access-Control-Max-Age": "600",
        },
    )


def _source(request: web.Request, write_keys: dict[str, str]) -> tuple[str, str]:
    """(write key, the source it names)."""
    auth = request.headers.get("Authorization", "")
    key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("X-Write-Key")
    if not key:
        raise Refused(401, "no write key; send Authorization: Bearer KEY or X-Write-Key: KEY")
    source = write_keys.get(key)
    if source is None:
        raise Refused(401, "unknown write key")
    return key, source


def _sources_checked(
    valid: list[ValidEvent], rejected: list[Rejection], source: str
) -> tuple[list[ValidEvent], list[Rejection]]:
    """Valid events that claim another source than their write key's become rejections."""
    kept = [v for v in valid if v.event["source"] == source]
    if len(kept) == len(valid):
        return valid, rejected
    refused = [
        Rejection(
            SOURCE_NOT_ALLOWED,
            f"this write key sends source {source!r}, not {v.event['source']!r}; use that "
            "source's own key",
            "$.source",
            v.index,
            orjson.dumps(v.event),
        )
        for v in valid
        if v.event["source"] != source
    ]
    return kept, sorted([*rejected, *refused], key=lambda r: r.index)


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, f"body of {request.content_length} bytes is over the {limit} limit")
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"body is over the {limit} bytes limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    if encoding == "gzip":
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflate.decompress(body, limit + 1)
        except zlib.error as exc:
            raise Refused(400, f"body is not valid gzip: {exc}") from None
        if len(body) > limit or inflate.unconsumed_tail:
            raise Refused(413, f"body is over the {limit} bytes limit once decompressed")
    elif encoding != "identity":
        raise Refused(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    return body


def _events_in(body: bytes, settings: CollectorSettings) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"body is not JSON: {exc}") from None
    if isinstance(doc, dict) and set(doc) == {"events"}:
        doc = doc["events"]
        if not isinstance(doc, list):
            raise Refused(400, "'events' must be an array of events")
    items = doc if isinstance(doc, list) else [doc] if isinstance(doc, dict) else None
    if items is None:
        raise Refused(400, 'send one event object, an array of events, or {"events": [...]}')
    if len(items) > settings.max_events:
        raise Refused(413, f"{len(items)} events is over the {settings.max_events} per request")
    return items


def _letter(rejection: Rejection, number: int, now_ms: int) -> DeadLetter:
    # Origin "http", partition 0, offset unique per rejected event: a dead letter's id.
    return DeadLetter(rejection, ORIGIN_TOPIC, 0, time.time_ns() + number, now_ms)


def _error(rejection: Rejection) -> dict:
    return {
        "index": rejection.index,
        "path": rejection.path,
        "reason": rejection.reason,
        "detail": rejection.detail,
    }


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


PROBE_SECONDS = 2.0  # how often the broker is asked for its metadata, for /healthz


class KafkaPublisher:
    """Sends a request's envelopes and dead letters; returns once the broker acked all.
    `connected` says whether the broker answered the last probe."""

    def __init__(
        self, bootstrap: str, topic: str, dead_letter_topic: str, idempotent: bool = True
    ) -> None:
        self.topic, self.dead_letter_topic = topic, dead_letter_topic
        self.producer = kafka_producer(
            bootstrap, idempotent, linger_ms=2, request_timeout_ms=10_000
        )
        self.connected = False

    async def start(self) -> None:
        await start_producer(self.producer)
        self.connected = True
        self._probing = asyncio.create_task(self._probe())

    async def stop(self) -> None:
        self.connected = False
        self._probing.cancel()
        await self.producer.stop()

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                async with asyncio.timeout(PROBE_SECONDS):
                    await self.producer.client.fetch_all_metadata()
                answered = True
            except Exception:  # unreachable, refused, timed out: all mean "not healthy"
                answered = False
            if answered != self.connected:
                log.warning("broker %s", "reachable again" if answered else "unreachable")
            self.connected = answered

    async def publish(self, messages: Messages, letters: Letters) -> None:
        acks = [await self.producer.send(self.topic, value=v, key=k) for k, v in messages]
        acks += [
            await self.producer.send(self.dead_letter_topic, value=v, headers=h) for v, h in letters
        ]
        await asyncio.gather(*acks)


def collector_runner(app: web.Application, settings: CollectorSettings) -> web.AppRunner:
    # aiohttp closes a connection whose request has not arrived within its keep-alive
    # timeout, counted from the connection's start: that is the header timeout too.
    return web.AppRunner(app, access_log=None, keepalive_timeout=settings.header_timeout_seconds)


async def serve(
    bootstrap: str,
    topic: str,
    dead_letter_topic: str,
    parser: EventParser,
    settings: CollectorSettings,
    host: str,
    port: int,
    ready: Callable[[int], None] | None = None,
    idempotent: bool = True,
) -> None:
    """Run the collector until cancelled; `ready(port)` once it listens."""
    publisher = KafkaPublisher(bootstrap, topic, dead_letter_topic, idempotent)
    await publisher.start()
    app = create_collector(parser, publisher.publish, settings, lambda: publisher.connected)
    runner = collector_runner(app, settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if ready:
            ready(runner.addresses[0][1])
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await publisher.stop()
