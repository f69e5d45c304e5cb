"""A tiny web server for the demo: counts its visitors."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

visits = 0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        global visits
        visits += 1
        body = f"hello from forkwell's demo web server (visit {visits})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)


port = int(os.environ.get("PORT", "8765"))
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(f"serving on http://127.0.0.1:{port}/", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
