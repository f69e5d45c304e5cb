"""The HTTP layer's bounds, against raw sockets: what a slow, big or greedy client may cost.

The first tests drive :class:`HttpServer` in-process with small limits (a
half-second request timeout, four connections), so the bounds are reached
in a moment; the last ones attack a real ``forkwell up`` at its defaults
while ``forkwell ps`` and a real client keep being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from helpers import wait_until
from test_supervisor_cli import asleep_in_epoll, ctx_switches
from test_web import SLEEPER, families, value
from webclient import Events, Up, rss_kib

from forkwell._supervisor._web._address import HttpAddress
from forkwell._supervisor._web._http import (
    HttpServer,
    Limits,
    Request,
    Response,
    Stream,
    StreamResponse,
)

pytestmark = pytest.mark.timeout(60)

SMALL = Limits(max_head=1024, max_body=256, request_timeout=0.5, max_connections=4, max_streams=2,
               stream_buffer=65536)  # fmt: skip


def serve(body: Callable[[HttpServer], Awaitable[None]], limits: Limits = SMALL) -> HttpServer:
    """Run ``body`` against a server on 127.0.0.1 answering "hi", or a stream for /stream."""
    streams: list[Stream] = []

    async def app(req: Request) -> Response | StreamResponse:
        if req.path == "/stream":
            return StreamResponse(streams.append)
        return Response(200, b"hi " + req.body)

    async def main() -> HttpServer:
        server = HttpServer(app, HttpAddress("127.0.0.1", 0, None), limits)
        server.streams_opened = streams  # type: ignore[attr-defined]
        await server.start()
        try:
            await body(server)
        finally:
            await server.close()
            for writer in _clients:
                writer.close()
            _clients.clear()
        return server

    return asyncio.run(main())


_clients: list[asyncio.StreamWriter] = []  # closed by serve() at the end


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    _clients.append(writer)
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes (bounded: the server closes or the test times out)."""
    return await asyncio.wait_for(reader.read(), 5)


def test_oversized_headers_get_431_and_a_big_body_413_unread() -> None:
    async def body(server: HttpServer) -> None:
        r, w = await connect(server)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
        assert (await answer(r)).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        r, w = await connect(server)
        # 100 MB announced, none sent: answered at once, nothing buffered.
        w.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        reply = await answer(r)
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert b"request body larger than 256 bytes" in reply
        r, w = await connect(server)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await answer(r)).endswith(b"\r\n\r\nhi ")
        assert server.rejected == 2

    serve(body)


def test_a_slowloris_client_is_cut_off_at_the_request_timeout() -> None:
    async def body(server: HttpServer) -> None:
        r, w = await connect(server)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        start = time.monotonic()
        got = b""
        while not got and time.monotonic() - start < 5:
            w.write(b"a")  # a byte of a header every 50 ms: never a whole request
            try:
                got = await asyncio.wait_for(r.read(4096), 0.05)
            except TimeoutError:
                continue
        took = time.monotonic() - start
        got += await answer(r)
        assert got.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"no complete request within 0.5s" in got
        assert 0.4 <= took < 2.0, took

    serve(body)


def test_at_the_cap_the_longest_idle_connection_makes_room() -> None:
    async def body(server: HttpServer) -> None:
        idle = [await connect(server) for _ in range(4)]
        wait = 0
        while server.connections < 4 and wait < 200:
            await asyncio.sleep(0)
            wait += 1
        r, w = await connect(server)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await answer(r)).startswith(b"HTTP/1.1 200 OK\r\n")
        assert await answer(idle[0][0]) == b""  # the oldest was closed, without a word
        assert server.refused == 1
        assert server.connections <= 4

    serve(body)


