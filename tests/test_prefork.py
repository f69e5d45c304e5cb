"""PreforkServer through ``forkwell serve --workers N``: real sockets, signals, /proc."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_server_apps import (
    TESTS_DIR,
    Served,
    ask,
    burst,
    children,
    closed_by_peer,
    connect,
    read_all,
)

pytestmark = pytest.mark.timeout(60)

ECHO = "test_server_apps:echo"


def wait_until(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        select.select([], [], [], 0.01)


def running_workers(srv: Served, count: int, timeout: float = 20.0) -> list[int]:
    """Wait until the master has exactly ``count`` live workers, all booted."""

    def ready() -> list[int] | None:
        pids = children(srv.pid)
        if len(pids) != count:
            return None
        booted = all(srv.count(rf"worker {p} booted") for p in pids)
        return pids if booted else None

    return wait_until(ready, timeout, f"{count} booted workers")  # type: ignore[no-any-return]


class Looper:
    """A client thread asking in a loop; counts answers and failures."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.pids: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            payload = f"loop-{n}".encode()
            try:
                pid, text = ask(self.address, payload, timeout=10)
            except (OSError, ValueError) as exc:
                self.failures.append(f"request {n}: {exc!r}")
                continue
            if text != payload:
                self.failures.append(f"request {n}: got {text!r}")
            self.pids.append(pid)

    def __enter__(self) -> Looper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        target = len(self.pids) + count
        wait_until(lambda: len(self.pids) >= target, timeout, f"{count} more answers")


def test_200_concurrent_connections_over_4_workers() -> None:
    with Served("--workers", "4", "--bind", "127.0.0.1:0", "-q", ECHO) as srv:
        srv.started()
        # "listening" is logged while the master may still be forking the last
        # worker; a burst then could starve it of CPU until after the count.
        wait_until(lambda: len(children(srv.pid)) == 4, 20, "4 workers")
        payloads = [f"client-{i}".encode() for i in range(200)]
        replies = burst(srv.address, payloads, concurrency=200)
        pids = set()
        for payload, reply in zip(payloads, replies, strict=True):
            pid, _, text = reply.strip().partition(b" ")
            assert text == payload
            pids.add(int(pid))
        workers = set(children(srv.pid))
        assert len(workers) == 4
        assert pids <= workers  # answered by the pre-forked workers, no one else
        assert srv.stop() == 0


