"""Fault injection: the kernel made to fail under forkwell, and the promise checked after.

Each test provokes the fault for real (an rlimit, a mount namespace, a
read-only bind mount, libfaketime moving the wall clock, a program that
misbehaves) and checks afterwards what forkwell promises: a clear one-line
error or event, no traceback, and nothing left running or unreaped (the
autouse leak check of tests/leakcheck.py sees every process these tests
start, in any namespace, by the ``FORKWELL_TEST_ID`` they inherit).

Faults that need root (another uid for RLIMIT_NPROC, mount namespaces) are
skipped with the reason when not root.  docs/reliability.md ("Faults tried")
lists each fault, how it is provoked, what forkwell does and the test here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import IS_ROOT, PY, public_sources, read_pids, running, wait_until
from leakcheck import TEST_ID_VAR, find_leaks

import forkwell

pytestmark = pytest.mark.timeout(60)

NEEDS_ROOT = pytest.mark.skipif(not IS_ROOT, reason="needs root (another uid, mount namespaces)")
HAVE_UNSHARE = shutil.which("unshare") is not None
NEEDS_UNSHARE = pytest.mark.skipif(not (IS_ROOT and HAVE_UNSHARE), reason="needs root and unshare(1)")
# An uid no account uses: RLIMIT_NPROC counts every process of the real uid,
# and `nobody` may be busy with another test or service at the same time.
LONELY_UID = 54321


def nothing_left() -> None:
    """Assert the test left no process, killing any it did first (so that a leak fails
    the test itself, not the autouse leak check's teardown as an error)."""
    leaks = find_leaks(os.environ[TEST_ID_VAR])
    for pid in leaks:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in leaks:
        wait_until(lambda pid=pid: not running(pid), 5, f"{pid} to die")
    assert not leaks, leaks


def toml_list(*argv: str) -> str:
    return json.dumps(list(argv))  # a JSON array of strings is a TOML array


def no_traceback(text: str) -> None:
    assert "Traceback" not in text and "Error:" not in text.replace("Error: ", "Error:x"), text


def cpu_seconds(pid: int) -> float:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def no_proc(*argv: str) -> list[str]:
    """``argv`` run in a mount namespace where /proc is an empty tmpfs (no /proc at all)."""
    script = 'mount -t tmpfs none /proc && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def as_uid(uid: int, *argv: str) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]


class Up:
    """A real ``forkwell up`` (optionally behind a prefix: prlimit, unshare, setpriv)."""

    def __init__(
        self,
        directory: Path,
        programs: str,
        *,
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        quiet: bool = False,
    ) -> None:
        self.dir = directory
        self.cfg = directory / "forkwell.toml"
        self.cfg.write_text("[supervisor]\nshutdown_timeout = 10\n\n" + textwrap.dedent(programs))
        self.sock = directory / ".forkwell" / "forkwell.sock"
        self.out_path = directory / "up.out"
        argv = [*prefix, PY, "-m", "forkwell", "up", "-c", str(self.cfg)]
        with self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [*argv, *(["--quiet"] if quiet else [])],
                stdout=out, stderr=subprocess.STDOUT, cwd=directory,
                env={**os.environ, **(env or {})},
            )  # fmt: skip

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def rows(self) -> dict[str, dict[str, Any]]:
        with forkwell.ControlClient(self.sock) as c:
            return {r["name"]: r for r in c.request("ps")["instances"]}

    def wait_state(self, name: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
        def there() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited {self.proc.returncode}: {self.output()}")
            try:
                return self.rows()[name]["state"] == state
            except (forkwell.ControlError, KeyError):
                return False

        wait_until(there, timeout, f"{name} {state}")
        return self.rows()[name]

    def down(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"supervisor did not stop on SIGTERM: {self.output()}") from None


@pytest.fixture
def ups(tmp_path: Path) -> Iterator[list[Up]]:
    made: list[Up] = []
    yield made
    for up in made:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()


def start_up(ups: list[Up], directory: Path, programs: str, **kwargs: Any) -> Up:
    up = Up(directory, programs, **kwargs)
    ups.append(up)
    return up


def public_dir(owner: int) -> Path:
    """A fresh directory owned by ``owner`` that it can reach (tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="forkwell-faults-"))
    os.chown(path, owner, owner)
    return path


IDLE = toml_list(PY, "-c", "import signal; print('up', flush=True); signal.pause()")


# -- EMFILE: a low RLIMIT_NOFILE -----------------------------------------------------

RUN_UNDER_NOFILE = """
import os, resource, sys, forkwell
spare = int(sys.argv[1])
used = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (used + spare, used + spare))
try:
    r = forkwell.run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.3, capture_output=True)
