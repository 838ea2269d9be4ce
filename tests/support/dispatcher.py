"""A local webhook receiver and invitations for dispatcher tests."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from streams.edge.destinations import parse_secrets

# A Standard Webhooks secret as a receiver holds it, and the key the dispatcher signs with.
SECRET = "whsec_dGVzdC1zaWduaW5nLWtleS1vZi10aGUtZGlzcGF0Y2hlcg=="
KEYS = parse_secrets(SECRET)


def verified(request: dict, secret: str = SECRET) -> bool:
    """Whether the receiver's side, the standardwebhooks library, accepts the request."""
    try:
        Webhook(secret).verify(request["body"], request["headers"], json_parse=False)
    except WebhookVerificationError:
        return False
    return True


class Receiver:
    """A webhook receiver: records each request; answers 500 to the first `fail_first`,
    then `status`, or lets `answer(handler, status)` write the whole answer."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[dict] = []
        self.fail_first = 0
        self.status = 200
        self.delay = delay
        self.answer = None  # a callable(handler, status) writing a custom answer
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay)
                with receiver.lock:
                    failing = len(receiver.requests) < receiver.fail_first
                    status = 500 if failing else receiver.status
                    receiver.requests.append(
                        {"headers": dict(self.headers), "body": body, "status": status}
                    )
                if receiver.answer is not None:
                    receiver.answer(self, status)
                    return
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["status"] == 200]

    def close(self) -> None:
        self.server.shutdown()


def invitation(n: int, **fields) -> dict:
    return {
        "invitation_id": f"inv-{n:04d}",
        "rule": "ces_after_support_call",
        "metric": "ces",
        "customer_key": f"c-{n}",
        "send_at_ms": 1_700_000_000_000 + n,
        **fields,
    }
