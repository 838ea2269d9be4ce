"""parcours dispatcher: destinations, templates, signatures, retries, the ledger, and
end to end through the local broker to an HTTP receiver run by the test."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.edge.destinations import (
    IDEMPOTENCY_HEADER,
    KIND_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Destination,
    DestinationsError,
    TokenBucket,
    load_destinations,
    render,
    sign,
    verify,
)
from streams.edge.dispatcher import Dispatcher, Ledger, item_id_of, items_of
from tests.support.dispatcher import SECRET, Receiver, invitation


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def destination(url: str, **fields) -> Destination:
    options = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "rate_limit": 1000.0}
    return Destination("tool", url, SECRET, **{**options, **fields})


async def dispatch(
    tmp_path: Path, dest: Destination | list[Destination], items: list[dict]
) -> list:
    """Deliver `items` (invitations, or (kind, item) pairs); return what was dead-lettered."""
    import aiohttp

    dead = []

    async def dead_letter(item, d, reason):
        dead.append((item["invitation_id"], d.name, reason))

    ledger = Ledger(tmp_path / "ledger.db")
    pairs = [i if isinstance(i, tuple) else ("invitations", i) for i in items]
    dests = dest if isinstance(dest, list) else [dest]
    async with aiohttp.ClientSession() as session:
        await Dispatcher(dests, ledger, session, dead_letter).deliver_all(pairs)
    ledger.close()
    return dead


# --- templates, signatures, limits ----------------------------------------------------


def test_template_keeps_types_formats_strings_and_recurses():
    template = {
        "email": "{customer_key}",
        "when": "{send_at_ms}",
        "subject": "How was your {metric}?",
        "tags": ["{rule}", "fixed"],
        "missing": "{nope}",
        "n": 3,
    }
    assert render(template, invitation(7)) == {
        "email": "c-7",
        "when": 1_700_000_000_007,
        "subject": "How was your ces?",
        "tags": ["ces_after_support_call", "fixed"],
        "missing": None,
        "n": 3,
    }
    assert render("x {nope} y", {}) == "x  y"


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2**31))
def test_a_signature_verifies_and_any_change_breaks_it(body, timestamp):
    signature = sign(SECRET, timestamp, body)
    assert verify(SECRET, str(timestamp), body, signature, now=timestamp)
    assert not verify(SECRET, str(timestamp), body + b"x", signature, now=timestamp)
    assert not verify(b"other", str(timestamp), body, signature, now=timestamp)
    assert not verify(SECRET, str(timestamp), body, signature, now=timestamp + 301)


def test_backoff_doubles_up_to_the_cap():
    d = Destination("x", "http://h", backoff_seconds=0.5, max_backoff_seconds=3.0)
    assert [d.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_token_bucket_holds_the_rate():
    bucket = TokenBucket(10.0, updated=0.0)
    waits = [bucket.wait_seconds(now=0.0) for _ in range(30)]
    assert waits[:10] == [0.0] * 10  # a burst of `rate`
    assert waits[10:] == pytest.approx([(n + 1) / 10 for n in range(20)])


# --- destinations files -----------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "destinations.yaml"
    path.write_text(text)
    return path


def test_destinations_file_loads_with_defaults_and_the_secret_from_the_environment(tmp_path):
    path = write(
        tmp_path,
        "destinations:\n  tool:\n    url: https://h/x\n    secret_env: HOOK_SECRET\n"
        "    timeout: 2s\n    max_attempts: 3\n    template: {email: '{customer_key}'}\n",
    )
    [d] = load_destinations(path, env={"HOOK_SECRET": "s3"})
    assert (d.name, d.url, d.secret, d.timeout_seconds, d.max_attempts) == (
        "tool",
        "https://h/x",
        b"s3",
        2.0,
        3,
    )
    assert d.body(invitation(1)) == {"email": "c-1"}
    assert Destination("x", "http://h").body(invitation(1)) == invitation(1)
    # Without secret_env, PARCOURS_WEBHOOK_SECRET signs (without either: see below).
    plain = write(tmp_path, "destinations:\n  tool: {url: 'http://h'}\n")
    signed = load_destinations(plain, env={"PARCOURS_WEBHOOK_SECRET": "k"})[0]
    assert (signed.secret, signed.deliver) == (b"k", ("invitations",))
    both = write(tmp_path, "destinations:\n  crm: {url: 'http://h', deliver: [follow_ups]}\n")
    assert load_destinations(both, env={"PARCOURS_WEBHOOK_SECRET": "k"})[0].deliver == (
        "follow_ups",
    )


def test_the_shipped_example_loads_and_so_does_its_commented_helpdesk(tmp_path):
    example = Path(__file__).parents[2] / "deploy" / "dispatcher" / "destinations.yaml"
    env = {"PARCOURS_WEBHOOK_SECRET": "s"}
    assert [d.name for d in load_destinations(example, env=env)] == ["survey_tool"]
    head, commented = example.read_text().split("  # helpdesk:")
    text = head + "  helpdesk:" + commented.replace("  #   ", "    ")
    [_, helpdesk] = load_destinations(write(tmp_path, text), env=env)
    assert (helpdesk.name, helpdesk.deliver) == ("helpdesk", ("follow_ups",))
    assert (
        helpdesk.body({"task_id": "t", "reason": "r", "journey": "j", "stage": "s"})["subject"]
        == "r (j, s)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("destinations:\n  tool: {}\n", "destinations/tool: 'url' is a required property"),
        (
            "destinations:\n  tool: {url: ftp://h}\n",
            "destinations/tool/url: 'ftp://h' does not match",
        ),
        ("destinations:\n  tool: {url: 'http://h', timeout: 5}\n", "destinations/tool/timeout"),
        ("destinations:\n  tool: {url: 'http://h', retries: 5}\n", "'retries' was unexpected"),
        ("destinations:\n  tool: {url: 'http://h', secret_env: NOPE}\n", "NOPE is not set"),
        ("destinations: [\n", "not valid YAML"),
        (
            "destinations:\n  tool: {url: 'http://h', deliver: [tickets]}\n",
            "destinations/tool/deliver/0: 'tickets' is not one of ['invitations', 'follow_ups']",
        ),
    ],
)
def test_destinations_file_errors_name_the_field(tmp_path, text, message):
    with pytest.raises(DestinationsError, match=r"destinations\.yaml: ") as caught:
        load_destinations(write(tmp_path, text), env={})
    assert message in str(caught.value)


def test_a_message_that_is_neither_invitations_nor_follow_ups_is_recognised():
    assert items_of(b'{"invitations": [{"invitation_id": "a"}]}') == (
        "invitations",
        [{"invitation_id": "a"}],
    )
    assert items_of(b'{"follow_ups": [{"task_id": "t"}]}') == ("follow_ups", [{"task_id": "t"}])
    for bad in (b"", b"nope", b"[]", b'{"invitations": 3}', b'{"invitations": [1]}', None):
        assert items_of(bad) is None
    assert items_of(b'{"journeys": []}') is None


def task(n: int, status: str) -> dict:
    return {"task_id": f"task-{n}", "customer_key": f"c-{n}", "status": status, "version": 1}


def test_follow_ups_go_only_where_asked_once_when_opened_and_once_when_closed(tmp_path, receiver):
    survey_tool = destination(receiver.url)  # invitations only, the default
    helpdesk = destination(receiver.url + "/tasks", deliver=("follow_ups",))
    helpdesk = dataclasses.replace(helpdesk, name="helpdesk")
    items = [invitation(1), ("follow_ups", task(1, "open")), ("follow_ups", task(2, "open"))]
    items += [("follow_ups", task(1, "closed")), ("follow_ups", task(1, "open"))]  # again
    assert asyncio.run(dispatch(tmp_path, [survey_tool, helpdesk], items)) == []
    got = Counter(
        (r["headers"][KIND_HEADER], r["headers"][IDEMPOTENCY_HEADER]) for r in receiver.accepted()
    )
    assert got == Counter(
        {
            ("invitations", "inv-0001"): 1,
            ("follow_ups", "task-1/open"): 1,
            ("follow_ups", "task-2/open"): 1,
            ("follow_ups", "task-1/closed"): 1,
        }
    )
    for r in receiver.accepted():
        h = r["headers"]
        assert verify(SECRET, h[TIMESTAMP_HEADER], r["body"], h[SIGNATURE_HEADER])
    assert item_id_of("follow_ups", task(3, "closed")) == "task-3/closed"


# --- delivery against a receiver -------------------------------------------------------------


def test_each_invitation_is_posted_once_signed_with_its_idempotency_key(tmp_path, receiver):
    items = [invitation(n) for n in range(20)]
    items += items[:5]  # the same invitation twice in one batch
    assert asyncio.run(dispatch(tmp_path, destination(receiver.url), items)) == []
    ids = Counter(r["headers"][IDEMPOTENCY_HEADER] for r in receiver.accepted())
    assert ids == Counter({f"inv-{n:04d}": 1 for n in range(20)})
    for r in receiver.accepted():
        h = r["headers"]
        assert verify(SECRET, h[TIMESTAMP_HEADER], r["body"], h[SIGNATURE_HEADER])
        assert orjson.loads(r["body"])["invitation_id"] == h[IDEMPOTENCY_HEADER]


def test_a_restart_skips_what_the_ledger_says_was_delivered(tmp_path, receiver):
    """A stopped dispatcher reads its last batch again: the ledger sends none twice."""
    items = [invitation(n) for n in range(10)]
    asyncio.run(dispatch(tmp_path, destination(receiver.url), items[:6]))
    asyncio.run(dispatch(tmp_path, destination(receiver.url), items))  # reads them all again
    assert len(receiver.accepted()) == 10


def test_server_errors_are_retried_until_accepted(tmp_path, receiver):
    receiver.fail_first = 5
    dest = destination(receiver.url, max_attempts=30)
    assert asyncio.run(dispatch(tmp_path, dest, [invitation(1)])) == []
    statuses = [r["status"] for r in receiver.requests]
    assert statuses[-1] == 200 and statuses.count(200) == 1 and 500 in statuses


def test_a_refusal_or_the_last_failure_goes_to_the_dead_letters(tmp_path, receiver):
    receiver.status = 422
    dead = asyncio.run(dispatch(tmp_path, destination(receiver.url), [invitation(1)]))
    assert dead == [("inv-0001", "tool", "HTTP 422: ")]
    assert len(receiver.requests) == 1  # a 4xx is not retried
    receiver.status = 503
    dead = asyncio.run(
        dispatch(tmp_path / "2", destination(receiver.url, max_attempts=3), [invitation(2)])
    )
    assert dead == [("inv-0002", "tool", "HTTP 503: ")]
    assert len(receiver.requests) == 1 + 3


def test_an_unreachable_destination_is_retried_then_dead_lettered(tmp_path):
    dest = destination("http://127.0.0.1:9/hook", max_attempts=2, timeout_seconds=0.5)
    [(item_id, _, reason)] = asyncio.run(dispatch(tmp_path, dest, [invitation(3)]))
    assert item_id == "inv-0003" and "Connect" in reason


# --- end to end ---------------------------------------------------------------------------


# --- a hostile or broken receiver ------------------------------------------------------------


def answer_with(status: int, body: bytes, headers: dict[str, str] | None = None):
    def answer(handler, _status) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def test_an_accepted_answer_with_bytes_that_are_not_text_is_still_delivered(tmp_path, receiver):
    receiver.answer = answer_with(200, b"\xff\xfe\x00 not utf-8 \xc3")
    assert asyncio.run(dispatch(tmp_path, destination(receiver.url), [invitation(1)])) == []
    ledger = Ledger(tmp_path / "ledger.db")
    assert ledger.counts() == {"delivered": 1}  # a restart would not post it again
    ledger.close()
    assert len(receiver.requests) == 1


def test_a_refusal_with_garbage_bytes_is_dead_lettered_with_a_printable_reason(tmp_path, receiver):
    receiver.answer = answer_with(422, b"\xff\x1b[2J\x07bad \xc3(")
    [(_, _, reason)] = asyncio.run(dispatch(tmp_path, destination(receiver.url), [invitation(1)]))
    assert reason.startswith("HTTP 422: ") and "\x1b" not in reason and "\\x1b" in reason


def test_a_redirect_is_not_followed_and_the_signed_body_goes_nowhere_else(tmp_path, receiver):
    elsewhere = Receiver()
    try:
        receiver.answer = answer_with(307, b"", {"Location": elsewhere.url})
        [(_, _, reason)] = asyncio.run(
            dispatch(tmp_path, destination(receiver.url), [invitation(1)])
        )
        assert reason.startswith("HTTP 307: redirect to") and "not followed" in reason
        assert len(receiver.requests) == 1  # a redirect is a refusal: not retried
        assert elsewhere.requests == []
    finally:
        elsewhere.close()


def test_a_huge_error_answer_is_read_only_as_far_as_its_first_bytes(tmp_path, receiver):
    size = 256 * 1024 * 1024
    sent = []

    def endless(handler, _status) -> None:
        handler.send_response(500)
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        chunk, total = b"e" * 65536, 0
        try:
            while total < size:
                handler.wfile.write(chunk)
                total += len(chunk)
        except OSError:  # the dispatcher hung up
            pass
        sent.append(total)

    receiver.answer = endless
    dest = destination(receiver.url, max_attempts=2)
    [(_, _, reason)] = asyncio.run(dispatch(tmp_path, dest, [invitation(1)]))
    assert reason.startswith("HTTP 500: eee") and len(reason) < 300
    deadline = time.monotonic() + 10
    while len(sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    # What the server managed to write before the hang-up: socket buffers, not 256 MB.
    assert len(sent) == 2 and max(sent) < 32 * 1024 * 1024, sent


def test_a_template_that_cannot_render_is_refused_at_load(tmp_path):
    path = write(
        tmp_path,
        "destinations:\n  tool:\n    url: http://h\n    unsigned: true\n"
        "    template: {when: '{send_at_ms:%Y-%m-%d}'}\n",
    )
    with pytest.raises(DestinationsError) as caught:
        load_destinations(path, env={})
    message = str(caught.value)
    assert "destinations/tool/template: cannot render a invitations item" in message
    assert "{send_at_ms:d}" in message
    # The same field, formatted as the number it is, loads; and a follow-ups template is
    # rendered with a task (which has no send_at_ms: empty, not an error).
    ok = write(
        tmp_path,
        "destinations:\n  tool:\n    url: http://h\n    unsigned: true\n"
        "    deliver: [invitations, follow_ups]\n    template: {when: '{send_at_ms:d}'}\n",
    )
    with pytest.raises(DestinationsError, match="cannot render a follow_ups item"):
        load_destinations(ok, env={})


def test_a_destination_without_a_secret_must_say_it_is_unsigned(tmp_path):
    plain = write(tmp_path, "destinations:\n  tool: {url: 'http://h'}\n")
    with pytest.raises(DestinationsError, match="destinations/tool: no secret") as caught:
        load_destinations(plain, env={})
    assert "unsigned: true" in str(caught.value)
    said = write(tmp_path, "destinations:\n  tool: {url: 'http://h', unsigned: true}\n")
    [d] = load_destinations(said, env={})
    assert (d.secret, d.unsigned) == (b"", True)


def test_a_template_that_fails_on_a_real_item_is_dead_lettered_not_a_crash(tmp_path, receiver):
    dest = destination(receiver.url, template={"n": "{send_at_ms:d}"})
    [(item_id, _, reason)] = asyncio.run(
        dispatch(tmp_path, dest, [invitation(1, send_at_ms="not a number")])
    )
    assert item_id == "inv-0001" and reason.startswith("template failed: ValueError")
    assert receiver.requests == []
