"""Slow and greedy clients against a real collector server on a loopback port (the broker
is stood in for: this is about HTTP). Each test has a bounded duration: the timeouts
are set to about a second, and every wait has a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import orjson
from aiohttp import web

from streams.edge.collector import CollectorSettings, collector_runner, create_collector
from tests.support.collector import KEYS, PARSER, SITE, event

ATTACKER = "127.0.0.2"  # all of 127/8 is loopback: a second client address
TIMEOUT = 1.0


class Published:
    def __init__(self) -> None:
        self.events = 0

    async def publish(self, messages, letters) -> None:
        self.events += sum(len(orjson.loads(v)["events"]) for _, v in messages)


async def started(settings: CollectorSettings, published: Published) -> tuple[web.AppRunner, int]:
    runner = collector_runner(create_collector(PARSER, published.publish, settings), settings)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def settings(**changes) -> CollectorSettings:
    options = {"header_timeout_seconds": TIMEOUT, "body_timeout_seconds": TIMEOUT}
    return CollectorSettings(write_keys=KEYS, **{**options, "max_per_client": 8, **changes})


async def honest_posts(port: int, count: int) -> list[int]:
    async with aiohttp.ClientSession() as session:
        statuses = []
        for n in range(count):
            async with session.post(
                f"http://127.0.0.1:{port}/v1/events",
                data=orjson.dumps([event(n, f"h{n}")]),
                headers=SITE,
            ) as response:
                statuses.append(response.status)
        return statuses


async def slow_body(port: int) -> tuple[bytes, float]:
    """Headers at once, then a byte of a 1,000-byte body every 0.2 s; what the server
    answered and when (seconds from the start)."""
    started_at = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
    writer.write(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer site-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n["
    )
    answer = b""
    try:
        for _ in range(100):
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(200), 0.2)
            except TimeoutError:
                writer.write(b" ")
                continue
            break
    except ConnectionError:
        pass
    writer.close()
    return answer, time.monotonic() - started_at


async def half_sent_headers(port: int) -> float:
    """Part of a request line and headers, then nothing: how long until the server hangs up."""
    started_at = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
    writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthoriz")
    await writer.drain()
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(reader.read(), 10 * TIMEOUT)  # b"" once the server closes
    writer.close()
    return time.monotonic() - started_at


def test_slow_bodies_from_one_address_hold_neither_other_clients_nor_for_long():
    async def scenario():
        published = Published()
        runner, port = await started(settings(), published)
        try:
            attack = [asyncio.create_task(slow_body(port)) for _ in range(64)]
            await asyncio.sleep(0.3)  # the attackers' headers are in, their bodies trickle
            honest_started = time.monotonic()
            statuses = await honest_posts(port, 20)
            honest_seconds = time.monotonic() - honest_started
            answers = await asyncio.gather(*attack)
        finally:
            await runner.cleanup()
        return statuses, honest_seconds, answers, published.events

    statuses, honest_seconds, answers, events = asyncio.run(scenario())
    assert statuses == [202] * 20 and events == 20
    assert honest_seconds < TIMEOUT  # not queued behind the slow bodies
    codes = [answer.split(b" ")[1] if answer else b"none" for answer, _ in answers]
    # 8 open requests per address: the rest are refused at once, the 8 cut off in time.
    assert codes.count(b"408") == 8 and codes.count(b"429") == 56, codes
    assert max(seconds for _, seconds in answers) < TIMEOUT + 2


def test_half_sent_headers_are_hung_up_on_after_the_header_timeout():
    async def scenario():
        runner, port = await started(settings(), Published())
        try:
            held = await asyncio.gather(*(half_sent_headers(port) for _ in range(200)))
            statuses = await honest_posts(port, 5)
        finally:
            await runner.cleanup()
        return held, statuses

    held, statuses = asyncio.run(scenario())
    assert statuses == [202] * 5
    assert max(held) < TIMEOUT + 2, max(held)


def test_one_write_key_cannot_take_every_slot_from_the_others():
    async def scenario():
        runner, port = await started(settings(max_per_key=3, max_per_client=100), Published())
        try:
            slow = [asyncio.create_task(slow_body(port)) for _ in range(5)]  # the site key
            await asyncio.sleep(0.3)
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{port}/v1/events",
                    data=orjson.dumps([event(1, source="crm")]),
                    headers={"Authorization": "Bearer crm-key"},
                ) as response,
            ):
                crm = response.status
            answers = await asyncio.gather(*slow)
        finally:
            await runner.cleanup()
        return sorted(answer.split(b" ")[1] for answer, _ in answers), crm

    site, crm = asyncio.run(scenario())
    assert site == [b"408", b"408", b"408", b"429", b"429"] and crm == 202


def test_a_fast_client_may_send_many_requests_at_once():
    """The per-address limit bounds bodies being received, not requests being published:
    a back office (or a proxy in front of the collector) sending 40 at once is served."""

    async def scenario():
        gate = asyncio.Event()

        class Held(Published):
            async def publish(self, messages, letters) -> None:
                await gate.wait()
                await super().publish(messages, letters)

        published = Held()
        runner, port = await started(settings(), published)
        try:
            posting = asyncio.create_task(concurrent_posts(port, 40))
            await asyncio.sleep(0.3)  # all 40 bodies are in, held at the broker
            gate.set()
            statuses = await posting
        finally:
            await runner.cleanup()
        return statuses, published.events

    statuses, events = asyncio.run(scenario())
    assert statuses == [202] * 40 and events == 40


async def concurrent_posts(port: int, count: int) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def post(n: int) -> int:
            async with session.post(
                f"http://127.0.0.1:{port}/v1/events",
                data=orjson.dumps([event(n, f"f{n}")]),
                headers=SITE,
            ) as response:
                return response.status

        return list(await asyncio.gather(*(post(n) for n in range(count))))
