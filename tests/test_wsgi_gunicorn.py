"""forkwell's WSGI server beside the real gunicorn: the same app, the same bytes in, the answers compared.

Each test serves one app under ``forkwell.serve_wsgi`` and under gunicorn
(the test extra installs it), each on a listening socket the test made
(gunicorn's ``--bind fd://N``), sends both the same bytes and compares what a
client can observe: the ``environ`` the app was given, the status, the
headers (less ``Date`` and ``Server``, and less the framing headers, which
are compared as framing: the body once de-chunked, and whether the
connection stays open), and how a malformed request is refused.  Responses
are read back with httptools' response parser, so a badly framed answer
from either server fails the test.

Where forkwell answers differently on purpose, the test pins forkwell's
answer next to gunicorn's and says why; docs/servers.md ("Beside gunicorn")
lists the same differences.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import httpx
import pytest
from wsgi_apps import GunicornServed, WSGIServed, raw_exchange

pytestmark = pytest.mark.timeout(90)

# Framing and per-server headers: compared as framing, or not at all.
UNCOMPARED = {"date", "server", "connection", "content-length", "transfer-encoding"}
# environ keys that name the process, the connection or the server program.
PER_SERVER = {"pid", "served", "input_class", "REMOTE_PORT", "SERVER_PORT", "SERVER_SOFTWARE"}


@dataclass
class Answer:
    """One response as a client reads it."""

    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False  # the message ended where its framing says

    @property
    def chunked(self) -> bool:
        return ("transfer-encoding", "chunked") in self.headers

    def compared(self) -> tuple[int, list[tuple[str, str]], bytes]:
        return self.status, sorted(h for h in self.headers if h[0] not in UNCOMPARED), self.body


class _Reader:
    """httptools' callbacks: one :class:`Answer` per message the parser finds."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.answers.append(Answer())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answers[-1].headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.answers[-1].status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        self.answers[-1].body += data

    def on_message_complete(self) -> None:
        self.answers[-1].complete = True


def parse(data: bytes, *, head: bool = False) -> list[Answer]:
    """The responses in ``data``, all that a connection received before the server closed it.

    ``head``: the answer to one HEAD, which has no body whatever its headers say.
    """
    reader = _Reader()
    reader.parser.feed_data(data[: data.index(b"\r\n\r\n") + 4] if head else data)
    last = reader.answers[-1]
    if head:
        last.complete = True
    elif not last.complete and not last.chunked and "content-length" not in dict(last.headers):
        last.complete = True  # close-delimited: it ends where the connection does
    return reader.answers


def exchange(port: int, data: bytes, *, head: bool = False) -> Answer:
    """One request on a fresh connection, which the server closes after one answer."""
    (answer,) = parse(raw_exchange(port, data), head=head)
    return answer


def read_answer(sock: socket.socket) -> Answer:
    """Read one whole response from a connection that stays open."""
    reader = _Reader()
    while not (reader.answers and reader.answers[-1].complete):
        data = sock.recv(65536)
        assert data, "the server closed the connection before the answer was complete"
        reader.parser.feed_data(data)
    return reader.answers[-1]


@contextmanager
def side_by_side(app: str, **forkwell_opts: object) -> Iterator[tuple[WSGIServed, GunicornServed]]:
    """``app`` under forkwell and under gunicorn's sync worker, both booted."""
    with WSGIServed(app, **forkwell_opts) as ours, GunicornServed(app) as theirs:
        ours.ready()
        theirs.ready()
        yield ours, theirs
        assert theirs.stop() == 0, theirs.text()
        assert ours.stop() == 0, ours.text()


# ---------------------------------------------------------------- environ

