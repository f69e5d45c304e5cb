"""forkwell.serve_wsgi: PEP 3333 and HTTP/1.1 over real sockets, a real client (httpx), real workers.

Every server is a subprocess (``wsgi_apps.WSGIServed``) serving
``wsgi_apps:plain`` or, under PEP 3333's own checker, ``wsgi_apps:validated``
(``wsgiref.validate.validator``: any misuse of environ, start_response or the
iterable by forkwell raises inside the app and shows as a 500 and a
traceback in the error log, which the tests look for).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from helpers import wait_until
from wsgi_apps import WSGIServed, raw_exchange

pytestmark = pytest.mark.timeout(60)

GET = b"GET %b HTTP/1.1\r\nHost: t\r\n\r\n"


def client(srv: WSGIServed, **kw: object) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=10, **kw)  # type: ignore[arg-type]


def responses(data: bytes) -> list[bytes]:
    """Status lines of the responses in ``data``, in order (a body may run into the next)."""
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", data)


def test_environ_has_every_key_pep_3333_requires() -> None:
    with WSGIServed("wsgi_apps:validated", python_flags=("-W", "error")) as srv, client(srv) as c:
        srv.ready()
        r = c.get("/environ/caf%C3%A9/x%2Fy", params={"q": "a b", "n": "1"},
                  headers={"X-Custom": "v1", "X_Sneaky": "dropped", "Content-Type": "text/x"})
        assert r.status_code == 200, srv.text()
        env = r.json()
        assert env["REQUEST_METHOD"] == "GET"
        assert env["SCRIPT_NAME"] == ""
        # Percent-decoded, then one character per byte (latin-1), as the PEP says.
        assert env["PATH_INFO"] == "/environ/caf\u00c3\u00a9/x/y"
        assert env["RAW_URI"] == "/environ/caf%C3%A9/x%2Fy?q=a+b&n=1"
        assert env["QUERY_STRING"] == "q=a+b&n=1"
        assert env["CONTENT_TYPE"] == "text/x"
        assert "HTTP_CONTENT_TYPE" not in env
        assert env["SERVER_NAME"] == "127.0.0.1"
        assert env["SERVER_PORT"] == str(srv.port)
        assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert env["HTTP_HOST"] == f"127.0.0.1:{srv.port}"
        assert env["HTTP_X_CUSTOM"] == "v1"
        assert "HTTP_X_SNEAKY" not in env  # an underscore would alias X-Sneaky
        assert env["wsgi.version"] == [1, 0]
        assert env["wsgi.url_scheme"] == "http"
        assert env["wsgi.multithread"] is False
        assert env["wsgi.multiprocess"] is True
        assert env["wsgi.run_once"] is False
        assert env["wsgi.input_terminated"] is True
        r = c.post("/environ", content=b"abc", headers={"Content-Type": "text/plain"})
        assert r.json()["CONTENT_LENGTH"] == "3"
    assert "Error" not in srv.text(), srv.text()


def test_validator_passes_every_kind_of_response(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(300_000))
    with WSGIServed("wsgi_apps:validated", python_flags=("-W", "error")) as srv, client(srv) as c:
        srv.ready()
        assert c.get("/hello").text == "hello /hello"
        assert c.head("/hello").headers["content-length"] == "12"
        assert c.post("/echo", content=b"x" * 100_000).json()["length"] == 100_000
        assert c.post("/lines", content=b"one\ntwo\nthree").json() == ["one\n", "two\n", "three"]
        assert c.get("/stream", params={"n": 4}).text == "part 0\npart 1\npart 2\npart 3\n"
        assert c.get("/file", params={"path": str(blob)}).content == blob.read_bytes()
        assert c.get("/write").text == "written, then returned\n"
        assert c.get("/status", params={"code": 204}).status_code == 204
        assert c.get("/exc-before").status_code == 503
    assert "AssertionError" not in srv.text() and "Warning" not in srv.text(), srv.text()


def test_keep_alive_one_connection_one_worker_and_pipelining() -> None:
    with WSGIServed("wsgi_apps:plain", workers=2) as srv, client(srv) as c:
        srv.ready()
        seen = {(e["REMOTE_PORT"], e["pid"]) for e in (c.get("/environ").json() for _ in range(5))}
        assert len(seen) == 1  # the same connection, served by the worker that accepted it
        # Three requests in one write: three answers, in order, on one connection.
        data = raw_exchange(srv.port, GET % b"/a" + GET % b"/bb" + (
            b"GET /ccc HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
        assert responses(data) == [b"HTTP/1.1 200 OK"] * 3
        assert data.index(b"hello /a") < data.index(b"hello /bb") < data.index(b"hello /ccc")
        assert data.count(b"Connection: close") == 1


def test_idle_keep_alive_connections_do_not_hold_the_worker() -> None:
    with WSGIServed("wsgi_apps:plain", workers=1, keep_alive=30) as srv:
        srv.ready()
        idle = [client(srv) for _ in range(3)]
        try:
            for c in idle:
                assert c.get("/a").status_code == 200  # each keeps its connection open
            with client(srv) as other:  # one worker, three idle clients: served all the same
                assert other.get("/b").text == "hello /b"
            assert all(c.get("/c").status_code == 200 for c in idle)
        finally:
            for c in idle:
                c.close()


def test_chunked_upload_of_10_mb_and_a_streamed_response() -> None:
    chunk = os.urandom(1 << 20)
    with WSGIServed("wsgi_apps:plain") as srv, client(srv) as c:
        srv.ready()
        r = c.post("/echo", content=iter([chunk] * 10))  # a generator: chunked on the wire
        assert r.status_code == 200
        assert r.json()["length"] == 10 << 20
        assert r.json()["sha256"] == hashlib.sha256(chunk * 10).hexdigest()
        with c.stream("GET", "/stream", params={"n": 5}) as r:
            assert r.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in r.headers
            assert b"".join(r.iter_bytes()) == b"".join(b"part %d\n" % i for i in range(5))
        # HTTP/1.0 has no chunks: the end of the body is the end of the connection.
        data = raw_exchange(srv.port, b"GET /stream HTTP/1.0\r\n\r\n")
        assert b"Transfer-Encoding" not in data and b"Connection: close" in data
        assert data.endswith(b"part 2\n")


def test_expect_100_continue() -> None:
    with WSGIServed("wsgi_apps:plain") as srv:
        srv.ready()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # only then the body
            s.sendall(b"hello")
            head = s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 OK") and b'"length": 5' in head
        # An app that never reads: no 100, the answer, and the connection closes
        # (the client may or may not send the body now).
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /noread HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in data
            assert b"100 Continue" not in data


def test_head_sends_the_length_of_get_and_no_body() -> None:
    with WSGIServed("wsgi_apps:plain") as srv:
        srv.ready()
        data = raw_exchange(srv.port, b"HEAD /abc HTTP/1.1\r\nHost: t\r\n\r\n" + GET % b"/abc"
                            + b"HEAD /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        first, second, third = data.split(b"HTTP/1.1 ")[1:]
        assert b"Content-Length: 10" in first and first.endswith(b"\r\n\r\n")  # no body
        assert second.endswith(b"hello /abc")
        assert b"part" not in third and b"Transfer-Encoding" not in third


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n", b"Content-Length"),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n"
         b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n", b"Duplicate Content-Length"),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"4x\r\nabcd\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n", b"chunk size"),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
         b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n", b"Transfer-Encoding"),
        (b"GET /a HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n", b"whitespace"),
        (b"GET /a HTTP/1.1\nHost: t\n\n", b"CRLF"),
        (b"GET /a HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", b"Host"),
    ],
    ids=["cl-and-te", "duplicate-cl", "bad-chunk-size", "te-not-chunked", "obs-fold", "bare-lf",
         "two-hosts"],
)
def test_request_smuggling_is_refused_and_the_connection_closed(
    request_bytes: bytes, reason: bytes
) -> None:
    with WSGIServed("wsgi_apps:plain", access_log="-") as srv:
        srv.ready()
        data = raw_exchange(srv.port, request_bytes)  # returns: the server closed the connection
        assert responses(data) == [b"HTTP/1.1 400 Bad Request"], data
        assert reason.lower() in data.lower()
        assert srv.stop() == 0
        assert srv.proc.stdout is not None
        assert srv.proc.stdout.read() == b""  # the app saw nothing, /smuggled least of all


def test_limits_with_gunicorns_names() -> None:
    opts = {"limit_request_line": 100, "limit_request_fields": 5, "limit_request_field_size": 50}
    with WSGIServed("wsgi_apps:plain", **opts) as srv:
        srv.ready()
        assert responses(raw_exchange(srv.port, GET % (b"/" + b"a" * 200))) == [
            b"HTTP/1.1 414 Request-URI Too Long"]
        many = b"".join(b"X-%d: v\r\n" % i for i in range(6))
        assert responses(raw_exchange(srv.port, b"GET / HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n"))[
            0].startswith(b"HTTP/1.1 431")
        assert responses(raw_exchange(
            srv.port, b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 60 + b"\r\n\r\n"))[
            0].startswith(b"HTTP/1.1 431")
        fine = b"GET /fine HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        assert responses(raw_exchange(srv.port, fine)) == [b"HTTP/1.1 200 OK"]  # within limits
    with pytest.raises(ValueError, match="limit_request_line"):
        import forkwell

        forkwell.serve_wsgi("wsgi_apps:plain", "127.0.0.1:0", limit_request_line=9000)


def test_app_errors_are_500s_with_the_traceback_in_the_log_only() -> None:
    with WSGIServed("wsgi_apps:plain") as srv, client(srv) as c:
        srv.ready()
        pid = c.get("/environ").json()["pid"]
        r = c.get("/boom")
        assert r.status_code == 500
        assert "secret" not in r.text and "Traceback" not in r.text
        srv.wait_for(lambda lines: any("boom: secret detail" in x for x in lines))
        assert srv.count("Traceback") == 1
        assert c.get("/environ").json()["pid"] == pid  # the worker survived
        # Changing its mind before the head is out replaces the answer (exc_info) ...
        assert c.get("/exc-before").status_code == 503
        # ... after, start_response re-raises: the response is cut, the connection closed.
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/exc-after")
        assert c.get("/environ").json()["pid"] == pid


def test_a_client_that_leaves_mid_response_closes_the_iterable(tmp_path: Path) -> None:
    mark = tmp_path / "closed"
    with WSGIServed("wsgi_apps:plain") as srv:
        srv.ready()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(GET % f"/forever?mark={mark}".encode())
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
        wait_until(mark.exists, 10, "the app's iterable to be closed")
        with client(srv) as c:
            assert c.get("/a").status_code == 200


def test_file_wrapper_goes_out_by_sendfile(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(5 << 20))
    with WSGIServed("wsgi_apps:plain") as srv, client(srv) as c:
        srv.ready()
        (worker,) = srv.worker_pids()
        before = _syscr(worker)
        r = c.get("/file", params={"path": str(blob)})
        assert r.content == blob.read_bytes()
        assert r.headers["content-length"] == str(5 << 20)
        # sendfile moves the bytes in the kernel: the worker did not read() them.
        assert _syscr(worker) - before < 100


def _syscr(pid: int) -> int:
    """read()-family system calls made by ``pid`` so far."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError("no syscr")


