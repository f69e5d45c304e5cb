"""The negative control: the leak fixture really fails tests that leak.

An inner pytest run (a real subprocess, with the same plugin) holds one clean
test and three leaky ones; the leaky ones must error at teardown, naming what
they left, and the leaked processes must be cleaned up by the fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INNER = '''
import os, subprocess
KEEP = []

def test_clean():
    subprocess.run(["true"], check=True)

def test_running_child():
    KEEP.append(subprocess.Popen(["sleep", "30"]))      # never waited for

def test_escaped_daemon():
    subprocess.run(["sh", "-c", "setsid sleep 31 &"], check=True)   # orphan keeps running

def test_unreaped_zombie():
    p = subprocess.Popen(["true"])
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
    KEEP.append(p)
'''


@pytest.mark.timeout(60)
def test_fixture_fails_leaky_tests(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    monkeypatch.setenv("FORKWELL_LEAK_WAIT", "0.3")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "leakcheck", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=3)
    out = result.stdout.str()
    assert "child still running" in out and "sleep 30" in out
    assert "process still running" in out and "sleep 31" in out
    assert "unreaped zombie child" in out
    assert "test_clean" not in "\n".join(line for line in result.outlines if "ERROR" in line)
