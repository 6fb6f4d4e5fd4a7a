"""A loopback-only webhook receiver for tests: records every POST (path, exact bytes, parsed JSON, headers)."""

from __future__ import annotations

import http.server
import json
import threading


class Receiver:
    """Listens on 127.0.0.1 (a free port) and answers the given statuses in turn (the last one from then on)."""

    def __init__(self, statuses: tuple[int, ...] = (200,)) -> None:
        self.statuses = list(statuses)
        self.calls: list[dict] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.end_headers()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                call = {
                    "path": self.path,
                    "raw": raw,
                    "body": body,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "status": status,
                }
                with receiver.arrived:
                    receiver.calls.append(call)
                    receiver.arrived.notify_all()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int = 1, timeout: float = 30.0) -> list[dict]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.calls) >= n, timeout), self.calls
        return self.calls

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