def test_access_log_in_gunicorns_format(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    fmt = '%(h)s "%(r)s" %(s)s %(b)s %(m)s %(U)s %(q)s %({x-req}i)s %({content-type}o)s %(p)s'
    with WSGIServed("wsgi_apps:plain", access_log=str(log)) as srv:
        srv.ready()
        with client(srv) as c:  # closed before the stop: an idle connection would wait keep_alive
            c.get("/hello", params={"a": "1"}, headers={"User-Agent": "ua/1", "Referer": "http://r/"})
            c.get("/status", params={"code": 204})
        assert srv.stop() == 0
    first, second = log.read_text().splitlines()
    assert first.startswith('127.0.0.1 - - [')
    assert first.endswith('] "GET /hello?a=1 HTTP/1.1" 200 12 "http://r/" "ua/1"')
    assert '"GET /status?code=204 HTTP/1.1" 204 - ' in second
    with WSGIServed("wsgi_apps:plain", access_log=str(log), access_log_format=fmt) as srv:
        srv.ready()
        with client(srv) as c:
            c.get("/hello", params={"a": "1"}, headers={"X-Req": "abc"})
        assert srv.stop() == 0
    line = log.read_text().splitlines()[-1]
    assert line.startswith('127.0.0.1 "GET /hello?a=1 HTTP/1.1" 200 12 GET /hello a=1 abc text/plain <')


def test_forwarded_headers_only_from_trusted_proxies() -> None:
    xff = {"X-Forwarded-For": "203.0.113.9, 127.0.0.1", "X-Forwarded-Proto": "https"}
    fwd = {"Forwarded": 'for="[2001:db8::7]:4711";proto=https'}
    with WSGIServed("wsgi_apps:plain") as srv, client(srv) as c:  # default: 127.0.0.1,::1
        srv.ready()
        env = c.get("/environ", headers=xff).json()
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.9", "https")
        env = c.get("/environ", headers=fwd).json()
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("2001:db8::7", "https")
    with WSGIServed("wsgi_apps:plain", forwarded_allow_ips="10.0.0.0/8") as srv, client(srv) as c:
        srv.ready()
        env = c.get("/environ", headers=xff).json()
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")


def test_a_slow_head_gets_408_and_holds_no_worker() -> None:
    with WSGIServed("wsgi_apps:plain", workers=1, timeout=1) as srv:
        srv.ready()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as slow:
            slow.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n")  # ... and the rest never comes
            with client(srv) as c:  # the one worker serves others meanwhile
                assert c.get("/other").text == "hello /other"
            data = slow.recv(65536)  # the deadline: timeout (1 s) after its first byte
            assert data.startswith(b"HTTP/1.1 408")


def test_a_worker_stuck_in_a_request_is_replaced_after_timeout() -> None:
    with WSGIServed("wsgi_apps:plain", workers=1, timeout=1) as srv, client(srv) as c:
        srv.ready()
        (stuck,) = srv.worker_pids()
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/hang")  # the master kills the worker: the connection ends unanswered
        srv.wait_for(lambda lines: any(f"worker {stuck} silent" in x for x in lines))
        srv.ready(2)
        assert c.get("/environ").json()["pid"] != stuck


def test_a_long_response_that_progresses_is_not_a_stuck_worker() -> None:
    # 8 parts 0.25 s apart: twice the timeout, but the worker beats at every part.
    with WSGIServed("wsgi_apps:plain", workers=1, timeout=1) as srv, client(srv) as c:
        srv.ready()
        (worker,) = srv.worker_pids()
        r = c.get("/stream", params={"n": 8, "gap": 0.25})
        assert r.text.count("part") == 8
        assert srv.worker_pids() == [worker] and srv.count("silent") == 0


def test_max_requests_recycles_without_a_failed_request() -> None:
    with WSGIServed("wsgi_apps:plain", workers=1, max_requests=3) as srv, client(srv) as c:
        srv.ready()
        seen = []
        for _ in range(7):  # keep-alive: the 3rd answer on a connection says close
            r = c.get("/environ")
            assert r.status_code == 200
            seen.append(r.json()["pid"])
        assert len(set(seen)) == 3 and seen[:3] == [seen[0]] * 3
        assert srv.count("retired after 3") >= 2


def test_sigterm_lets_the_request_in_flight_finish() -> None:
    with WSGIServed("wsgi_apps:plain", workers=1) as srv:
        srv.ready()
        with client(srv) as c, c.stream("GET", "/stream", params={"n": 6, "gap": 0.1}) as r:
            it = r.iter_lines()
            assert next(it) == "part 0"
            os.kill(srv.pid, signal.SIGTERM)
            assert list(it) == [f"part {i}" for i in range(1, 6)]
        assert srv.stop() == 0


VERSION_APP = """
VERSION = {version!r}
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [VERSION.encode()]
"""


@pytest.mark.parametrize("preload", [False, True], ids=["per-worker-import", "preload"])
def test_hup_reloads_the_code_without_a_failed_request(tmp_path: Path, preload: bool) -> None:
    app = tmp_path / "versioned.py"
    app.write_text(VERSION_APP.format(version="v1"))
    with WSGIServed("versioned:app", cwd=tmp_path, workers=2, preload=preload) as srv:
        srv.ready()
        failures: list[str] = []
        answers: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            with client(srv) as c:
                while not stop.is_set():
                    try:
                        r = c.get("/")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    (answers if r.status_code == 200 else failures).append(r.text)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: "v1" in answers, 10, "v1 answers")
            app.write_text(VERSION_APP.format(version="v2"))
            os.kill(srv.pid, signal.SIGHUP)
            wait_until(lambda: answers[-3:] == ["v2"] * 3, 20, "v2 answers")
            srv.wait_for(lambda lines: sum("exited" in x for x in lines) >= 2, 20,
                         "the old workers to exit")
        finally:
            stop.set()
            for t in threads:
                t.join(20)
        assert failures == []


