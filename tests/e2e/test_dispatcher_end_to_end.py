"""Shared test helpers."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson

from streams.config.settings import SURVEY_INVITATIONS
from streams.dev.local_stack import DispatcherProcess, LocalBroker, wait_for
from streams.edge.destinations import IDEMPOTENCY_HEADER
from streams.edge.produce import produce
from tests.support.dispatcher import SECRET, Receiver, invitation, verified


def start_dispatcher(broker: LocalBroker, tmp_path: Path) -> DispatcherProcess:
    dispatcher = DispatcherProcess(
        broker.bootstrap,
        tmp_path / "destinations.yaml",
        tmp_path / "ledger.db",
        tmp_path / "dispatcher.log",
        PARCOURS_WEBHOOK_SECRET=SECRET,
    )
    dispatcher.start()
    return dispatcher


def test_end_to_end_every_invitation_lands_through_500s_and_a_kill(tmp_path):
    receiver = Receiver(delay=0.01)
    (tmp_path / "destinations.yaml").write_text(
        "destinations:\n"
        f"  tool:\n    url: {receiver.url}\n    secret_env: PARCOURS_WEBHOOK_SECRET\n"
        "    backoff: 0.1s\n    max_backoff: 0.5s\n    max_attempts: 50\n    rate_limit: 200\n"
        "    concurrency: 4\n"
    )
    items = [invitation(n) for n in range(300)]
    # As the worker publishes them: a message per batch; a restarted worker repeats some.
    messages = [(None, orjson.dumps({"invitations": items[i : i + 10]})) for i in range(0, 300, 10)]
    messages += [(None, orjson.dumps({"invitations": items[:10]}))]
    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        produce(broker.bootstrap, SURVEY_INVITATIONS, messages)
        receiver.fail_first = 60  # the survey tool is down at first
        first = start_dispatcher(broker, tmp_path)
        try:
            wait_for(lambda: len(receiver.accepted()) >= 80, 60, "80 deliveries")
            first.kill()  # SIGKILL mid-delivery: requests are in flight
            second = start_dispatcher(broker, tmp_path)
            try:
                wait_for(lambda: len(receiver.accepted()) >= 300, 120, "every delivery")
                time.sleep(1.0)  # anything more would be a duplicate
            finally:
                assert second.stop(30) == 0  # SIGTERM: a clean stop
        finally:
            first.kill()
            receiver.close()
    accepted = receiver.accepted()
    ids = Counter(r["headers"][IDEMPOTENCY_HEADER] for r in accepted)
    assert set(ids) == {item["invitation_id"] for item in items}
    # Only requests in flight at the SIGKILL can come twice (the destination answered,
    # the ledger was not written yet); they carry the same Idempotency-Key to dedupe on.
    assert sum(n - 1 for n in ids.values()) <= 4  # concurrency
    assert any(r["status"] == 500 for r in receiver.requests)
    assert all(verified(r) for r in accepted)
