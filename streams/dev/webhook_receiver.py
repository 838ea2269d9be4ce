"""A local webhook receiver for the demo and for trying a destinations file: it checks
each request's signature, dedupes on the Idempotency-Key and keeps the bodies, by kind
(the X-Parcours-Kind header: invitations or follow_ups)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

import orjson

from streams.edge.destinations import (
    IDEMPOTENCY_HEADER,
    INVITATIONS,
    KIND_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)


class WebhookReceiver:
    """Listens on 127.0.0.1 (a free port) in a thread; 401 for a bad signature."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.received: dict[tuple[str, str], dict] = {}  # (kind, idempotency key) -> body
        self.requests = 0
        self.rejected = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = verify(
                    receiver.secret,
                    self.headers.get(TIMESTAMP_HEADER, ""),
                    body,
                    self.headers.get(SIGNATURE_HEADER, ""),
                )
                with receiver._lock:
                    receiver.requests += 1
                    if ok:
                        key = (
                            self.headers.get(KIND_HEADER, INVITATIONS),
                            self.headers.get(IDEMPOTENCY_HEADER, ""),
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
