"""`parcours report`: the journey map as text, JSON and a self-contained HTML page that
renders in headless Chromium without errors or network requests."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner
from PIL import Image, ImageStat

from streams.cli import main
from streams.clickhouse.report import as_json, as_text, read_map
from streams.clickhouse.report_html import as_html
from streams.dev.local_stack import _wait_for_port, free_port
from tests.support.clickhouse import clickhouse
from tests.support.journey_map import fill

CHROMIUM = shutil.which("chromium")
SINCE, UNTIL = datetime(2000, 1, 1), datetime(2100, 1, 1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "ch"
    with clickhouse(path) as ch:
        fill(ch)
        yield path, read_map(ch, "buy", SINCE, UNTIL)


def test_the_map_reads_every_part_of_the_views(store):
    _, found = store
    assert [(s["stage"], s["journeys"]) for s in found.funnel] == [
        ("visit", 5),
        ("cart", 4),
        ("pay", 3),
        ("deliver", 1),
    ]
    assert found.paths[0]["outcome"] == "goal"  # the goal first, then each leak
    assert {p["outcome"] for p in found.paths} == {"goal", "bounce", "cart_abandoned", "slow_pay"}
    # Sankey links: position:type → position:type, ending in how the journey ended.
    assert {"source": "1:site_visit", "target": "2:add_to_cart", "journeys": 2} in found.flows
    assert {"source": "2:add_to_cart", "target": "3:(exit)", "journeys": 1} in found.flows
    assert [(x["rule"], x["leaks"], x["leak_rate"]) for x in found.leaks] == [
        ("bounce", 1, 20.0),
        ("cart_abandoned", 1, 20.0),
        ("slow_pay", 1, 20.0),
    ]
    assert {(w["category"], w["leaks"], w["leak_rate"]) for w in found.leak_weeks} == {
        ("conversion", 2, 40.0),
        ("engagement", 1, 20.0),
    }
    assert [r["customer_key"] for r in found.at_risk] == ["c2", "c4"]


def test_text_and_json(store):
    _, found = store
    text = as_text(found)
    assert "visit" in text and "█" * 30 in text and "80.0%" in text
    assert "cart_abandoned" in text and "20.0 per 100 journeys" in text
    assert json.loads(as_json(found))["funnel"][1] == {
        "stage": "cart",
        "journeys": 4,
        "customers": 4,
        "conversion": 80.0,
        "median_seconds": 600,
        "p90_seconds": 1200,
    }


def test_the_html_needs_nothing_from_outside(store):
    page = as_html(store[1])
    assert page.count("<svg") == 3  # funnel, Sankey, leak trend
    for outside in ("http://", "https://", "<script", "<link", "@import", "src="):
        assert outside not in page


def test_the_command_line(store):
    path, _ = store
    url = f"chdb://{path}"
    unknown = CliRunner().invoke(main, ["report", "--clickhouse", url, "--journey", "teleport"])
    assert unknown.exit_code == 2 and "choose one of purchase" in unknown.output
    backwards = CliRunner().invoke(
        main, ["report", "--clickhouse", url, "--since", "2026-02-01", "--until", "2026-01-01"]
    )
    assert backwards.exit_code == 2 and "is not before" in backwards.output
    as_machine = CliRunner().invoke(
        main, ["report", "--clickhouse", url, "--format", "json", "--since", "2000-01-01"]
    )
    assert as_machine.exit_code == 0, as_machine.output
    assert json.loads(as_machine.output)["journey"] == "purchase"


async def render(page: Path, port: int) -> tuple[bytes, list[str], list[str]]:
    """Load `page` through the DevTools protocol: (screenshot, requests, errors)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
            target = next(t for t in await answer.json() if t["type"] == "page")
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 10_000))
            requests, errors, replies = [], [], {}

            async def call(method: str, **params) -> dict:
                number = next(ids)
                await ws.send_json({"id": number, "method": method, "params": params})
                while number not in replies:
                    message = await ws.receive_json(timeout=30)
                    if "id" in message:
                        replies[message["id"]] = message
                        continue
                    event, data = message["method"], message["params"]
                    if event == "Network.requestWillBeSent":
                        requests.append(data["request"]["url"])
                    elif event == "Runtime.exceptionThrown":
                        errors.append(str(data["exceptionDetails"]))
                    elif event == "Log.entryAdded" and data["entry"]["level"] == "error":
                        errors.append(data["entry"]["text"])
                    elif event == "Page.loadEventFired":
                        replies["loaded"] = message
                return replies[number].get("result", {})

            for domain in ("Network", "Runtime", "Log", "Page"):
                await call(f"{domain}.enable")
            await call(
                "Emulation.setDeviceMetricsOverride",
                width=1200,
                height=2600,
                deviceScaleFactor=1,
                mobile=False,
            )
            await call("Page.navigate", url=page.as_uri())
            while "loaded" not in replies:
                await call("Runtime.evaluate", expression="1")
                await asyncio.sleep(0.1)
            shot = await call("Page.captureScreenshot", format="png")
            return base64.b64decode(shot["data"]), requests, errors


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_html_report_renders_in_chromium_without_errors_or_requests(store, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(as_html(store[1]), encoding="utf-8")
    port = free_port()
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, 30, browser, "chromium")
        png, requests, errors = asyncio.run(render(page, port))
    finally:
        browser.terminate()
        browser.wait(timeout=15)
    (tmp_path / "report.png").write_bytes(png)
    assert errors == []
    assert requests == [page.as_uri()]  # the page itself, nothing else
    image = Image.open(io.BytesIO(png)).convert("L")
    assert image.size == (1200, 2600)
    lightness = ImageStat.Stat(image)
    assert lightness.stddev[0] > 10  # not a blank page: text, bars, bands
    dark = sum(image.histogram()[:128]) / (image.width * image.height)
    assert 0.005 < dark < 0.5  # some ink, not a black screen


def test_a_metric_with_no_formula_and_odd_text_is_shown_not_a_crash(store):
    import dataclasses

    _, found = store
    scores = [
        {
            "metric": "nps",
            "touchpoint": "delivery",
            "score": 42.5,
            "responses": 40,
            "small_sample": False,
        },
        {
            "metric": "effort_v2",
            "touchpoint": "call\x1b[2J",
            "score": None,
            "responses": 3,
            "small_sample": True,
        },
    ]
    odd = dataclasses.replace(found, scores=scores)
    text = as_text(odd)
    assert "NPS   delivery            42.5  from 40" in text
    assert "EFFORT_V2 call\\x1b[2J" in text and "n/a  from 3 *" in text
    assert "\x1b" not in text
    page = as_html(odd)
    assert '<td class="">n/a</td>' in page