async def open_stream(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await connect(server)
    w.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    return r, w


def test_streams_are_capped_and_with_none_idle_a_newcomer_gets_503() -> None:
    async def streams(server: HttpServer) -> None:
        for _ in range(2):
            r, _ = await open_stream(server)
            assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK\r\n")
        r, _ = await open_stream(server)  # a third: over max_streams
        reply = await answer(r)
        assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"2 event streams are open already" in reply

    serve(streams, SMALL)

    async def full(server: HttpServer) -> None:
        for _ in range(3):  # every connection streaming: none can be closed to make room
            r, _ = await open_stream(server)
            await r.readuntil(b"\r\n\r\n")
        r, _ = await connect(server)
        reply = await answer(r)
        assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), reply
        assert b"busy: too many connections" in reply
        assert server.refused == 1

    serve(full, SMALL._replace(max_connections=3, max_streams=3))


def test_a_stream_reader_that_falls_behind_is_dropped_not_buffered() -> None:
    async def body(server: HttpServer) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        _, w = await asyncio.open_connection(sock=sock)
        _clients.append(w)
        w.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        opened: list[Stream] = server.streams_opened  # type: ignore[attr-defined]
        while not opened:
            await asyncio.sleep(0)
        stream = opened[0]
        chunk = b"data: " + b"x" * 65536 + b"\n\n"
        sent = 0
        while not stream.closed.done() and sent < 2000:  # the client reads nothing
            stream.send(chunk)
            sent += 1
            await asyncio.sleep(0)
        assert stream.closed.done(), "a reader that never reads kept its stream"
        assert sent * len(chunk) < 64 << 20  # dropped long before it cost much
        w.close()

    serve(body)


# -- a real supervisor under attack ------------------------------------------------


def test_a_thousand_idle_connections_and_slowloris_do_not_stall_the_supervisor(
    tmp_path: Path,
) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:
        pytest.skip(f"the fd limit ({hard}) is too small for 1,000 connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    with Up(tmp_path, f"[programs.a]\ncommand = {SLEEPER}\n", http="127.0.0.1:0") as up:
        baseline = rss_kib(up.pid)
        conns: list[socket.socket] = []
        try:
            for i in range(1000):
                sock = socket.create_connection(("127.0.0.1", up.port), timeout=10)
                if i % 2:  # half idle, half slowloris: a request head never finished
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                conns.append(sock)
            for sock in conns[1::2]:
                with contextlib.suppress(OSError):  # closed to make room: that is the point
                    sock.sendall(b"a")
            # The supervisor keeps serving: its control socket, and a real HTTP client.
            ps = up.ps()
            assert [r["state"] for r in ps["instances"]] == ["RUNNING"]
            health = up.get("/healthz")
            assert health.status == 200
            metrics = families(up.get("/metrics").text)
            grown = rss_kib(up.pid) - baseline
        finally:
            for sock in conns:
                sock.close()
    assert value(metrics, "forkwell_supervisor_http_connections") <= 128
    assert value(metrics, "forkwell_supervisor_http_refused_connections_total") >= 800
    assert grown < 16 * 1024, f"RSS grew {grown} KiB for 1,000 hostile connections"


def test_an_idle_supervisor_with_http_never_wakes_up(tmp_path: Path) -> None:
    """The idle test of tests/test_supervisor_cli.py, with http on: after a client came and
    went, and while an event stream is open and nothing happens."""
    with Up(tmp_path, f"[programs.idle]\ncommand = {SLEEPER}\nnumprocs = 3\n",
            http="127.0.0.1:0") as up:  # fmt: skip
        for path in ("/", "/metrics", "/api/v1/programs", "/readyz"):
            assert up.get(path).status == 200

        def quiet_second() -> int:
            wait_until(lambda: asleep_in_epoll(up.pid), 10, "the supervisor to sleep")
            before = ctx_switches(up.pid)
            select.select([], [], [], 1.0)  # the idle window being measured
            return ctx_switches(up.pid) - before

        assert quiet_second() == 0
        events = Events(up, "/api/v1/events")
        try:
            assert events.resp.status == 200
            assert quiet_second() == 0
        finally:
            events.close()