except forkwell.ForkwellError as e:
    print("error", type(e).__name__, e)
except OSError as e:
    print("oserror", e.errno, e)
else:
    print("ran", r.returncode, r.timed_out)
"""


READERS_UNDER_NOFILE = """
import errno, os, resource, signal
from forkwell._core import _proc, _tree
me, parent = os.getpid(), os.getppid()
tree = _tree.Tree("no-such-token", parent)
used = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, used + 8))
taken = []
try:
    while True:  # take every fd left: none free, whatever the numbering
        taken.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    assert e.errno == errno.EMFILE, e
def outcome(read):
    try:
        return repr(read())
    except OSError as e:
        return type(e).__name__ + ":" + errno.errorcode[e.errno]
print("stat", outcome(lambda: _proc.read_stat(me) is None))
print("name", outcome(lambda: _proc.name(me)))
print("members", outcome(lambda: tree.members()))
print("running", _proc.running(parent))
print("wait_gone", _proc.wait_gone(parent, 0.0))
os.close(taken.pop())  # one fd back: a missing process is gone again
print("gone", _proc.read_small("/proc/999999999/stat"))
"""


def test_proc_readers_without_a_free_fd_raise_rather_than_say_gone() -> None:
    # The core of the EMFILE bugs: each reader, with no fd left, must not answer
    # "that process is gone" about a process that runs (its own parent).
    out = subprocess.run([PY, "-c", READERS_UNDER_NOFILE], capture_output=True, text=True,
                         timeout=30, check=True)  # fmt: skip
    assert out.stdout.splitlines() == [
        "stat OSError:EMFILE",
        "name OSError:EMFILE",
        "members TreeUnreadable:EMFILE",
        "running True",  # kill(0) answers without an fd
        "wait_gone False",
        "gone None",  # and ENOENT means gone
    ], out


@pytest.mark.parametrize("spare", [0, 1, 2, 3, 4, 5, 6, 7, 8, 10])
def test_emfile_in_run_is_a_clear_error_and_leaves_nothing(spare: int) -> None:
    out = subprocess.run([PY, "-c", RUN_UNDER_NOFILE, str(spare)], capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    nothing_left()
    assert out.returncode == 0 and out.stderr == "", out
    line = out.stdout.strip()
    assert "\n" not in line, out
    # Either it ran to its deadline (its tree ended), or it said why it could not start.
    if line.startswith("ran"):
        # -15, or 143: the shell saw its foreground sleep die of the group's SIGTERM
        assert line in ("ran -15 True", "ran 143 True"), out
    else:
        assert line == "error SpawnError cannot start 'sh': Too many open files", out


# A /proc read that failed for want of fds used to read as "process gone": at
# 7-10 fds forkwell timeout hung at the deadline (it signalled nobody) and
# run() left a member at 6 spare fds.  Now a scan that cannot read /proc
# signals the root's process group and scans again after reaping.
@pytest.mark.parametrize("nofile", [5, 6, 7, 8, 9, 10, 11, 12, 16])
def test_emfile_in_forkwell_timeout_exits_125_with_one_line(nofile: int) -> None:
    argv = ["prlimit", f"--nofile={nofile}", PY, "-m", "forkwell", "timeout", "0.3",
            "sh", "-c", "sleep 30 & sleep 30"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung forkwell
        with contextlib.suppress(AssertionError):
            nothing_left()  # and the tree it left, which holds the pipes
        proc.communicate()
        raise
    out = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    if out.returncode == 124:  # enough fds after all: the deadline ended the tree
        assert out.stderr in ("", "Terminated\n"), out  # sh's word for its sleep
        return
    assert out.returncode == 125, out
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("forkwell timeout: "), out
    assert "Too many open files" in out.stderr, out


@pytest.mark.parametrize("nofile", [8, 16, 20, 24, 32])
def test_emfile_in_forkwell_up_fails_cleanly_and_stops_what_started(
    tmp_path: Path, ups: list[Up], nofile: int
) -> None:
    up = start_up(ups, tmp_path, f"""
        [programs.web]
        command = {IDLE}
        numprocs = 8
        start_retries = 2
        stop_timeout = 5
        """, prefix=("prlimit", f"--nofile={nofile}"))  # fmt: skip

    def settled() -> bool:
        text = up.output()
        return up.proc.poll() is not None or "autostart done" in text

    wait_until(settled, 20, "autostart to finish or the supervisor to exit")
    if up.proc.poll() is None:
        started = time.monotonic()
        assert up.down(15) == 0, up.output()
        # Stopping needs fds too (pidfds, /proc): it must not wait out shutdown_timeout.
        assert time.monotonic() - started < 6, up.output()
        text = up.output()
        assert "too many open files" in text.lower() or "8 up" in text, text
    else:
        text = up.output()
        assert up.proc.returncode == 1, text
        # Programs started before the loop, then one line says why it ended them.
        assert text.strip().splitlines()[-1] == (
            "forkwell up: cannot create its event loop: Too many open files"), text
    no_traceback(text)


# -- EAGAIN on fork: RLIMIT_NPROC as an unprivileged user ------------------------------


@NEEDS_ROOT
def test_eagain_on_fork_under_forkwell_up_is_a_failed_start(ups: list[Up]) -> None:
    directory = public_dir(LONELY_UID)
    try:
        # The supervisor, its watchdog and two programs: the rest cannot fork.
        up = start_up(ups, directory, """
            [programs.web]
            command = ["sleep", "30"]
            numprocs = 4
            start_retries = 2
            backoff_max = 0.2
            """, prefix=("prlimit", "--nproc=4", *as_uid(LONELY_UID)),
            env={"PYTHONPATH": str(public_sources())})  # fmt: skip
        wait_until(lambda: "autostart done" in up.output(), 20, "autostart done")
        rows = up.rows()
        states = sorted(r["state"] for r in rows.values())
        assert states.count("FATAL") >= 1 and "RUNNING" in states, (states, up.output())
        text = up.output()
        assert "Resource temporarily unavailable" in text, text
        assert up.down() == 0, up.output()
        no_traceback(up.output())
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@NEEDS_ROOT
def test_eagain_on_fork_in_forkwell_timeout_exits_125_with_one_line() -> None:
    argv = ["prlimit", "--nproc=1", *as_uid(LONELY_UID), PY, "-m", "forkwell", "timeout", "5", "true"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/",
                         env={**os.environ, "PYTHONPATH": str(public_sources())})  # fmt: skip
    assert out.returncode == 125, out
    assert out.stderr.count("\n") == 1, out
    assert out.stderr.startswith("forkwell timeout: cannot start 'true'"), out
    assert "Resource temporarily unavailable" in out.stderr, out


# -- ENOMEM: RLIMIT_AS on a child ------------------------------------------------------

GREEDY = "import sys; print('allocating', flush=True); b = bytearray(512 << 20); print('got it')"


def test_enomem_in_a_child_of_run_is_its_exit_status_and_stderr() -> None:
    result = forkwell.run(["prlimit", "--as=268435456", PY, "-c", GREEDY], capture_output=True)
    assert result.returncode == 1, result
    assert result.stdout == b"allocating\n", result
    assert result.stderr.rstrip().endswith(b"MemoryError"), result


def test_enomem_in_a_program_under_up_is_fatal_with_its_exit(tmp_path: Path, ups: list[Up]) -> None:
    up = start_up(ups, tmp_path, f"""
        [programs.greedy]
        command = {toml_list("prlimit", "--as=268435456", PY, "-c", GREEDY)}
        start_retries = 2
        backoff_max = 0.1
        """)  # fmt: skip
    up.wait_state("greedy:0", "FATAL")
    fatal = "greedy:0 EXITED -> FATAL (exited with status 1 after"
    wait_until(lambda: fatal in up.output(), 10, "the FATAL line")
    err = (tmp_path / ".forkwell" / "logs" / "greedy.0.stderr.log").read_text()
    assert err.count("MemoryError") == 2, err  # start_retries = 2: two starts
    assert up.down() == 0


# -- no /proc: a mount namespace with an empty tmpfs over it ---------------------------

TREE = "sleep 30 & setsid sleep 30 & sh -c 'sleep 30 &' ; sleep 30"
# Without /proc the process group is the only tree forkwell can know (the
# documented fallback): a setsid() escapee cannot be found, so it is not used.
GROUP_TREE = "sleep 30 & sh -c 'sleep 30 &' ; sleep 30"


@NEEDS_UNSHARE
def test_no_proc_forkwell_timeout_still_ends_the_tree() -> None:
    started = time.monotonic()
    out = subprocess.run(no_proc(PY, "-m", "forkwell", "timeout", "0.5", "sh", "-c", GROUP_TREE),
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 124 and out.stderr == "", out
    assert time.monotonic() - started < 8, out


@NEEDS_UNSHARE
def test_no_proc_run_still_ends_the_tree() -> None:
    code = (
        "import forkwell\n"
        f"r = forkwell.run(['sh', '-c', {GROUP_TREE!r}], timeout=0.5)\n"
        "print(r.returncode, r.timed_out)\n"
    )
    out = subprocess.run(no_proc(PY, "-c", code), capture_output=True, text=True, timeout=30)
    assert out.stdout == "-15 True\n" and out.stderr == "", out


@NEEDS_UNSHARE
def test_no_proc_forkwell_init_reaps_and_forwards() -> None:
    orphans = "sh -c 'sleep 0.1 &' ; sh -c 'sleep 0.1 &' ; sleep 0.3; exit 7"
    out = subprocess.run(no_proc(PY, "-m", "forkwell", "init", "--", "sh", "-c", orphans),
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 7 and out.stderr == "", out


@NEEDS_UNSHARE
def test_no_proc_forkwell_up_starts_and_stops(tmp_path: Path, ups: list[Up]) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! >> {pids}; sh -c 'sleep 30 & echo $! >> {pids}'; exec sleep 30"
    up = start_up(ups, tmp_path, f"""
        [programs.web]
        command = {toml_list("sh", "-c", script)}
        stop_timeout = 2
        """, prefix=tuple(no_proc()))  # fmt: skip
    row = up.wait_state("web:0", "RUNNING")
    kids = read_pids(pids, 2)
    assert all(running(p) for p in [row["pid"], *kids])
    assert up.down() == 0, up.output()
    assert not any(running(p) for p in [row["pid"], *kids]), up.output()
    no_traceback(up.output())


# -- no pidfd: the fallback forced by FORKWELL_NO_PIDFD=1 -------------------------------

NO_PIDFD = {"FORKWELL_NO_PIDFD": "1"}


def test_no_pidfd_switch_turns_pidfds_off() -> None:
    code = "from forkwell._core import _sys; print(_sys.HAVE_PIDFD)"
    env = {**os.environ, **NO_PIDFD}
    off = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert off.stdout == "False\n"
    env["FORKWELL_NO_PIDFD"] = "0"
    on = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert on.stdout == f"{hasattr(os, 'pidfd_open')}\n"


def test_no_pidfd_run_ends_the_tree_without_waiting_out_the_grace() -> None:
    code = (
        "import forkwell\n"
        f"r = forkwell.run(['sh', '-c', {TREE!r}], timeout=0.3, grace=10)\n"
        "print(r.returncode, r.timed_out, r.duration < 8)\n"
        "r = forkwell.run(['sh', '-c', 'sleep 30 & exit 3'], grace=10)\n"
        "print(r.returncode, r.duration < 8)\n"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, **NO_PIDFD})  # fmt: skip
    # -15, or 143: the shell may see its foreground sleep die of the same SIGTERM
    # and exit 143 a moment before its own SIGTERM lands; both are "terminated".
    assert out.stdout in ("-15 True True\n3 True\n", "143 True True\n3 True\n"), out
    assert out.stderr == "", out


def test_no_pidfd_forkwell_timeout() -> None:
    env = {**os.environ, **NO_PIDFD}
    started = time.monotonic()
    out = subprocess.run([PY, "-m", "forkwell", "timeout", "-k", "10", "0.3", "sh", "-c", TREE],
                         capture_output=True, text=True, timeout=30, env=env)  # fmt: skip
    assert out.returncode == 124 and out.stderr == "", out
    assert time.monotonic() - started < 8, "waited out the -k grace"
    out = subprocess.run([PY, "-m", "forkwell", "timeout", "5", "sh", "-c", "exit 3"],
                         capture_output=True, text=True, timeout=30, env=env)  # fmt: skip
    assert out.returncode == 3 and out.stderr == "", out


def test_no_pidfd_forkwell_init() -> None:
    orphans = "sh -c 'sleep 0.1 &' ; sh -c 'sleep 0.1 &' ; sleep 0.3; exit 7"
    out = subprocess.run([PY, "-m", "forkwell", "init", "--", "sh", "-c", orphans],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, **NO_PIDFD})  # fmt: skip
    assert out.returncode == 7 and out.stderr == "", out


def test_no_pidfd_forkwell_up_restarts_and_stops_without_spinning(
    tmp_path: Path, ups: list[Up]
) -> None:
    stubborn = toml_list("sh", "-c", "trap '' TERM; sleep 30 & wait")
    up = start_up(ups, tmp_path, f"""
        [programs.web]
        command = {IDLE}

        [programs.stubborn]
        command = {stubborn}
        stop_timeout = 1.5
        """, env=NO_PIDFD)  # fmt: skip
    web = up.wait_state("web:0", "RUNNING")
    up.wait_state("stubborn:0", "RUNNING")
    os.kill(web["pid"], signal.SIGKILL)  # a crash: seen without a pidfd, restarted
    wait_until(lambda: up.rows()["web:0"]["pid"] not in (None, web["pid"])
               and up.rows()["web:0"]["state"] == "RUNNING", 10, "web restarted")  # fmt: skip
    stubborn_pid = up.rows()["stubborn:0"]["pid"]
    cpu0, wall0 = cpu_seconds(up.proc.pid), time.monotonic()
    with forkwell.ControlClient(up.sock) as c:
        c.request("stop", {"names": ["stubborn"]}, timeout=30)
    took = time.monotonic() - wall0
    cpu = cpu_seconds(up.proc.pid) - cpu0
    assert not running(stubborn_pid)
    assert 1.4 <= took < 6, (took, up.output())  # its 1.5 s grace, then SIGKILL
    # Without pidfds the grace is polled: gently, not in a busy loop.
    assert cpu / took < 0.25, (cpu, took)
    assert up.down() == 0, up.output()
    no_traceback(up.output())


# -- a read-only state directory ----------------------------------------------------------


@NEEDS_UNSHARE
def test_read_only_state_directory_is_one_line_and_starts_nothing(
    tmp_path: Path, ups: list[Up]
) -> None:
    state = tmp_path / ".forkwell"
    state.mkdir(mode=0o700)
    script = f'mount --bind {state} {state} && mount -o remount,bind,ro {state} && exec "$@"'
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")
    pids = tmp_path / "pids"
    up = start_up(ups, tmp_path, f"""
        [programs.web]
        command = {toml_list("sh", "-c", f"echo $$ >> {pids}; exec sleep 30")}
        """, prefix=prefix)  # fmt: skip
    assert up.proc.wait(20) == 1, up.output()
    lines = up.output().strip().splitlines()
    assert len(lines) == 1 and "Read-only file system" in lines[0], lines
    assert not pids.exists(), "a program was started"


@NEEDS_ROOT
def test_state_directory_not_writable_by_the_user_is_one_line(ups: list[Up]) -> None:
    directory = public_dir(LONELY_UID)
    try:
        (directory / ".forkwell").mkdir(mode=0o755)  # root's, not the user's
        # A command the user can run: only the state directory is wrong here.
        up = start_up(ups, directory, '[programs.web]\ncommand = ["sleep", "100"]\n',
                      prefix=as_uid(LONELY_UID), env={"PYTHONPATH": str(public_sources())})  # fmt: skip
        assert up.proc.wait(20) == 1, up.output()
        lines = up.output().strip().splitlines()
        assert len(lines) == 1 and "Permission denied" in lines[0], lines
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- clock jumps: the wall clock moves, no deadline does ---------------------------------

FAKETIME_LIB = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
NEEDS_FAKETIME = pytest.mark.skipif(FAKETIME_LIB is None, reason="needs libfaketime (Debian faketime)")
DAY = 86400


def faketime_env(offset_file: Path) -> dict[str, str]:
    """libfaketime with the wall clock read from ``offset_file`` on every call."""
    offset_file.write_text("+10d\n")  # 10 days ahead from the start: the fake is visible
    return {
        "LD_PRELOAD": str(FAKETIME_LIB),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def wall_clock_under(env: dict[str, str]) -> float:
    out = subprocess.run(["date", "+%s"], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})  # fmt: skip
    return float(out.stdout)


JUMPS = pytest.mark.parametrize("jump", ["+11d", "+9d"], ids=["forward-1d", "back-1d"])


@NEEDS_FAKETIME
@JUMPS
def test_clock_jump_does_not_move_the_timeout_deadline(tmp_path: Path, jump: str) -> None:
    env = faketime_env(tmp_path / "offset")
    assert abs(wall_clock_under(env) - time.time() - 10 * DAY) < 60  # the fake works
    stamp = tmp_path / "started"
    child = f"echo started > {stamp}; exec sleep 30"
    started = time.monotonic()
    proc = subprocess.Popen([PY, "-m", "forkwell", "timeout", "1.5", "sh", "-c", child],
                            env={**os.environ, **env})  # fmt: skip
    wait_until(stamp.exists, 10, "the command to start")
    (tmp_path / "offset").write_text(jump + "\n")
    assert abs(wall_clock_under(env) - time.time() - int(jump[1:-1]) * DAY) < 60
    assert proc.wait(20) == 124
    took = time.monotonic() - started
    assert 1.4 <= took < 4, took


@NEEDS_FAKETIME
@JUMPS
def test_clock_jump_does_not_move_backoff_or_grace(tmp_path: Path, ups: list[Up], jump: str) -> None:
    env = faketime_env(tmp_path / "offset")
    starts = tmp_path / "starts"  # /proc/uptime: a monotonic clock the programs share with us
    up = start_up(ups, tmp_path, f"""
        [programs.crasher]
        command = {toml_list("sh", "-c", f"cut -d' ' -f1 /proc/uptime >> {starts}; exit 1")}
        start_retries = 100
        backoff_max = 0.5

        [programs.stubborn]
        command = {toml_list("sh", "-c", "trap '' TERM; sleep 30 & wait")}
        stop_timeout = 1.5
        """, env=env, quiet=True)  # fmt: skip
    def count() -> int:
        return len(starts.read_text().split()) if starts.exists() else 0

    wait_until(lambda: count() >= 3, 20, "3 starts")
    (tmp_path / "offset").write_text(jump + "\n")
    before = count()
    wait_until(lambda: count() >= before + 4, 20, "4 more starts")
    times = [float(x) for x in starts.read_text().split()]
    gaps = [b - a for a, b in zip(times[before - 1 :], times[before:], strict=False)]
    # 0.4 s, then 0.5 s (backoff_max): neither at once nor never
    assert all(0.3 <= g <= 1.5 for g in gaps), gaps
    pid = up.wait_state("stubborn:0", "RUNNING")["pid"]
    (tmp_path / "offset").write_text("+10d\n")
    with forkwell.ControlClient(up.sock) as c:
        started = time.monotonic()
        # The jump lands inside the 1.5 s grace: the supervisor reads the clock
        # when the stop begins and the program has not been SIGKILLed yet.
        (tmp_path / "offset").write_text(jump + "\n")
        c.request("stop", {"names": ["stubborn"]}, timeout=30)
    took = time.monotonic() - started
    assert not running(pid)
    assert 1.4 <= took < 4, took
    assert up.down() == 0


# -- misbehaving programs ------------------------------------------------------------------


def test_program_that_closes_stdout_and_stderr(tmp_path: Path, ups: list[Up]) -> None:
    up = start_up(ups, tmp_path, f"""
        [programs.mute]
        command = {toml_list("sh", "-c", "echo bye; exec >&- 2>&-; exec sleep 30")}
        """)  # fmt: skip
    pid = up.wait_state("mute:0", "RUNNING")["pid"]
    wait_until(lambda: "mute:0   | bye" in up.output() or "mute:0 | bye" in up.output(), 10, "bye")
    cpu0, wall0 = cpu_seconds(up.proc.pid), time.monotonic()
    wait_until(lambda: time.monotonic() - wall0 >= 0.5, 2, "half a second")  # EOF must not spin
    assert cpu_seconds(up.proc.pid) - cpu0 < 0.1
    assert up.rows()["mute:0"]["state"] == "RUNNING"
    assert up.down() == 0 and not running(pid)
    result = forkwell.run(["sh", "-c", "echo bye; exec >&- 2>&-; sleep 0.2; exit 4"],
                          capture_output=True, timeout=10)  # fmt: skip
    assert (result.returncode, result.stdout, result.timed_out) == (4, b"bye\n", False)


def test_program_that_writes_without_newlines(tmp_path: Path, ups: list[Up]) -> None:
    size = 3 << 20
    writer = f"""
