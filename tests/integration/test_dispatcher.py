"""parcours dispatcher: destinations, templates, signatures, retries, the ledger, and
end to end through the local broker to an HTTP receiver run by the test."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import time
from collections import Counter
from email.utils import formatdate
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.edge.destinations import (
    ID_HEADER,
    IDEMPOTENCY_HEADER,
    KIND_HEADER,
    LEGACY_SIGNATURE_HEADER,
    LEGACY_TIMESTAMP_HEADER,
    SIGNATURE_HEADER,
    Destination,
    DestinationsError,
    TokenBucket,
    load_destinations,
    new_secret,
    parse_secrets,
    render,
    signed_headers,
)
from streams.edge.dispatcher import Dispatcher, Ledger, item_id_of, items_of, seconds_after
from tests.support.dispatcher import KEYS, Receiver, invitation, verified


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def destination(url: str, **fields) -> Destination:
    options = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "rate_limit": 1000.0}
    return Destination("tool", url, KEYS, **{**options, **fields})


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


@given(st.binary(max_size=200).map(lambda b: b.hex().encode()), st.text(min_size=1, max_size=30))
def test_a_standard_webhooks_verifier_accepts_the_signature_and_any_change_breaks_it(body, item_id):
    """The receiver's side is the standardwebhooks library itself, not our own code."""
    now = int(time.time())
    headers = signed_headers(KEYS, item_id, now, body)
    assert verified({"headers": headers, "body": body})
    assert not verified({"headers": headers, "body": body + b"x"})
    assert not verified({"headers": {**headers, ID_HEADER: item_id + "x"}, "body": body})
    assert not verified({"headers": headers, "body": body}, secret=new_secret())
    stale = signed_headers(KEYS, item_id, now - 301, body)  # replayed after 5 minutes
    assert not verified({"headers": stale, "body": body})


def test_two_secrets_while_rotating_sign_each_request_twice_and_either_verifies():
    old, new = new_secret(), new_secret()
    headers = signed_headers(parse_secrets(f"{old} {new}"), "inv-1", int(time.time()), b"{}")
    assert len(headers[SIGNATURE_HEADER].split(" ")) == 2
    assert all(s.startswith("v1,") for s in headers[SIGNATURE_HEADER].split(" "))
    for secret in (old, new):
        assert verified({"headers": headers, "body": b"{}"}, secret=secret)


def test_legacy_headers_are_sent_only_when_asked_and_follow_the_old_formula():
    body, stamp = b'{"a":1}', 1_700_000_000
    assert LEGACY_SIGNATURE_HEADER not in signed_headers(KEYS, "i", stamp, body)
    headers = signed_headers(KEYS, "i", stamp, body, legacy=True)
    expected = hmac.new(KEYS[0], b"1700000000." + body, hashlib.sha256).hexdigest()
    assert headers[LEGACY_SIGNATURE_HEADER] == "sha256=" + expected
    assert headers[LEGACY_TIMESTAMP_HEADER] == "1700000000"


def test_secrets_are_whsec_base64_or_an_older_plain_value():
    assert parse_secrets("whsec_" + base64.b64encode(b"key").decode()) == (b"key",)
    assert parse_secrets("plain, whsec_a2V5") == (b"plain", b"key")
    assert parse_secrets("") == ()
    with pytest.raises(ValueError, match="parcours new-secret"):
        parse_secrets("whsec_not*base64")


