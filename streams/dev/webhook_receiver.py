"""A local webhook receiver for the demo and for trying a destinations file: it checks
each request's Standard Webhooks signature with that project's own library, dedupes on
the webhook-id and keeps the bodies, by kind (the X-Parcours-Kind header: invitations
or follow_ups)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from streams.edge.destinations import ID_HEADER, INVITATIONS, KIND_HEADER


class WebhookReceiver:
    """Listens on 127.0.0.1 (a free port) in a thread; 401 for a bad signature."""

    def __init__(self, secret: str) -> None:
        self.verifier = Webhook(secret)  # a whsec_ secret, as a receiver is given it
        self.received: dict[tuple[str, str], dict] = {}  # (kind, webhook-id) -> body
        self.requests = 0
        self.rejected = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    receiver.verifier.verify(body, dict(self.headers), json_parse=False)
                    ok = True
                except WebhookVerificationError:
                    ok = False
                with receiver._lock:
                    receiver.requests += 1
                    if ok:
                        key = (
                            self.headers.get(KIND_HEADER, INVITATIONS),
                            self.headers.get(ID_HEADER, ""),
                        )
                        receiver.received.setdefault(key, orjson.loads(body))
                    else:
                        receiver.rejected += 1
                self.send_response(200 if ok else 401)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"  # any path is taken

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def delivered(self, kind: str | None = None) -> int:
        """Distinct items received, of one kind or of all."""
        with self._lock:
            return sum(1 for k, _ in self.received if kind is None or k == kind)
