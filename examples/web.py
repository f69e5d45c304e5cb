"""A tiny web server for the demo: counts its visitors."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

visits = 0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        global visits
        if self.path == "/health":  # forkwell's readiness and liveness probes
            self._answer(b"ok\n")
            return
        visits += 1
        self._answer(f"{GREETING} (visit {visits})\n".encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        if self.path != "/health":
            print(f"{self.address_string()} {format % args}", flush=True)


GREETING = os.environ.get("GREETING", "hello")
port = int(os.environ.get("PORT", "8765"))
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(f"serving on http://127.0.0.1:{port}/", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
