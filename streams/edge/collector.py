"""`parcours collector`: the HTTP front door for producers that cannot talk to Kafka.

    POST /v1/events   one event, a JSON array of events, or {"events": [...]};
                      optionally Content-Encoding: gzip. Authorised by a write key
                      (Authorization: Bearer KEY, or X-Write-Key: KEY) that names the
                      source. Each event is validated with the worker's own schema; valid
                      ones go to `touchpoints` as one batch envelope per customer key,
                      rejected ones to the dead-letter topic. 202 only once the broker
                      has acknowledged both, with {"accepted", "rejected", "errors"}.
    GET  /healthz     200 while the producer is connected
    GET  /metrics     Prometheus metrics

Refusals: 401 (no or unknown write key), 413 (body or batch over the limit, also after
gunzip), 400 (not JSON, not events, bad gzip), 415 (another content encoding), 429 with
Retry-After (more requests in flight than allowed), 503 with Retry-After (the broker did
not acknowledge: nothing of the request was accepted, send it again; event ids make the
retry harmless). Browsers get CORS headers for the configured origins.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from streams.core.events import EventParser, Rejection
from streams.core.ingest import DeadLetter
from streams.edge.produce import envelopes_by_key, kafka_producer

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
    max_in_flight: int = 64  # concurrent POSTs; more get 429
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

    async def post_events(request: web.Request) -> web.Response:
        nonlocal in_flight
        started = time.perf_counter()
        source = _source(request, settings.write_keys)
        if in_flight >= settings.max_in_flight:
            raise Refused(429, "too many requests in flight; retry shortly", retry_after=1)
        in_flight += 1
        try:
            body = await _body(request, settings.max_body_bytes)
            items = _events_in(body, settings)
            now_ms = int(clock() * 1000)
            for item in items:
                if isinstance(item, dict) and "source" not in item:
                    item["source"] = source
            valid, rejected = parser.check_items(items, now_ms, whole_raw=body)
            letters = [
                (r.payload, _letter(r, next(sequence), now_ms).headers(source)) for r in rejected
            ]
            try:
                await publish(envelopes_by_key(v.event for v in valid), letters)
            except Exception as exc:  # any broker failure means "not accepted"
                raise Refused(503, f"the broker did not acknowledge ({exc}); retry", 5) from None
        finally:
            in_flight -= 1
        COLLECTED.labels(source, "accepted").inc(len(valid))
        COLLECTED.labels(source, "rejected").inc(len(rejected))
        REQUEST_SECONDS.observe(time.perf_counter() - started)
        body = {
            "accepted": len(valid),
            "rejected": len(rejected),
            "errors": [_error(r) for r in rejected],
        }
        return web.json_response(body, status=202, dumps=_dumps)

    async def healthz(_: web.Request) -> web.Response:
        ok = healthy()
        return web.json_response(
            {"status": "ok" if ok else "broker unavailable"}, status=200 if ok else 503
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # Decompression is ours, so the size limit holds after gunzip too (no zip bombs).
    app = web.Application(
        middlewares=[_answers(settings.cors_origins)], handler_args={"auto_decompress": False}
    )
    app.router.add_post("/v1/events", post_events)
    app.router.add_route("OPTIONS", "/v1/events", _preflight)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
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


def _source(request: web.Request, write_keys: dict[str, str]) -> str:
    auth = request.headers.get("Authorization", "")
    key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("X-Write-Key")
    if not key:
        raise Refused(401, "no write key; send Authorization: Bearer KEY or X-Write-Key: KEY")
    source = write_keys.get(key)
    if source is None:
        raise Refused(401, "unknown write key")
    return source


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


class KafkaPublisher:
    """Sends a request's envelopes and dead letters; returns once the broker acked all."""

    def __init__(
        self, bootstrap: str, topic: str, dead_letter_topic: str, idempotent: bool = True
    ) -> None:
        self.topic, self.dead_letter_topic = topic, dead_letter_topic
        self.producer = kafka_producer(
            bootstrap, idempotent, linger_ms=2, request_timeout_ms=10_000
        )
        self.connected = False

    async def start(self) -> None:
        await self.producer.start()
        self.connected = True

    async def stop(self) -> None:
        self.connected = False
        await self.producer.stop()

    async def publish(self, messages: Messages, letters: Letters) -> None:
        acks = [await self.producer.send(self.topic, value=v, key=k) for k, v in messages]
        acks += [
            await self.producer.send(self.dead_letter_topic, value=v, headers=h) for v, h in letters
        ]
        await asyncio.gather(*acks)


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
    runner = web.AppRunner(app, access_log=None)
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