def test_backoff_doubles_up_to_the_cap():
    d = Destination("x", "http://h", backoff_seconds=0.5, max_backoff_seconds=3.0)
    assert [d.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_retry_waits_a_jittered_backoff_or_the_receivers_retry_after_up_to_a_cap():
    d = Destination("x", "http://h", backoff_seconds=1.0, max_backoff_seconds=8.0)
    waits = [d.retry_wait(3) for _ in range(200)]
    assert all(2.0 <= w <= 4.0 for w in waits) and len(set(waits)) > 100
    assert d.retry_wait(1, retry_after=30.0) == 30.0
    assert d.retry_wait(1, retry_after=7200.0) == d.max_retry_after_seconds
    assert 0.5 <= d.retry_wait(1, retry_after=0.0) <= 1.0


def test_retry_after_reads_seconds_and_http_dates():
    assert seconds_after("120") == 120.0
    now = 1_700_000_000.0
    assert seconds_after(formatdate(now + 90, usegmt=True), now=now) == pytest.approx(90.0)
    assert seconds_after(formatdate(now - 90, usegmt=True), now=now) == 0.0
    for unusable in (None, "", "soon", "-5"):
        assert seconds_after(unusable) is None


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
        "    timeout: 2s\n    max_attempts: 3\n    template: {email: '{customer_key}'}\n"
        "    legacy_headers: true\n    max_retry_after: 2m\n",
    )
    [d] = load_destinations(path, env={"HOOK_SECRET": "s3"})
    assert (d.legacy_headers, d.max_retry_after_seconds) == (True, 120.0)
    assert (d.name, d.url, d.secrets, d.timeout_seconds, d.max_attempts) == (
        "tool",
        "https://h/x",
        (b"s3",),
        2.0,
        3,
    )
    assert d.body(invitation(1)) == {"email": "c-1"}
    assert Destination("x", "http://h").body(invitation(1)) == invitation(1)
    # Without secret_env, PARCOURS_WEBHOOK_SECRET signs (without either: see below).
    plain = write(tmp_path, "destinations:\n  tool: {url: 'http://h'}\n")
    signed = load_destinations(plain, env={"PARCOURS_WEBHOOK_SECRET": "k"})[0]
    assert (signed.secrets, signed.deliver) == ((b"k",), ("invitations",))
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
    assert all(verified(r) for r in receiver.accepted())
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
        assert verified(r)
        assert orjson.loads(r["body"])["invitation_id"] == h[ID_HEADER] == h[IDEMPOTENCY_HEADER]


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


def test_a_429_with_retry_after_is_retried_no_sooner_than_asked(tmp_path, receiver):
    answered = []  # (time, status) of each answer

    def busy_once(handler, _status) -> None:
        status = 200 if answered else 429
        answered.append((time.monotonic(), status))
        handler.send_response(status)
        if status == 429:
            handler.send_header("Retry-After", "1")
        handler.end_headers()

    receiver.answer = busy_once
    assert asyncio.run(dispatch(tmp_path, destination(receiver.url), [invitation(1)])) == []
    [(first, busy), (second, ok)] = answered
    assert (busy, ok) == (429, 200)
    assert second - first >= 1.0  # the backoff alone would be 0.05 s at most


@pytest.mark.parametrize(("status", "attempts"), [(408, 3), (429, 3), (404, 1), (401, 1)])
def test_only_408_and_429_among_4xx_are_retried(tmp_path, receiver, status, attempts):
    receiver.status = status
    dead = asyncio.run(
        dispatch(tmp_path, destination(receiver.url, max_attempts=3), [invitation(1)])
    )
    assert [reason for *_, reason in dead] == [f"HTTP {status}: "]
    assert len(receiver.requests) == attempts


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
    assert (d.secrets, d.unsigned) == ((), True)
    bad = write(tmp_path, "destinations:\n  tool: {url: 'http://h', secret_env: HOOK}\n")
    with pytest.raises(DestinationsError, match=r"destinations/tool: HOOK: whsec_x.*new-secret"):
        load_destinations(bad, env={"HOOK": "whsec_x!y"})


def test_a_template_that_fails_on_a_real_item_is_dead_lettered_not_a_crash(tmp_path, receiver):
    dest = destination(receiver.url, template={"n": "{send_at_ms:d}"})
    [(item_id, _, reason)] = asyncio.run(
        dispatch(tmp_path, dest, [invitation(1, send_at_ms="not a number")])
    )
    assert item_id == "inv-0001" and reason.startswith("template failed: ValueError")
    assert receiver.requests == []
