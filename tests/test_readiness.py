import socket

import pytest

from forkwell._core._readiness import ReadySpec, parse_ready, tcp_accepts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("exec", ReadySpec("exec")),
        ("notify", ReadySpec("notify")),
        (" NOTIFY ", ReadySpec("notify")),
        ("tcp:127.0.0.1:8080", ReadySpec("tcp", host="127.0.0.1", port=8080)),
        ("tcp:localhost:1", ReadySpec("tcp", host="localhost", port=1)),
        ("tcp:8080", ReadySpec("tcp", host="127.0.0.1", port=8080)),
        ("tcp:[::1]:65535", ReadySpec("tcp", host="::1", port=65535)),
        ("delay:2", ReadySpec("delay", seconds=2.0)),
        ("delay:1.5s", ReadySpec("delay", seconds=1.5)),
        ("delay:1m", ReadySpec("delay", seconds=60.0)),
        ("cmd:test -e /tmp/x", ReadySpec("cmd", command="test -e /tmp/x")),
    ],
)
def test_parse_ready_valid(text: str, expected: ReadySpec) -> None:
    assert parse_ready(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "expected exec, notify"),
        ("bogus", "expected exec, notify"),
        ("tcp", "expected exec, notify"),
        ("exec:now", "takes no argument"),
        ("tcp:host:0", "PORT 1-65535"),
        ("tcp:host:70000", "PORT 1-65535"),
        ("tcp:host:http", "PORT 1-65535"),
        ("tcp::80", "host is empty"),
        ("tcp:[::1]80", "tcp:[IPV6]:PORT"),
        ("delay:soon", "delay:SECONDS"),
        ("delay:-1", "delay:SECONDS"),
        ("cmd:  ", "cmd:COMMAND"),
    ],
)
def test_parse_ready_invalid_is_one_line(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match="invalid readiness") as info:
        parse_ready(text)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_str_round_trips() -> None:
    for text in ("exec", "notify", "tcp:127.0.0.1:80", "tcp:[::1]:80", "delay:2.5", "cmd:true"):
        assert str(parse_ready(text)) == text
        assert parse_ready(str(parse_ready(text))) == parse_ready(text)


def test_tcp_accepts_listening_port_and_not_closed_one() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        # Bound but not listening: connections are refused.
        assert tcp_accepts("127.0.0.1", port, 1.0) is False
        server.listen()
        assert tcp_accepts("127.0.0.1", port, 1.0) is True
    assert tcp_accepts("127.0.0.1", port, 1.0) is False


def test_tcp_accepts_unresolvable_host_is_false() -> None:
    assert tcp_accepts("no-such-host.invalid", 80, 0.5) is False


def test_a_probe_cancelled_in_its_first_iteration_leaves_no_coroutine_unawaited() -> None:
    # The process exits in the very loop iteration it was spawned in (seen
    # under load): the probe is cancelled before its task took one step.
    import asyncio
    import gc
    import types
    from pathlib import Path

    from forkwell._supervisor._config import parse_config
    from forkwell._supervisor._probes import Readiness

    data = {"programs": {"p": {"command": "true", "ready": "delay:5"}}}
    cfg = parse_config(data, Path("forkwell.toml")).programs["p"]
    loop = asyncio.new_event_loop()
    try:
        host = types.SimpleNamespace(loop=loop, aio_loop=loop)
        output = types.SimpleNamespace(watch=None)  # what a log:REGEX probe would watch
        readiness = Readiness(host, lambda how: None, lambda: None, lambda why: None, output)  # type: ignore[arg-type]
        readiness.start(cfg, dict)
        readiness.cancel()
        loop.run_until_complete(asyncio.sleep(0))  # one turn: the cancelled task ends
        gc.collect()  # an unawaited coroutine warns here, and the warning fails the test
    finally:
        loop.close()
