import os
import pwd
import select
import socket
import stat
import subprocess
import sys
import time

import pytest

from forkwell._core import _notify
from forkwell._core._notify import (
    NotifyListener,
    notify,
    notify_ready,
    notify_status,
    notify_stopping,
)


def _wait_messages(
    listener: NotifyListener, count: int, timeout: float = 10.0
) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    got: list[dict[str, str]] = []
    while len(got) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(got)} of {count} notifications arrived: {got}"
        select.select([listener], [], [], remaining)
        got += listener.receive()
    return got


def test_unset_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify_ready() is False
    assert notify_status("x") is False
    assert notify_stopping() is False


def test_listener_private_dir_and_cleanup() -> None:
    listener = NotifyListener()
    directory = os.path.dirname(listener.path)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(listener.path).st_mode)
    assert listener.receive() == []
    listener.close()
    assert not os.path.exists(directory)
    listener.close()  # idempotent


@pytest.mark.parametrize("abstract", [False, True])
def test_child_process_notifies_path_and_abstract(abstract: bool) -> None:
    with NotifyListener(abstract=abstract) as listener:
        assert listener.path.startswith("@") == abstract
        env = {**os.environ, **listener.environ()}
        code = (
            "from forkwell._core._notify import *; import sys;"
            "assert notify_status('loading'); assert notify_ready('up');"
            "assert notify_stopping()"
        )
        subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=30)
        got = _wait_messages(listener, 3)
    assert got[0]["STATUS"] == "loading"
    assert got[1]["READY"] == "1"
    assert got[1]["STATUS"] == "up"
    assert got[1]["MAINPID"] == got[1]["_PID"]
    assert got[2]["STOPPING"] == "1"
    # Trusted fields come from the kernel (SO_PASSCRED), not from the sender.
    assert got[0]["_UID"] == str(os.getuid())
    assert int(got[0]["_PID"]) not in (0, os.getpid())


def test_sender_cannot_forge_trusted_fields() -> None:
    with NotifyListener() as listener, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1\n_PID=1\ngarbage\n=x\n", listener.path)
        (msg,) = _wait_messages(listener, 1)
    assert msg["READY"] == "1"
    assert msg["_PID"] == str(os.getpid())
    assert "garbage" not in msg
    assert "" not in msg


def test_oversized_datagram_is_dropped_and_next_one_kept() -> None:
    with NotifyListener() as listener, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"STATUS=" + b"x" * _notify.MAX_MESSAGE + b"\n", listener.path)
        s.sendto(b"READY=1\n", listener.path)
        deadline = time.monotonic() + 10
        got: list[dict[str, str]] = []
        while not got:
            assert time.monotonic() < deadline
            select.select([listener], [], [], 1.0)
            got = listener.receive()
    assert [m["READY"] for m in got] == ["1"]


def test_invalid_fields_and_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="invalid field name"):
        notify(ready=1)
    with pytest.raises(ValueError, match="newline"):
        notify(STATUS="a\nb")
    with pytest.raises(ValueError, match="no fields"):
        notify()
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    with pytest.raises(ValueError, match="neither an absolute path"):
        notify_ready()


def test_unreachable_socket_raises_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = str(tmp_path / "gone")
    monkeypatch.setenv("NOTIFY_SOCKET", missing)
    with pytest.raises(OSError, match=r"cannot send to .*gone"):
        notify_ready()


def test_local_hook_receives_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    seen: list[dict[str, str]] = []
    _notify._set_local_hook(lambda f: seen.append(dict(f)) is None)
    try:
        assert notify_ready() is True
    finally:
        _notify._set_local_hook(None)
    assert seen == [{"READY": "1", "MAINPID": str(os.getpid())}]
    assert notify_ready() is False


@pytest.mark.root
def test_uid_lets_unprivileged_child_send() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch the sender to user nobody")
    nobody = pwd.getpwnam("nobody")
    with NotifyListener(uid=nobody.pw_uid) as listener:
        env = {**os.environ, **listener.environ()}
        # The system interpreter: ours lives under /root, which nobody cannot enter.
        code = (
            "import os, socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM);"
            "s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])"
        )
        subprocess.run(
            ["/usr/bin/python3", "-c", code],
            check=True,
            env=env,
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            timeout=30,
            cwd="/",
        )
        (msg,) = _wait_messages(listener, 1)
    assert msg["_UID"] == str(nobody.pw_uid)