import os, signal, sys
for i in range({size} // 4096):
    os.write(1, bytes([65 + i % 26]) * 4096)
signal.pause()
"""
    up = start_up(ups, tmp_path, f"""
        [programs.nolines]
        command = {toml_list(PY, "-c", writer)}
        log_markers = false  # the log is compared with the program's bytes
        """, quiet=True)  # fmt: skip
    log = tmp_path / ".forkwell" / "logs" / "nolines.0.stdout.log"
    # All of it reaches the log while the program still runs: a partial line is not held back.
    wait_until(lambda: log.exists() and log.stat().st_size >= size, 20, "3 MB in the log")
    assert status_kib(up.proc.pid, "VmHWM") < 200 * 1024
    assert up.down() == 0
    expected = b"".join(bytes([65 + i % 26]) * 4096 for i in range(size // 4096))
    assert log.read_bytes() == expected


GIGABYTE_WRITER = """
import sys
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    out.write(i.to_bytes(8, "big") * 131072)  # 1 MiB blocks, each naming its index
out.flush()
"""


# 1 GiB by hand (FORKWELL_FAULTS_MIB=1024: about 20 s on a loaded 2-core machine,
# mostly the supervisor's copy); CI copies 256 MiB so the file stays quick.
FIREHOSE_MIB = int(os.environ.get("FORKWELL_FAULTS_MIB", "256"))


def test_program_that_writes_1_gb_loses_no_byte(tmp_path: Path, ups: list[Up]) -> None:
    mib = FIREHOSE_MIB
    up = start_up(ups, tmp_path, f"""
        [programs.firehose]
        command = {toml_list(PY, "-c", GIGABYTE_WRITER, str(mib))}
        restart = "never"
        log_max_bytes = "2GB"
        log_markers = false  # the log is compared with the program's bytes
        """, quiet=True)  # fmt: skip
    up.wait_state("firehose:0", "EXITED", timeout=50)
    log = tmp_path / ".forkwell" / "logs" / "firehose.0.stdout.log"
    wait_until(lambda: log.stat().st_size >= mib << 20, 20, "1 GB in the log")
    # The supervisor copied 1 GB through a bounded buffer: its peak RSS stays small.
    assert status_kib(up.proc.pid, "VmHWM") < 200 * 1024
    assert up.down() == 0
    got, want = hashlib.sha256(), hashlib.sha256()
    with log.open("rb") as f:
        while block := f.read(1 << 20):
            got.update(block)
    for i in range(mib):
        want.update(i.to_bytes(8, "big") * 131072)
    assert log.stat().st_size == mib << 20 and got.hexdigest() == want.hexdigest()
    log.unlink()


FORKER = """
import os, signal, sys
pids = []
for _ in range(int(sys.argv[2])):
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    pids.append(pid)
with open(sys.argv[1], "w") as f:
    f.write("\\n".join(map(str, pids)) + "\\n")
"""


def test_program_that_forks_1000_children_and_exits(tmp_path: Path, ups: list[Up]) -> None:
    pids_file = tmp_path / "pids"
    up = start_up(ups, tmp_path, f"""
        [programs.forker]
        command = {toml_list(PY, "-c", FORKER, str(pids_file), "1000")}
        restart = "never"
        stop_timeout = 2
        """, quiet=True)  # fmt: skip
    pids = read_pids(pids_file, 1000, timeout=30)
    up.wait_state("forker:0", "EXITED", timeout=30)
    # Its exit ends what it left: all 1000, reaped (the supervisor is their subreaper).
    wait_until(lambda: not any(running(p) for p in pids), 20, "the 1000 children to end")
    assert up.down() == 0
    # run() the same way; 300 children: forking is what costs here (~7 ms each under load).
    result = forkwell.run([PY, "-c", FORKER, str(pids_file), "300"], grace=2, timeout=30)
    assert result.returncode == 0 and not result.timed_out
    assert not any(running(p) for p in read_pids(pids_file, 300))


ESCAPER = """
import os, signal, sys
pids = []
for how in ("setsid", "setpgid"):
    pid = os.fork()
    if pid == 0:
        os.setsid() if how == "setsid" else os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # survives exec: only SIGKILL ends it
        os.execv("/bin/sleep", ["not-sleep-" + how, "30"])
    pids.append(pid)
with open(sys.argv[1], "w") as f:
    f.write("\\n".join(map(str, [os.getpid(), *pids])) + "\\n")
os.execv("/bin/sleep", ["renamed-parent", "30"])
"""


def test_program_that_changes_group_session_and_argv0(tmp_path: Path, ups: list[Up]) -> None:
    pids_file = tmp_path / "pids"
    up = start_up(ups, tmp_path, f"""
        [programs.escaper]
        command = {toml_list(PY, "-c", ESCAPER, str(pids_file))}
        stop_timeout = 1
        """, quiet=True)  # fmt: skip
    pids = read_pids(pids_file, 3)
    wait_until(lambda: all(Path(f"/proc/{p}/cmdline").read_bytes().startswith((b"not-sleep", b"renamed"))
                           for p in pids), 10, "the renames")  # fmt: skip
    assert len({os.getsid(p) for p in pids}) == 2 and len({os.getpgid(p) for p in pids}) == 3
    # Spawned before the event loop (and its control socket) exists: wait for it.
    up.wait_state("escaper:0", "RUNNING")
    with forkwell.ControlClient(up.sock) as c:
        c.request("stop", {"names": ["escaper"]}, timeout=30)
    assert not any(running(p) for p in pids)
    assert up.down() == 0