def test_without_the_extra_one_line_names_the_pip_command() -> None:
    code = ("import sys; sys.modules['httptools'] = None\n"
            "import forkwell\n"
            "try:\n"
            "    forkwell.serve_wsgi('wsgi_apps:plain', '127.0.0.1:0')\n"
            "except ModuleNotFoundError as exc:\n"
            "    print(exc)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out == "forkwell's WSGI server needs httptools: pip install 'forkwell[wsgi]'\n"


def test_a_bad_application_is_one_clear_error() -> None:
    import forkwell

    with pytest.raises(forkwell.HandlerImportError, match="No module named 'no_such_mod'"):
        forkwell.serve_wsgi("no_such_mod:app", "127.0.0.1:0")
    with pytest.raises(forkwell.HandlerImportError, match="has no attribute 'nope'"):
        forkwell.serve_wsgi("wsgi_apps:nope", "127.0.0.1:0", preload=True)
    with pytest.raises(forkwell.HandlerImportError, match="not callable"):
        forkwell.serve_wsgi("wsgi_apps:LAUNCH", "127.0.0.1:0", preload=True)


def test_json_of_environ_is_what_the_client_sent() -> None:
    # Repeated fields: one value, joined as CGI does (cookies with "; ").
    with WSGIServed("wsgi_apps:plain") as srv:
        srv.ready()
        data = raw_exchange(srv.port, b"GET /environ HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nX-A: 2\r\n"
                            b"Cookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n")
        env = json.loads(data.partition(b"\r\n\r\n")[2])
        assert env["HTTP_X_A"] == "1,2" and env["HTTP_COOKIE"] == "a=1; b=2"
        assert env["SERVER_NAME"] == "127.0.0.1"


def test_worker_connections_caps_what_one_worker_holds() -> None:
    with WSGIServed("wsgi_apps:plain", workers=1, worker_connections=2, keep_alive=30) as srv:
        srv.ready()
        held = [client(srv), client(srv)]
        try:
            for c in held:
                assert c.get("/a").status_code == 200  # two idle keep-alive connections: full
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as third:
                third.sendall(GET % b"/third")
                third.settimeout(0.3)
                with pytest.raises(TimeoutError):  # queued in the backlog, not accepted
                    third.recv(100)
                held.pop().close()  # a connection ends: room for the third
                third.settimeout(10)
                assert third.recv(100).startswith(b"HTTP/1.1 200 OK")
        finally:
            for c in held:
                c.close()