def test_worker_holds_only_what_it_needs() -> None:
    with Served("--workers", "1", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        (worker,) = running_workers(srv, 1)
        pid, listing = ask(srv.address, b"fds")
        assert pid == worker
        fds = dict(item.split("=", 1) for item in listing.decode().split())
        kinds = sorted(target.split(":")[0] for n, target in fds.items() if int(n) > 2)
        # listener + this connection, the worker's epoll set, its signal
        # wake-up pipe.  No pidfd, no master selector, no master pipe.
        assert kinds == ["anon_inode", "pipe", "pipe", "socket", "socket"], fds
        assert [t for t in fds.values() if t.startswith("anon_inode")] == ["anon_inode:[eventpoll]"]
        master_fd_dir = f"/proc/{srv.pid}/fd"
        master = {os.readlink(f"{master_fd_dir}/{n}") for n in os.listdir(master_fd_dir)}
        # (every epoll reads "anon_inode:[eventpoll]": only sockets and pipes have identities)
        shared = {t for n, t in fds.items() if int(n) > 2 and "anon_inode" not in t} & master
        assert len(shared) == 1 and shared.pop().startswith("socket:")  # the listener only
        assert srv.stop() == 0


def test_crashed_worker_is_replaced() -> None:
    with Served("--workers", "2", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        before = running_workers(srv, 2)
        os.kill(before[0], signal.SIGKILL)
        srv.wait_line(rf"worker {before[0]} died unexpectedly \(signal 9\); respawning")
        after = running_workers(srv, 2)
        assert before[0] not in after and before[1] in after
        assert ask(srv.address, b"alive")[1] == b"alive"
        assert srv.stop() == 0


def test_crash_loop_respawns_with_growing_backoff() -> None:
    with Served("--workers", "1", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        running_workers(srv, 1)
        t0 = time.monotonic()
        for _ in range(5):
            # Queued until the replacement is up, then it crashes it too.
            with connect(srv.address, timeout=30) as sock:
                sock.sendall(b"crash\n")
                assert closed_by_peer(sock)
        assert ask(srv.address, b"after", timeout=30)[1] == b"after"
        elapsed = time.monotonic() - t0
        # Respawn delays 0, 0.1, 0.2, 0.4, 0.8 s: a respawn loop would be far quicker.
        assert elapsed >= 1.4, elapsed
        assert srv.count(r"died unexpectedly \(exit status 1\); respawning") == 5
        assert srv.stop() == 0


def test_hung_worker_is_killed_and_replaced() -> None:
    with Served("--workers", "1", "--timeout", "1", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        (worker,) = running_workers(srv, 1)
        with connect(srv.address, timeout=15) as stuck:
            stuck.sendall(b"hang\n")
            t0 = time.monotonic()
            # Its handler ignores SIGTERM (it only queues it): SIGKILL must follow.
            assert read_all(stuck) == b""
            elapsed = time.monotonic() - t0
        assert 1.0 <= elapsed < 10, elapsed
        srv.wait_line(rf"worker {worker} silent for over 1s: SIGTERM")
        srv.wait_line(rf"worker {worker} did not stop in time: SIGKILL")
        pid, text = ask(srv.address, b"replacement")
        assert text == b"replacement" and pid != worker
        assert srv.stop() == 0


def test_hup_reloads_new_code_without_a_failed_request(tmp_path: Path) -> None:
    app = tmp_path / "reload_app.py"
    app.write_text(
        "import os\n"
        "def handler(sock, addr):\n"
        "    line = sock.makefile('rb').readline().strip()\n"
        "    sock.sendall(b'%d ' % os.getpid() + line + b'\\n')\n"
    )
    with Served(
        "--workers", "2", "--bind", "127.0.0.1:0", "reload_app:handler", cwd=tmp_path
    ) as srv:
        srv.started()
        old = set(running_workers(srv, 2))
        with Looper(srv.address) as loop:
            loop.wait_for(20)
            # New code: answers now carry a "v2" marker.
            app.write_text(
                "import os\n"
                "def handler(sock, addr):\n"
                "    line = sock.makefile('rb').readline().strip()\n"
                "    sock.sendall(b'%d ' % os.getpid() + line + b'\\n')\n"
                "VERSION = 2  # changed\n"
            )
            os.kill(srv.pid, signal.SIGHUP)
            srv.wait_line(r"reloading: starting 2 new workers")
            wait_until(lambda: not (set(children(srv.pid)) & old), 15, "the old workers to exit")
            loop.wait_for(20)
        assert loop.failures == []
        new = set(children(srv.pid))
        assert len(new) == 2 and not new & old
        assert set(loop.pids[-5:]) <= new  # the last answers came from new workers
        assert set(loop.pids) & old  # and the first from old ones
        assert srv.stop() == 0


def test_hup_with_broken_new_code_keeps_the_old_workers(tmp_path: Path) -> None:
    app = tmp_path / "fragile_app.py"
    app.write_text("def handler(sock, addr):\n    sock.sendall(b'1 ok\\n')\n")
    with Served(
        "--workers", "1", "--bind", "127.0.0.1:0", "fragile_app:handler", cwd=tmp_path
    ) as srv:
        srv.started()
        (worker,) = running_workers(srv, 1)
        app.write_text("def handler(sock, addr):\n    sock.sendall(b'1 ok\\n'\n")  # syntax error
        os.kill(srv.pid, signal.SIGHUP)
        srv.wait_line(r"reload failed, keeping the running workers: cannot import 'fragile_app'")
        assert children(srv.pid) == [worker]
        assert ask(srv.address, b"")[1] == b"ok"
        assert srv.stop() == 0


def test_ttin_ttou_change_the_worker_count() -> None:
    with Served("--workers", "2", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        first = running_workers(srv, 2)
        os.kill(srv.pid, signal.SIGTTIN)
        srv.wait_line(r"TTIN: 3 workers")
        os.kill(srv.pid, signal.SIGTTIN)
        srv.wait_line(r"TTIN: 4 workers")
        running_workers(srv, 4)
        os.kill(srv.pid, signal.SIGTTOU)
        srv.wait_line(r"TTOU: 3 workers")
        three = running_workers(srv, 3)
        assert not set(first) <= set(three)  # the oldest one was retired
        payloads = [f"p{i}".encode() for i in range(30)]
        assert [r.split(b" ", 1)[1] for r in burst(srv.address, payloads, 30)] == [
            p + b"\n" for p in payloads
        ]
        assert srv.stop() == 0


def test_max_requests_recycles_workers_without_a_failed_request() -> None:
    args = ("--workers", "2", "--max-requests", "5", "--max-requests-jitter", "2")
    with Served(*args, "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        answers = [ask(srv.address, f"r{i}".encode()) for i in range(120)]
        assert [text for _, text in answers] == [f"r{i}".encode() for i in range(120)]
        per_worker: dict[int, int] = {}
        for pid, _ in answers:
            per_worker[pid] = per_worker.get(pid, 0) + 1
        # 5 + 0..2 connections each: 120 requests need at least 120/7 workers.
        assert len(per_worker) >= 120 // 7
        assert max(per_worker.values()) <= 7
        assert srv.count(r"retired after [5-7] connections") >= 120 // 7 - 2
        assert srv.stop() == 0


def test_term_lets_the_in_flight_connection_finish() -> None:
    with Served("--workers", "1", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        running_workers(srv, 1)
        with connect(srv.address) as sock:
            sock.sendall(b"wait\n")
            assert sock.recv(100).endswith(b"waiting\n")
            os.kill(srv.pid, signal.SIGTERM)
            srv.wait_line(r"graceful stop: waiting up to 30s for 1 worker to finish$")
            sock.sendall(b"finished\n")
            assert read_all(sock).endswith(b" finished\n")
        assert srv.wait(timeout=10) == 0
        assert srv.proc.returncode == 0


def test_quit_is_a_fast_stop() -> None:
    with Served("--workers", "2", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        running_workers(srv, 2)
        with connect(srv.address) as sock:
            sock.sendall(b"hang\n")
            t0 = time.monotonic()
            assert srv.stop(signal.SIGQUIT) == 0
            assert time.monotonic() - t0 < 5
            assert closed_by_peer(sock)


def test_workers_die_with_a_killed_master() -> None:
    with Served("--workers", "2", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        workers = running_workers(srv, 2)
        os.kill(srv.pid, signal.SIGKILL)
        srv.proc.wait(10)
        # PDEATHSIG (SIGTERM) ends idle workers: nothing left running.
        wait_until(
            lambda: all(not Path(f"/proc/{p}").exists() or _state(p) == "Z" for p in workers),
            10,
            "the orphaned workers to exit",
        )


def _state(pid: int) -> str:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return "gone"
    return data[data.rfind(b")") + 2 :].split()[0].decode()


def test_usr1_reopens_the_log_file(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    args = ("--workers", "1", "--log-file", str(log), "--bind", "127.0.0.1:0")
    with Served(*args, "http.server:SimpleHTTPRequestHandler", cwd=tmp_path) as srv:
        wait_until(lambda: log.exists() and "booted" in log.read_text(), 10, "the log file")
        addr = srv.wait_line(r"listening on (\S+) ").group(1)
        with connect(addr) as sock:
            sock.sendall(b"GET /before HTTP/1.0\r\n\r\n")
            read_all(sock)
        wait_until(lambda: "/before" in log.read_text(), 5, "the first request in the log")
        log.rename(tmp_path / "serve.log.1")  # as logrotate does
        os.kill(srv.pid, signal.SIGUSR1)
        wait_until(log.exists, 5, "the master to reopen the log")

        # The worker reopens on its own USR1 (forwarded): retry until its line lands.
        def logged_after() -> bool:
            with connect(addr) as sock:
                sock.sendall(b"GET /after HTTP/1.0\r\n\r\n")
                read_all(sock)
            return "/after" in log.read_text()

        wait_until(logged_after, 5, "the worker to write to the new file")
        assert "/after" not in (tmp_path / "serve.log.1").read_text()
        assert srv.stop() == 0


def test_unix_listener_and_reuse_port_mode(tmp_path: Path) -> None:
    path = tmp_path / "pf.sock"
    args = ("--workers", "2", "--reuse-port", "--bind", "127.0.0.1:0", "--bind", f"unix:{path}")
    with Served(*args, ECHO) as srv:
        tcp, unix = srv.wait_line(r"listening on (\S+), (\S+) ").groups()
        # Per-worker sockets: the port accepts once a worker has opened its own.
        running_workers(srv, 2)
        payloads = [f"x{i}".encode() for i in range(40)]
        for addr in (tcp, unix):
            replies = burst(addr, payloads, 20)
            assert [r.split(b" ", 1)[1] for r in replies] == [p + b"\n" for p in payloads]
        assert srv.stop() == 0
    assert not path.exists()


def test_workers_reseed_random() -> None:
    # Forked from one master, workers would draw identical numbers without a re-seed.
    with Served("--workers", "4", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        running_workers(srv, 4)
        held = [connect(srv.address) for _ in range(4)]
        try:
            for sock in held:
                sock.sendall(b"wait\n")
            # Four "waiting" replies: four distinct workers, each held busy by
            # its first connection.
            for sock in held:
                assert sock.recv(100).endswith(b"waiting\n")
            firsts: dict[int, bytes] = {}
            for sock in held:
                sock.sendall(b"rand\n")
                pid, _, rest = read_all(sock).strip().partition(b" ")
                count, value = rest.split()
                assert count == b"1"  # the worker's first connection
                firsts[int(pid)] = value
        finally:
            for sock in held:
                sock.close()
        assert len(firsts) == 4
        assert len(set(firsts.values())) == 4
        assert srv.stop() == 0


def test_no_thundering_herd_idle_workers_are_not_woken() -> None:
    # With EPOLLEXCLUSIVE one idle worker is woken per connection.  Count the
    # voluntary context switches of the workers that served nothing: a herd
    # would wake each of them once per connection.
    with Served("--workers", "4", "--timeout", "60", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        workers = running_workers(srv, 4)
        before = {p: _switches(p) for p in workers}
        t0 = time.monotonic()
        served = set()
        for _ in range(50):
            # Every worker idle in epoll_wait: each could be woken by a herd.
            wait_until(lambda: all(_wchan(p) == "do_epoll_wait" for p in workers), 5, "idle")
            served.add(ask(srv.address, b"s")[0])
        elapsed = time.monotonic() - t0
        idle = [p for p in workers if p not in served]
        # With a herd all four race for each connection and all end up serving.
        assert idle, "every worker served: they were all woken (thundering herd)"
        woken = {p: _switches(p) - before[p] for p in idle}
        # Heartbeat wake-ups (one a second while idle) are all they may have;
        # a herd would add one per connection, 50.
        allowed = int(elapsed) + 5
        assert allowed < 40, f"too slow to tell ({elapsed:.1f}s for 50 requests)"
        assert all(n <= allowed for n in woken.values()), (woken, elapsed)
        assert srv.stop() == 0


def _wchan(pid: int) -> str:
    return Path(f"/proc/{pid}/wchan").read_text()


def _switches(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


BOOT_SCRIPT = """
import os, sys, forkwell
def boom():
    raise RuntimeError("database unreachable")
def stuck():
    r, w = os.pipe()
    os.read(r, 1)  # never ready
server = forkwell.PreforkServer(lambda s, a: None, "127.0.0.1:0", workers=2, timeout=0.5,
                                max_boot_failures=int(sys.argv[2]), worker_init=eval(sys.argv[1]))
try:
    server.serve_forever()
except forkwell.WorkerBootError as exc:
    print("HALT", exc, flush=True)
    sys.exit(3)
"""


def _boot(init: str, failures: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BOOT_SCRIPT, init, str(failures)],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(TESTS_DIR), os.environ.get("PYTHONPATH"))))),
    )


def test_boot_failures_halt_the_master_with_the_reason() -> None:
    t0 = time.monotonic()
    proc = _boot("boom", 3)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("HALT workers failed to boot 3 times in a row; halting")
    assert "(last: RuntimeError: database unreachable)" in proc.stdout
    assert time.monotonic() - t0 < 15
    assert proc.stderr.count("RuntimeError: database unreachable") >= 3  # each worker's traceback


def test_a_boot_that_hangs_counts_as_a_failure() -> None:
    proc = _boot("stuck", 2)
    assert proc.returncode == 3, proc.stderr
    assert "halting (last: not ready within the 0.5s timeout)" in proc.stdout


def test_stop_leaves_no_worker_behind() -> None:
    with Served("--workers", "3", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        workers = running_workers(srv, 3)
        assert srv.stop() == 0
        # The master returned only after reaping them: they are gone, not zombies.
        assert [p for p in workers if _state(p) != "gone"] == []
