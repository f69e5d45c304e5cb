"""The in-process reaper: ``forkwell.Reaper`` and ``forkwell.fork()``.

Real forks, real exits and signals.  The server-sized cases (1,000 children)
run in a helper process so the zombie count is that process's alone; each has
a negative control showing the measurement can fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PY, wait_until

import forkwell
from forkwell._core import _reaper, _sys
from forkwell._exceptions import StateError

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="PID namespaces (unshare --pid) need root; CI runs as root"
)


def child_exits(code: int) -> None:
    os._exit(code)


def child_dies_of(sig: int) -> None:
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(99)  # not reached


@pytest.fixture
def reaper() -> Iterator[forkwell.Reaper]:
    with forkwell.Reaper() as r:
        yield r
        # Whatever a failing test left: end and reap it here, not as a leak.
        for pid in r.pids():
            os.kill(pid, signal.SIGKILL)
        for _ in r.exits(timeout=10):
            pass


# -- the explicit Reaper ------------------------------------------------------


@pytest.mark.timeout(20)
def test_fork_and_wait_decode_exit_codes_and_signals(reaper: forkwell.Reaper) -> None:
    a = reaper.fork()
    if a == 0:
        child_exits(3)
    b = reaper.fork()
    if b == 0:
        child_dies_of(signal.SIGTERM)
    assert reaper.pids() == {a, b}
    assert len(reaper) == 2
    got = {e.pid: e for e in reaper.exits(timeout=10)}
    assert set(got) == {a, b}
    assert (got[a].returncode, got[a].exit_code, got[a].signal, got[a].shell_status) == (
        3, 3, None, 3
    )
    assert (got[b].returncode, got[b].exit_code, got[b].signal, got[b].shell_status) == (
        -signal.SIGTERM, None, signal.SIGTERM, 128 + signal.SIGTERM
    )
    assert str(got[a]) == f"pid {a} exited with status 3"
    assert str(got[b]) == f"pid {b} was killed by SIGTERM"
    assert reaper.pids() == set()


@pytest.mark.timeout(20)
def test_fileno_is_readable_only_once_a_child_exited(reaper: forkwell.Reaper) -> None:
    import select

    r, w = os.pipe()
    pid = reaper.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # wait for the parent's go
        child_exits(0)
    os.close(r)
    assert select.select([reaper.fileno()], [], [], 0)[0] == []
    assert reaper.reap() == []
    os.close(w)  # go
    assert select.select([reaper.fileno()], [], [], 10)[0] == [reaper.fileno()]
    assert reaper.reap() == [forkwell.ChildExit(pid, 0)]


@pytest.mark.timeout(20)
def test_never_steals_a_subprocess_childs_status(reaper: forkwell.Reaper) -> None:
    popen = subprocess.Popen(["sh", "-c", "exit 7"])
    pid = reaper.fork()
    if pid == 0:
        child_exits(5)
    # Let the subprocess child exit first; the reaper reaps only its own.
    wait_until(lambda: Path(f"/proc/{popen.pid}/stat").read_text().split()[2] == "Z",
               10, "the subprocess child to exit")
    assert [e.returncode for e in reaper.exits(timeout=10)] == [5]
    assert popen.wait(10) == 7
    assert subprocess.run(["sh", "-c", "exit 7"], check=False).returncode == 7


@pytest.mark.timeout(20)
def test_watch_accepts_a_child_started_elsewhere(reaper: forkwell.Reaper) -> None:
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 9"], os.environ)
    reaper.watch(pid)
    assert list(reaper.exits(timeout=10)) == [forkwell.ChildExit(pid, 9)]


def test_watch_refuses_a_process_that_is_not_our_child(reaper: forkwell.Reaper) -> None:
    with pytest.raises(ChildProcessError, match="not a child"):
        reaper.watch(os.getppid())
    assert reaper.pids() == set()


@pytest.mark.timeout(20)
def test_callbacks_get_each_exit_even_if_one_raises() -> None:
    seen: list[tuple[str, int]] = []

    def boom(e: forkwell.ChildExit) -> None:
        seen.append(("boom", e.returncode))
        raise RuntimeError("callback failed")

    with forkwell.Reaper(on_exit=lambda e: seen.append(("all", e.returncode))) as reaper:
        a = reaper.fork(on_exit=boom)
        if a == 0:
            child_exits(1)
        b = reaper.fork(on_exit=lambda e: seen.append(("b", e.returncode)))
        if b == 0:
            child_exits(2)
        # Both exited before one reap() call: the raising callback must not
        # cost b its callbacks.
        wait_until(lambda: all(Path(f"/proc/{p}/stat").read_text().split()[2] == "Z"
                               for p in (a, b)), 10, "both children to exit")
        with pytest.raises(RuntimeError, match="callback failed"):
            reaper.reap()
    assert sorted(seen) == [("all", 1), ("all", 2), ("b", 2), ("boom", 1)]


@pytest.mark.timeout(20)
def test_exits_timeout_stops_while_children_run(reaper: forkwell.Reaper) -> None:
    r, w = os.pipe()
    pid = reaper.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        child_exits(0)
    os.close(r)
    assert list(reaper.exits(timeout=0.05)) == []
    assert reaper.wait(timeout=0.01) == []
    assert reaper.pids() == {pid}
    os.close(w)
    assert list(reaper.exits(timeout=10)) == [forkwell.ChildExit(pid, 0)]


@pytest.mark.timeout(20)
def test_wait_async_in_an_event_loop(reaper: forkwell.Reaper) -> None:
    async def main() -> list[forkwell.ChildExit]:
        pids = []
        for code in (4, 5):
            pid = reaper.fork()
            if pid == 0:
                child_exits(code)
            pids.append(pid)
        got: list[forkwell.ChildExit] = []
        while len(got) < 2:
            got += await asyncio.wait_for(reaper.wait_async(), 10)
        return got

    assert sorted(e.returncode for e in asyncio.run(main())) == [4, 5]
    assert asyncio.run(reaper.wait_async()) == []  # nothing watched: returns at once


@pytest.mark.timeout(20)
def test_a_forked_child_gets_a_clean_reaper(reaper: forkwell.Reaper) -> None:
    r, w = os.pipe()
    first = reaper.fork()
    if first == 0:
        os.close(w)
        os.read(r, 1)
        child_exits(0)
    second = reaper.fork()
    if second == 0:
        os.close(w)
        # The child's copy watches nothing of its parent's, yet works.
        inner = reaper.fork()
        if inner == 0:
            child_exits(6)
        ok = reaper.pids() == {inner} and reaper.wait(10) == [forkwell.ChildExit(inner, 6)]
        child_exits(0 if ok else 1)
    assert [e.returncode for e in reaper.wait(10)] == [0]
    os.close(w)
    os.close(r)
    assert [e.returncode for e in reaper.wait(10)] == [0]


@pytest.mark.timeout(20)
def test_works_with_fds_above_fd_setsize() -> None:
    # A busy server holds thousands of fds: select() would refuse the reaper's.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    null = os.open(os.devnull, os.O_RDONLY)
    filler = [os.dup(null) for _ in range(1100)]
    try:
        with forkwell.Reaper() as reaper:
            assert reaper.fileno() > 1024
            pid = reaper.fork()
            if pid == 0:
                child_exits(4)
            assert reaper.wait(10) == [forkwell.ChildExit(pid, 4)]
    finally:
        for fd in [*filler, null]:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_closed_reaper_refuses_to_watch() -> None:
    reaper = forkwell.Reaper()
    reaper.close()
    with pytest.raises(StateError, match="closed"):
        reaper.watch(os.getpid())
    assert repr(reaper) == "<forkwell.Reaper closed>"


@pytest.mark.timeout(20)
def test_fallback_without_pidfd_reaps_only_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # Forced: the SIGCHLD-pipe fallback serves kernels and platforms without
    # pidfds, which this machine cannot be turned into.
    monkeypatch.setattr(_sys, "HAVE_PIDFD", False)
    old = signal.getsignal(signal.SIGCHLD)
    popen = subprocess.Popen(["sh", "-c", "exit 7"])
    try:
        with forkwell.Reaper() as reaper:
            pid = reaper.fork()
            if pid == 0:
                child_exits(8)
            assert list(reaper.exits(timeout=10)) == [forkwell.ChildExit(pid, 8)]
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert popen.wait(10) == 7


# -- forkwell.fork(): the one-liner -------------------------------------------


@pytest.fixture
def background() -> Iterator[None]:
    yield
    wait_until(lambda: not _reaper.background_pids(), 10, "the background reaper to finish")
    _reaper._stop_background()


@pytest.mark.timeout(20)
def test_fork_one_liner_reaps_in_a_thread_not_a_signal_handler(background: None) -> None:
    got: list[tuple[int, int, str]] = []
    done = threading.Event()

    def on_exit(e: forkwell.ChildExit) -> None:
        got.append((e.pid, e.returncode, threading.current_thread().name))
        if len(got) == 3:
            done.set()

    pids = []
    for code in (0, 1, 2):
        pid = forkwell.fork(on_exit=on_exit)
        if pid == 0:
            child_exits(code)
        pids.append(pid)
    assert subprocess.run(["sh", "-c", "exit 7"], check=False).returncode == 7
    assert done.wait(10)
    assert sorted(got) == sorted(zip(pids, (0, 1, 2), ["forkwell-reaper"] * 3, strict=True))
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL  # no handler installed


@pytest.mark.timeout(20)
def test_fork_one_liner_without_callback_leaves_no_zombie(background: None) -> None:
    pid = forkwell.fork()
    if pid == 0:
        child_exits(0)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, "the child to be reaped")



AT_EXIT = r"""
import os, select, sys, forkwell
from forkwell._core import _reaper

