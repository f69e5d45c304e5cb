"""The probe kinds: ready by HTTP(S) status and by a log line; liveness by tcp:, and its timeout.

Real servers (Python's http.server, with TLS from a certificate openssl makes
for the test) in a real supervisor.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_health import free_port
from test_supervisor_harness import config, drive, info, py, until

from forkwell import Supervisor

pytestmark = pytest.mark.timeout(60)

# Answers 503 to its first NOT_YET GETs, then 200; each answer's status goes to LOG.
SERVER = """
import http.server, ssl, sys
port, not_yet, log, cert = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
seen = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global seen
        seen += 1
        code = 503 if seen <= not_yet else 200
        with open(log, "a") as f:
            f.write(f"{code}\\n")
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), H)
if cert != "-":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


def listen(port: int) -> str:
    """One line of a program: ``s``, a socket listening on 127.0.0.1:``port``."""
    return (
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f's.bind(("127.0.0.1", {port})); s.listen(100)'
    )


def _self_signed(tmp_path: Path) -> Path:
    pem = tmp_path / "server.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(pem), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    pem.write_text(pem.read_text() + (tmp_path / "cert.pem").read_text())
    return pem


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_ready_by_url_waits_for_a_2xx(tmp_path: Path, scheme: str) -> None:
    port, log = free_port(), tmp_path / "answers"
    cert = str(_self_signed(tmp_path)) if scheme == "https" else "-"
    argv = json.dumps([sys.executable, "-c", SERVER, str(port), "3", str(log), cert])
    cfg = config(
        tmp_path,
        f"""
        [programs.web]
        command = {argv}
        ready = "{scheme}://127.0.0.1:{port}/health"
        """,
    )

    async def body(sup: Supervisor) -> None:
        # up() returned once RUNNING: the server had answered 503 three times, then 200.
        assert log.read_text().split() == ["503", "503", "503", "200"]
        starting = [e for e in sup.events if e.new == "RUNNING"]
        assert f"{scheme}://127.0.0.1:{port}/health" in starting[0].why

    drive(cfg, body)


def test_ready_by_a_log_line(tmp_path: Path) -> None:
    program = py(
        """
        import sys, time
        print("loading", flush=True)
        sys.stdout.write("listening on ")
        sys.stdout.flush()
        time.sleep(0.2)
        sys.stdout.write("port 8123\\n")
        sys.stdout.flush()
        time.sleep(600)
        """
    )
    cfg = config(
        tmp_path,
        f"""
        [programs.app]
        command = {program}
        ready = 'log:listening on port \\d+'
        """,
    )

    async def body(sup: Supervisor) -> None:
        row = info(sup, "app:0")
        assert row.state == "RUNNING" and row.ready_probe == r"log:listening on port \d+"
        from test_supervisor_harness import log_text

        assert "listening on port 8123" in log_text(sup, "app:0")  # ready only after the line

    drive(cfg, body)


def test_tcp_liveness_restarts_a_program_whose_port_closed(tmp_path: Path) -> None:
    port = free_port()
    # Listens, then closes its socket once told (a connection that says "close";
    # the probes' connections say nothing) but stays alive.
    program = py(
        f"""
        import signal, socket
        {listen(port)}
        while True:
            c = s.accept()[0]
            told = c.recv(5, socket.MSG_WAITALL) == b"close"
            c.close()
            if told:
                break
        s.close()
        signal.pause()
        """
    )
    cfg = config(
        tmp_path,
        f"""
        [programs.svc]
        command = {program}
        ready = "tcp:127.0.0.1:{port}"
        liveness = "tcp:127.0.0.1:{port}"
        liveness_period = 0.1
        liveness_failures = 2
        min_uptime = 0
        """,
    )

    async def body(sup: Supervisor) -> None:
        first = info(sup, "svc:0").pid
        await until(lambda: info(sup, "svc:0").liveness == "ok", 10, "liveness ok")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as tell:
            tell.sendall(b"close")
        await until(lambda: info(sup, "svc:0").pid not in (None, first), 20, "a restart")
        why = next(e.why for e in sup.events if e.new == "STOPPING")
        assert why.startswith(f"liveness: tcp:127.0.0.1:{port}: ")
        assert why.split(";")[0].endswith("(2 times in a row)")

    drive(cfg, body)


def test_a_probe_that_hangs_fails_at_liveness_timeout(tmp_path: Path) -> None:
    port = free_port()
    # Accepts connections and never answers: the GET hangs.
    program = py(
        f"""
        import socket, time
        {listen(port)}
        held = []
        while True:
            held.append(s.accept()[0])
        """
    )
    cfg = config(
        tmp_path,
        f"""
        [programs.hung]
        command = {program}
        ready = "tcp:127.0.0.1:{port}"
        liveness = "http://127.0.0.1:{port}/"
        liveness_period = 0.1
        liveness_timeout = 0.2
        liveness_failures = 1000
        """,
    )

    async def body(sup: Supervisor) -> None:
        await until(lambda: info(sup, "hung:0").liveness_failures >= 2, 20, "two timeouts")
        row = info(sup, "hung:0")
        assert row.last_probe_failure == f"http://127.0.0.1:{port}/: no answer within 0.2s"
        assert row.state == "RUNNING"

    drive(cfg, body)