CLOSE = b"Connection: close\r\n"
ENVIRON_REQUESTS = {
    "percent-encoded path, query, repeated and underscored headers": (
        b"GET /environ/caf%C3%A9/x%2Fy?q=a+b&n=%20 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nX-A: 2\r\n"
        b"X_B: 3\r\nContent-Type: text/x\r\nX-Empty:\r\nX-Padded:   v   \r\n" + CLOSE + b"\r\n"
    ),
    "a body with a length": (
        b"POST /environ HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n" + CLOSE + b"\r\nabc"
    ),
    "a chunked body": (
        b"POST /environ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n" + CLOSE
        + b"\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "absolute form": b"GET http://example.com:81/environ/abs?x=1 HTTP/1.1\r\nHost: t\r\n" + CLOSE
    + b"\r\n",
    "HTTP/1.0 without Host": b"GET /environ HTTP/1.0\r\n\r\n",
    "double slashes": b"GET /environ//a//b HTTP/1.1\r\nHost: t\r\n" + CLOSE + b"\r\n",
    "Host with a port": b"GET /environ HTTP/1.1\r\nHost: example.com:8080\r\n" + CLOSE + b"\r\n",
}


def environ_from(port: int, request: bytes) -> dict[str, object]:
    answer = exchange(port, request)
    assert answer.status == 200, answer
    env: dict[str, object] = json.loads(answer.body)
    return {k: v for k, v in env.items() if k not in PER_SERVER}


def test_the_app_gets_the_environ_gunicorn_gives() -> None:
    with side_by_side("wsgi_apps:plain") as (ours, theirs):
        for what, request in ENVIRON_REQUESTS.items():
            mine, gunicorns = environ_from(ours.port, request), environ_from(theirs.port, request)
            # Ours only: the raw target under uWSGI's and Apache's name too.
            assert mine.pop("REQUEST_URI") == mine["RAW_URI"]
            # PEP 3333: true if another process may run the same app at once. A
            # forkwell worker says so with one worker too: during a HUP reload or a
            # max_requests recycle, the old and the new worker overlap.
            assert mine.pop("wsgi.multiprocess") is True
            assert gunicorns.pop("wsgi.multiprocess") is False  # gunicorn: workers > 1
            assert mine == gunicorns, what


def test_cookies_are_joined_as_rfc_6265_says_where_gunicorn_uses_commas() -> None:
    request = b"GET /environ HTTP/1.1\r\nHost: t\r\nCookie: a=1\r\nCookie: b=2\r\n" + CLOSE + b"\r\n"
    with side_by_side("wsgi_apps:plain") as (ours, theirs):
        # Two Cookie fields are one list joined by "; " (RFC 6265 5.4, RFC 9113
        # 8.2.3): joined by ",", a cookie parser reads one cookie a="1,b=2".
        assert environ_from(ours.port, request)["HTTP_COOKIE"] == "a=1; b=2"
        assert environ_from(theirs.port, request)["HTTP_COOKIE"] == "a=1,b=2"


# ---------------------------------------------------------------- responses

RESPONSES = {
    "a length from the app": "GET /hello HTTP/1.1",
    "a stream without a length": "GET /stream?n=3 HTTP/1.1",
    "a stream to HTTP/1.0": "GET /stream?n=3 HTTP/1.0",
    "write() then an iterable": "GET /write HTTP/1.1",
    "204": "GET /status?code=204 HTTP/1.1",
    "304": "GET /status?code=304 HTTP/1.1",
    "an unknown status code": "GET /status?code=299 HTTP/1.1",
    "the app's Connection: close": "GET /close HTTP/1.1",
    "OPTIONS *": "OPTIONS * HTTP/1.1",
    "a body the app does not read": "POST /noread HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde",
}


def _request(line: str) -> bytes:
    head, _, body = line.partition("\r\n\r\n")
    return f"{head}\r\nHost: t\r\nConnection: close\r\n\r\n{body}".encode()


@pytest.mark.parametrize("line", RESPONSES.values(), ids=RESPONSES.keys())
def test_responses_are_gunicorns(line: str) -> None:
    with side_by_side("wsgi_apps:plain") as (ours, theirs):
        mine, gunicorns = exchange(ours.port, _request(line)), exchange(theirs.port, _request(line))
        assert mine.complete and gunicorns.complete
        if "noread" in line:  # the body names the worker that answered
            assert json.loads(mine.body)["pid"] in ours.worker_pids()
            mine.body = gunicorns.body = b""
        assert mine.compared() == gunicorns.compared()


def test_head_file_and_chunked_framing_match_gunicorns(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(200_000))
    with side_by_side("wsgi_apps:plain") as (ours, theirs):
        for port in ours.port, theirs.port:
            head = exchange(port, _request("HEAD /hello HTTP/1.1"), head=True)
            assert (head.status, dict(head.headers)["content-length"], head.body) == (200, "12", b"")
            stream = exchange(port, _request("GET /stream?n=2 HTTP/1.1"))
            assert stream.chunked and stream.body == b"part 0\npart 1\n"
            old = exchange(port, _request("GET /stream?n=2 HTTP/1.0"))
            assert not old.chunked and old.body == b"part 0\npart 1\n"  # close-delimited
            file = exchange(port, _request(f"GET /file?path={blob} HTTP/1.1"))
            assert file.body == blob.read_bytes()
            assert dict(file.headers)["content-length"] == "200000"


def test_app_errors_are_500s_and_a_cut_connection_as_under_gunicorn() -> None:
    with side_by_side("wsgi_apps:plain") as (ours, theirs):
        for port in ours.port, theirs.port:
            boom = exchange(port, _request("GET /boom HTTP/1.1"))
            assert boom.status == 500 and b"secret detail" not in boom.body
            # exc_info after the head is out: the response is cut, never completed.
            late = exchange(port, _request("GET /exc-after HTTP/1.1"))
            assert (late.status, late.body, late.complete) == (200, b"first part\n", False)
        for srv in ours, theirs:  # the traceback is in each error log, once
            srv.wait_for(lambda lines: "RuntimeError: boom: secret detail" in lines, 10, "it")
            assert srv.count("RuntimeError: boom: secret detail") == 1, srv.text()


def test_exc_info_replaces_the_headers_where_gunicorn_keeps_both_sets() -> None:
    with side_by_side("wsgi_apps:plain") as (ours, theirs):
        mine = exchange(ours.port, _request("GET /exc-before HTTP/1.1"))
        gunicorns = exchange(theirs.port, _request("GET /exc-before HTTP/1.1"))
        assert (mine.status, mine.body) == (gunicorns.status, gunicorns.body) == (503, b"replaced\n")
        # PEP 3333: start_response with exc_info *replaces* the pending status and
        # headers; gunicorn appends the new headers to the first call's.
        assert [h for h in mine.headers if h[0] == "content-type"] == [("content-type", "text/plain")]
        assert [h for h in gunicorns.headers if h[0] == "content-type"] == [
            ("content-type", "text/plain")] * 2  # fmt: skip


# ---------------------------------------------------------------- refusals

REFUSED_BY_BOTH = {
    "Content-Length and Transfer-Encoding": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\n"
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    "two Content-Lengths": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
        b"Content-Length: 3\r\n\r\nabc"),
    "a Content-Length list": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1,1\r\n\r\na"),
    "a signed Content-Length": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\n"
        b"abc"),
    "a negative Content-Length": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n"),
    "chunked twice": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "chunked, chunked": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    "an unknown transfer coding": (501, b"POST /echo HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    "Transfer-Encoding in HTTP/1.0": (400, b"POST /echo HTTP/1.0\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    "a space before the colon": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    "a bad chunk size": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n"),
    "a 0x chunk size": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0x3\r\nabc\r\n0\r\n\r\n"),
    "chunk data longer than its size": (400, b"POST /echo HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"),
    "obs-fold": (400, b"GET /x HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n b\r\n\r\n"),
    "a NUL in a value": (400, b"GET /x HTTP/1.1\r\nHost: t\r\nX-Nul: a\x00b\r\n\r\n"),
    "a space in a name": (400, b"GET /x HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n"),
    "a space before the first field": (400, b"GET /x HTTP/1.1\r\n Host: t\r\n\r\n"),
    "bare LF": (400, b"GET /x HTTP/1.1\nHost: t\n\n"),
    "a control character in the method": (400, b"G\x01T /x HTTP/1.1\r\nHost: t\r\n\r\n"),
    "a space in the target": (400, b"GET /x y HTTP/1.1\r\nHost: t\r\n\r\n"),
    "HTTP/9.9": (400, b"GET /x HTTP/9.9\r\nHost: t\r\n\r\n"),
    "two Hosts": (400, b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    "a request line over limit_request_line": (414, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n"
        b"Host: t\r\n\r\n"),
    "more fields than limit_request_fields": (431, b"GET /x HTTP/1.1\r\n" + b"".join(
        b"X-%d: v\r\n" % i for i in range(120)) + b"Host: t\r\n\r\n"),
    "a field over limit_request_field_size": (431, b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: "
        + b"v" * 9000 + b"\r\n\r\n"),
}  # fmt: skip
# After each, a request that must never reach the app: a refused request ends the connection.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"


def test_malformed_requests_are_refused_as_gunicorn_refuses_them() -> None:
    with side_by_side("wsgi_apps:plain") as (ours, theirs):
        for what, (status, request) in REFUSED_BY_BOTH.items():
            for port in ours.port, theirs.port:
                data = raw_exchange(port, request + SMUGGLED)
                answers = parse(data)
                assert [a.status for a in answers] == [status], (what, port, data[:200])
                assert b"/smuggled" not in data
        assert ours.count("smuggled") == 0 == theirs.count("smuggled")


STRICTER = {
    # llhttp's chunk parser wants CRLF; gunicorn's waits for one, holding its worker.
    "bare LF in a chunked body": (400, None, b"POST /echo HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n"),
    # A chunk size past 2**64: gunicorn waits for that much.
    "a chunk size that overflows": (400, None, b"POST /echo HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    # RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
    "HTTP/1.1 without Host": (400, 200, b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"),
    # RFC 9112 6.1: chunked must be the last coding; gunicorn hands the app an
    # empty body and would read the gzip bytes as the next request.
    "a coding before chunked": (501, 200, b"POST /echo HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"),
}  # fmt: skip


@pytest.mark.parametrize("what", STRICTER)
def test_where_forkwell_refuses_what_gunicorn_lets_through(what: str) -> None:
    ours_status, gunicorns, request = STRICTER[what]
    with side_by_side("wsgi_apps:plain") as (ours, theirs):
        assert exchange(ours.port, request).status == ours_status
        if gunicorns is not None:
            assert exchange(theirs.port, request).status == gunicorns
        else:
            # gunicorn answers nothing: the connection is still open, unanswered,
            # after the request forkwell refused at once.
            with socket.create_connection(("127.0.0.1", theirs.port), timeout=1.0) as sock:
                sock.sendall(request)
                with pytest.raises(TimeoutError):
                    sock.recv(1)


# ---------------------------------------------------------------- connections


PIPELINED = b"".join(
    f"GET /p{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(3)
) + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def test_pipelining_and_keep_alive_as_gthread_has_them() -> None:
    # gunicorn's sync worker closes every connection; its gthread worker keeps
    # them, as forkwell's worker does.
    with WSGIServed("wsgi_apps:plain") as ours, GunicornServed(
        "wsgi_apps:plain", "--keep-alive", "5", worker="gthread") as theirs:  # fmt: skip
        ours.ready()
        theirs.ready()
        replies = [parse(raw_exchange(port, PIPELINED)) for port in (ours.port, theirs.port)]
        for answers in replies:
            assert [(a.status, a.body[:8]) for a in answers] == [
                (200, b"hello /p"), (200, b"hello /p"), (200, b"hello /p"), (200, b'{"length')]
            assert [dict(a.headers).get("connection") for a in answers][-1] == "close"
        assert [a.compared() for a in replies[0][:3]] == [a.compared() for a in replies[1][:3]]
        # Keep-alive: one connection, two requests, the server's answer leaves it open.
        for port in ours.port, theirs.port:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                for path in "/one", "/two":
                    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                    answer = read_answer(sock)
                    assert answer.body == f"hello {path}".encode()
                    assert dict(answer.headers).get("connection", "keep-alive") == "keep-alive"
        assert theirs.stop() == 0 and ours.stop() == 0


def test_expect_100_continue_as_gunicorn_answers_it() -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n" + CLOSE
    with side_by_side("wsgi_apps:plain") as (ours, theirs):
        for port in ours.port, theirs.port:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(head + b"\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
                sock.sendall(b"data")
                assert json.loads(read_answer(sock).body)["length"] == 4


# ---------------------------------------------------------------- Flask


def flask_requests(c: httpx.Client, blob: Path) -> list[httpx.Response]:
    chunk = b"\x00\x01" * 300_000
    return [
        c.get("/"),
        c.get("/users/42", params=[("q", "a b"), ("tag", "x"), ("tag", "y")]),
        c.get("/users/nope"),
        c.put("/"),
        c.post("/form", data={"name": "Ada", "lang": "fr"}),
        c.post("/json", json={"n": [1, 2]}),
        c.post("/json", content=b"{not json", headers={"Content-Type": "application/json"}),
        c.post("/upload", content=iter([chunk] * 4)),
        c.post("/upload", files={"f": ("a.bin", chunk)}),
        c.get("/stream", params={"n": 50}),
        c.get("/file", params={"path": str(blob)}),
        c.get("/cookie/set"),
        c.get("/cookie/get", headers={"Cookie": "flavour=oatmeal; size=big"}),
        c.get("/boom"),
        c.head("/"),
    ]


def flask_headers(r: httpx.Response) -> list[tuple[str, str]]:
    # Allow comes from a set of methods: its order is each process's hash seed.
    return sorted((k, ", ".join(sorted(v.split(", "))) if k == "allow" else v)
                  for k, v in r.headers.items() if k not in UNCOMPARED)


def test_a_flask_app_answers_as_under_gunicorn(tmp_path: Path) -> None:
    blob = tmp_path / "download.bin"
    blob.write_bytes(os.urandom(1 << 20))
    answers = []
    with side_by_side("wsgi_flask_app:create_app()") as servers:
        for srv in servers:
            with httpx.Client(base_url=srv.url, timeout=20) as c:
                answers.append([(r.status_code, flask_headers(r), hashlib.sha256(r.content).digest())
                                for r in flask_requests(c, blob)])
    mine, gunicorns = answers
    assert [a[0] for a in mine] == [200, 200, 404, 405, 200, 200, 400, 200, 200, 200, 200, 200,
                                    200, 500, 200]
    for request, (a, b) in enumerate(zip(mine, gunicorns, strict=True)):
        if a[0] == 500:  # each server's own error page
            assert a[0] == b[0]
            continue
        assert a == b, f"request {request}"