first = _reaper._background_reaper()

def exited(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True

def report(e):
    # Holds the reaper's thread until its stop is asked for, which only the
    # atexit hook does: without it these lines are never printed.
    select.select([first._stop_r], [], [])
    print(e.pid, flush=True)

pids = []
for _ in range(20):
    pid = forkwell.fork(on_exit=report)
    if pid == 0:
        os._exit(0)
    pids.append(pid)
while not all(exited(p) for p in pids):   # every child exits before the interpreter ends
    select.select([], [], [], 0.01)
print(" ".join(map(str, pids)), flush=True)
"""


@pytest.mark.timeout(30)
def test_exits_reaped_before_the_interpreter_ends_are_delivered() -> None:
    # docs/init.md's rule: every child that exited before the interpreter began
    # to exit gets its on_exit (the atexit hook drains the daemon thread); the
    # callback above blocks until that hook asks the thread to stop, so a
    # reaper without the hook prints none of them.
    r = subprocess.run([PY, "-c", AT_EXIT], capture_output=True, text=True, timeout=25)
    assert r.returncode == 0, r.stderr
    listed, *reported = r.stdout.splitlines()
    assert sorted(map(int, reported)) == sorted(map(int, listed.split()))
    assert len(reported) == 20

# -- a forking server, 1,000 children ------------------------------------------

SERVER = r"""
import json, os, select, signal, subprocess, sys
import forkwell, forkwell._core._sys

mode, n = sys.argv[1], int(sys.argv[2])
if sys.argv[3:] == ["subreaper"]:
    assert forkwell._core._sys.set_subreaper()
me = os.getpid()
exits = {}
expected = {}

def zombies():
    count = 0
    for c in open(f"/proc/{me}/task/{me}/children").read().split():
        try:
            data = open(f"/proc/{c}/stat", "rb").read()
        except OSError:
            continue
        count += data[data.rfind(b")") + 2:][:1] == b"Z"
    return count

def record(e):
    exits[e.pid] = e.returncode

if mode == "textbook":
    def on_sigchld(signum, frame):  # the recipe the issue warns about
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            exits[pid] = os.waitstatus_to_exitcode(status)
    signal.signal(signal.SIGCHLD, on_sigchld)
reaper = forkwell.Reaper(on_exit=record)

def state(pid):
    try:
        data = open(f"/proc/{pid}/stat", "rb").read()
    except OSError:
        return b"gone"  # already reaped, by someone
    return data[data.rfind(b")") + 2:][:1]

def start_child(code, die=False):
    if mode == "fork":
        pid = forkwell.fork(on_exit=record)
    elif mode == "reaper":
        pid = reaper.fork()
    else:
        pid = os.fork()
    if pid == 0:
        if die:
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(code)
    expected[pid] = -signal.SIGKILL if die else code
    return pid

def steal_attempt():
    # A subprocess child has exited (a zombie, status not yet collected) when
    # one of ours exits: whatever reaps ours must leave that status alone.
    p = subprocess.Popen(["sh", "-c", "exit 7"])
    while state(p.pid) not in (b"Z", b"gone"):
        select.select([], [], [], 0.001)
    q = start_child(0)
    while mode != "none" and q not in exits:
        if mode == "reaper":
            reaper.wait(10)
        else:
            select.select([], [], [], 0.001)
    return p.wait()

most = 0
sevens = []
for i in range(n):
    start_child(i % 256, die=(i % 10 == 9))
    if mode == "reaper":  # the server's loop: serve, and reap when told to
        if select.select([reaper.fileno()], [], [], 0)[0]:
            reaper.reap()
    most = max(most, zombies())
    if i % 50 == 0:
        sevens.append(steal_attempt())
        sevens.append(subprocess.run(["sh", "-c", "exit 7"]).returncode)

if mode == "reaper":
    for _ in reaper.exits(timeout=20):
        pass
elif mode == "fork":
    import time
    deadline = time.monotonic() + 20
    while len(exits) < len(expected) and time.monotonic() < deadline:
        select.select([], [], [], 0.01)
elif mode == "none":  # the control: wait until every child is a zombie
    import time
    deadline = time.monotonic() + 20
    while zombies() < len(expected) and time.monotonic() < deadline:
        select.select([], [], [], 0.01)
final = zombies()
if mode == "none":
    for pid in expected:
        os.waitpid(pid, 0)
print(json.dumps({"most": most, "final": final, "sevens": sevens,
                  "right": sum(exits.get(p) == c for p, c in expected.items())}))
"""


def run_server(mode: str, n: int, *, ns: bool = False, subreaper: bool = False
               ) -> dict[str, object]:
    cmd = [PY, "-c", SERVER, mode, str(n), *(["subreaper"] if subreaper else [])]
    if ns:
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=50, check=False)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


# A handful: zombies are counted right after each fork, so children that exit
# between the last reap and the count (a few microseconds each, but the loop
# runs 1,000 times on a loaded 2-core machine) show up.  Typically 5-8 here;
# without reaping the count reaches every child (the negative control).
HANDFUL = 16


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["fork", "reaper"])
def test_server_forking_1000_children_stays_zombie_free(mode: str) -> None:
    result = run_server(mode, 1000)
    assert result["right"] == 1020  # every status, decoded correctly
    assert result["sevens"] == [7] * 40  # subprocess statuses never stolen
    assert isinstance(result["most"], int)
    assert result["most"] <= HANDFUL, result
    assert result["final"] == 0


@pytest.mark.timeout(60)
def test_negative_control_no_reaping_piles_up_zombies() -> None:
    result = run_server("none", 100)
    assert result["final"] == 102, result  # 100 + the 2 of the steal attempts


@pytest.mark.timeout(60)
def test_negative_control_textbook_sigchld_handler_steals_subprocess_status() -> None:
    result = run_server("textbook", 100)
    sevens = result["sevens"]
    assert isinstance(sevens, list)
    assert any(code != 7 for code in sevens), result


@needs_root
@pytest.mark.root
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["fork", "reaper"])
def test_reaper_as_pid_1(mode: str) -> None:
    result = run_server(mode, 200, ns=True)
    assert result["right"] == 204
    assert result["sevens"] == [7] * 8
    assert result["final"] == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["fork", "reaper"])
def test_reaper_in_a_subreaper(mode: str) -> None:
    result = run_server(mode, 200, subreaper=True)
    assert result["right"] == 204
    assert result["sevens"] == [7] * 8
    assert result["final"] == 0
