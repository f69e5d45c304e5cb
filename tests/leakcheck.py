"""Leak checking for tests that spawn: a pytest plugin (loaded by conftest.py).

After every test, nothing the test started may still run, and no child of the
test process may be left unreaped:

* every test runs with ``FORKWELL_TEST_ID=<random>`` in ``os.environ``, which
  every process it spawns inherits (daemons and double-forked orphans too);
  any live process whose ``/proc/PID/environ`` carries it afterwards is a leak;
* any child of the pytest process, running or zombie, is a leak (an unreaped
  child is the bug forkwell exists to prevent).

Leaks are killed and reaped so one bad test cannot spoil the next, and the test
errors at teardown naming them.  ``test_leakcheck.py`` proves this fails.

The session also runs under a tiny subreaper (see ``start_session_reaper``):
orphans re-parented away from the test process are reaped there instead of by
PID 1, which on some sandboxes never reaps at all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import sys
import time

import pytest

TEST_ID_VAR = "FORKWELL_TEST_ID"
REAPER_VAR = "FORKWELL_TEST_REAPER_PID"
LINUX = sys.platform.startswith("linux")


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2 :].split()
    return rest[0].decode(), int(rest[1])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def find_leaks(test_id: str) -> dict[int, str]:
    """pid -> description of every process the test left behind."""
    me = os.getpid()
    needle = f"{TEST_ID_VAR}={test_id}".encode()
    leaks: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        st = _stat(pid)
        if st is None:
            continue
        state, ppid = st
        if ppid == me:
            kind = "unreaped zombie child" if state == "Z" else "child still running"
            leaks[pid] = f"{kind} {pid}: {_cmdline(pid)}"
            continue
        if state == "Z":
            continue
        if needle in _environ(pid, ppid).split(b"\0"):
            leaks[pid] = f"process still running {pid} (ppid {ppid}): {_cmdline(pid)}"
    return leaks


def _environ(pid: int, ppid: int) -> bytes:
    """/proc/PID/environ, read again for up to 20 ms while it is empty.

    A process inside execve() shows an empty environment for a moment (its
    new one is not mapped yet): a leak caught exec'ing would go unseen.
    (Deliberately not forkwell's own _tree.read_environ: the fixture must not
    depend on the code it checks.)  Kernel threads never have one.
    """
    deadline = time.monotonic() + 0.02
    while True:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            return b""
        if env or ppid in (0, 2) or time.monotonic() >= deadline:
            return env
        st = _stat(pid)
        if st is None or st[0] in ("Z", "X"):
            return env
        select.select([], [], [], 0.0005)


def wait_for_no_leaks(test_id: str, timeout: float) -> dict[int, str]:
    """Poll until the test's processes are gone, or ``timeout``; return what is left."""
    deadline = time.monotonic() + timeout
    while True:
        leaks = find_leaks(test_id)
        if not leaks or time.monotonic() >= deadline:
            return leaks
        select.select([], [], [], 0.01)


def kill_leaks(leaks: dict[int, str]) -> None:
    for pid in leaks:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    me = os.getpid()
    for pid in leaks:
        st = _stat(pid)
        if st is not None and st[1] == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


@pytest.fixture(autouse=True)
def no_leaks():  # type: ignore[no-untyped-def]
    """Fail the test if it leaves any process running or any child unreaped."""
    if not LINUX:
        yield
        return
    test_id = secrets.token_hex(8)
    old = os.environ.get(TEST_ID_VAR)
    os.environ[TEST_ID_VAR] = test_id
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(TEST_ID_VAR, None)
        else:
            os.environ[TEST_ID_VAR] = old
    # How long processes that are being torn down may take to vanish.
    leaks = wait_for_no_leaks(test_id, timeout=float(os.environ.get("FORKWELL_LEAK_WAIT", "3")))
    if leaks:
        kill_leaks(leaks)
        pytest.fail("test left processes behind:\n  " + "\n  ".join(leaks.values()), pytrace=False)


def start_session_reaper() -> None:
    """Fork: the parent becomes a subreaper that reaps orphans; the child runs pytest."""
    if not LINUX or os.environ.get(REAPER_VAR) or os.getpid() == 1:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        return
    reaper = os.getpid()
    child = os.fork()
    if child == 0:
        os.environ[REAPER_VAR] = str(reaper)
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the test run gets Ctrl-C itself
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda s, f: os.kill(child, s))
    code = 1
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            code = code if code >= 0 else 128 - code
            break
    os._exit(code)


def pytest_configure(config: pytest.Config) -> None:
    start_session_reaper()
