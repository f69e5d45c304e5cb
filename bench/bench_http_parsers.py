"""HTTP/1.1 request parsers: httptools (llhttp, C) vs h11 (pure Python), on the same requests.

Why forkwell's WSGI server parses with httptools: this measures what each
costs per request for the work a server needs from it (the request line and
headers as bytes, the body, message boundaries), on three requests: a
minimal one (wrk's), a browser-sized one, and a 4 KB chunked upload.  Each
parser is driven the way a server drives it: one parser per connection fed
the bytes of keep-alive requests as they arrive.

    python bench/bench_http_parsers.py [--rounds 5] [--count 20000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version

import h11
import httptools

MINIMAL = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
BROWSER = (
    b"GET /articles/2024/11/some-title?page=2&sort=new HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: https://example.com/articles/2024/11/\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: sessionid=0123456789abcdef0123456789abcdef; csrftoken=abcdefabcdefabcdef\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"Sec-Fetch-Dest: document\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Priority: u=0, i\r\n\r\n"
)
CHUNKED = (
    b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/octet-stream\r\n\r\n"
    + b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(4))
    + b"0\r\n\r\n"
)


class _Sink:
    """httptools' callbacks, doing what a server does with them (keep the pieces)."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.done = 0

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done += 1
        self.headers = []
        self.body = []


def run_httptools(request: bytes, count: int) -> float:
    sink = _Sink()
    parser = httptools.HttpRequestParser(sink)
    start = time.perf_counter()
    for _ in range(count):
        parser.feed_data(request)
        parser.get_method()
        parser.should_keep_alive()
    elapsed = time.perf_counter() - start
    assert sink.done == count
    return elapsed


def run_h11(request: bytes, count: int) -> float:
    conn = h11.Connection(h11.SERVER)
    done = 0
    response = h11.Response(status_code=200, headers=[("content-length", "0")])
    start = time.perf_counter()
    for _ in range(count):
        conn.receive_data(request)
        while True:
            event = conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                done += 1
                break
            if event is h11.NEED_DATA:
                raise AssertionError("incomplete request")
        # h11 only parses the next request once this one is answered.
        conn.send(response)
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()
    elapsed = time.perf_counter() - start
    assert done == count
    return elapsed


PARSERS: dict[str, Callable[[bytes, int], float]] = {
    f"httptools {version('httptools')}": run_httptools,
    f"h11 {version('h11')}": run_h11,
}
REQUESTS = {"minimal (wrk)": MINIMAL, "browser, 13 headers": BROWSER, "chunked 4 KB": CHUNKED}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=20000)
    args = ap.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for rname, request in REQUESTS.items():
            for pname, run in PARSERS.items():
                per = run(request, args.count) / args.count * 1e6
                times.setdefault((rname, pname), []).append(per)
    print(f"Python {platform.python_version()}, {args.rounds} rounds x {args.count} requests")
    print()
    print("| request | parser | us/request | vs httptools |")
    print("|---|---|---:|---:|")
    for rname in REQUESTS:
        base = None
        for pname in PARSERS:
            med = statistics.median(times[(rname, pname)])
            base = base or med
            print(f"| {rname} | {pname} | {med:.2f} | {med / base:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
