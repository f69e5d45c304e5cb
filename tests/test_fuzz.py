"""Property-based fuzzing of every parser and protocol that takes outside input (Hypothesis).

Each target, fed arbitrary and mutated input, either succeeds or raises
forkwell's documented error with a one-line message: never another
exception, never a hang (pytest-timeout bounds every test), never unbounded
memory (inputs are bounded, and the servers' own limits are exercised).

Budgets: the ``ci`` profile (the default, a few seconds per target) and
``long`` for a run by hand: ``pytest tests/test_fuzz.py --hypothesis-profile=long``.
A crashing example Hypothesis finds goes into the ``@example`` list of its
test, so it stays a regression test.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_control import FakeSupervisor, Served, raw

from forkwell import ConfigError, load_config
from forkwell._core._duration import parse_duration, parse_signal
from forkwell._core._notify import NotifyListener
from forkwell._core._readiness import parse_ready
from forkwell._daemon import _handshake

# Each target runs its profile's examples; on a loaded single core that takes minutes.
pytestmark = pytest.mark.timeout(300)


def one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message, message


# -- small parsers --------------------------------------------------------------------

DURATION_LIKE = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"\A[ +-]?[0-9.eE+-]{0,12}[smhdSMHD]?\Z"),
    st.sampled_from(["inf", "infinity", "nan", "1e999", "-0", "0x10", "1_000", "\uff11\uff10"]),
)


@given(DURATION_LIKE)
@example("nan")
@example("1e999d")
def test_parse_duration_accepts_or_says_why(text: str) -> None:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        one_line(str(exc))
    else:
        assert value >= 0 and not math.isnan(value)


@given(st.one_of(st.text(max_size=20), st.integers(-(2**70), 2**70)))
@example("SIGRTMIN+1")
@example(2**64)
def test_parse_signal_accepts_or_says_why(text: str | int) -> None:
    try:
        sig = parse_signal(text)
    except ValueError as exc:
        one_line(str(exc))
    else:
        assert 0 < int(sig) < 128


@given(st.one_of(st.text(max_size=60), st.from_regex(r"\A(tcp|delay|cmd|exec|notify):.{0,30}\Z")))
def test_parse_ready_accepts_or_says_why(text: str) -> None:
    try:
        parse_ready(text)
    except ValueError as exc:
        one_line(str(exc))


# -- the config file ----------------------------------------------------------------

GOOD_CONFIG = b"""\
[supervisor]
shutdown_timeout = "30s"
log_dir = "logs"

[programs.web]
command = ["python3", "-m", "http.server", "8000"]
ready = "tcp:127.0.0.1:8000"
environment = { PORT = "8000" }
stop_signal = "INT"

[programs.worker]
command = "python3 worker.py --queue jobs"
numprocs = 2
depends_on = ["web"]
restart = "always"
log_max_bytes = "10MB"
"""


def check_config(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "forkwell.toml"
    path.write_bytes(data)
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert exc.errors
        for line in exc.errors:
            one_line(line)
            assert line.startswith(str(path)), line
    else:
        for name, program in config.programs.items():
            assert program.name == name and program.command and program.numprocs >= 0


@given(st.binary(max_size=400))
def test_config_of_random_bytes(tmp_path: Path, data: bytes) -> None:
    check_config(tmp_path, data)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 40))]
    return bytes(data)


@given(mutated(GOOD_CONFIG))
def test_config_of_mutated_valid_files(tmp_path: Path, data: bytes) -> None:
    check_config(tmp_path, data)


TOML_VALUE = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=True),
        st.text(max_size=12),
    ),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)
KEYS = st.sampled_from(
    [
        "command",
        "numprocs",
        "ready",
        "depends_on",
        "stop_signal",
        "umask",
        "environment",
        "directory",
        "restart",
        "success_exit_codes",
        "log_max_bytes",
        "min_uptime",
        "start_retries",
        "user",
        "nope",
    ]
)


def toml_literal(value: object) -> str:
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return json.dumps(value)


@given(st.dictionaries(KEYS, TOML_VALUE, max_size=8))
def test_config_with_wrong_types_everywhere(tmp_path: Path, table: dict[str, object]) -> None:
    lines = ["[programs.p]"] + [f"{k} = {toml_literal(v)}" for k, v in table.items()]
    check_config(tmp_path, "\n".join(lines).encode())


# -- the daemon's start handshake ---------------------------------------------------

LINES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda k, a: f"{k} {a}".encode(),
        st.sampled_from([k.value for k in _handshake.Kind]),
        st.text(max_size=40),
    ),
)


@given(st.lists(LINES, max_size=12), st.integers(1, 64))
def test_handshake_decoder_takes_anything_in_any_chunks(lines: list[bytes], chunk: int) -> None:
    stream = b"\n".join(lines) + b"\n"
    decoder = _handshake.Decoder()
    outcome = _handshake.Outcome()
    for at in range(0, len(stream), chunk):
        for message in decoder.feed(stream[at : at + chunk]):
            outcome.record(message)
    one_line(outcome.describe(10.0))


# -- NOTIFY_SOCKET ------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    lst = NotifyListener()
    yield lst
    lst.close()


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=600),
            st.builds(lambda k, v: f"{k}={v}".encode(), st.text(max_size=20), st.text(max_size=40)),
        ),
        max_size=10,
    )
)
@example([b"READY=1\nSTATUS=x" * 1000])  # larger than a notification may be
def test_notify_listener_takes_any_datagram(listener: NotifyListener, grams: list[bytes]) -> None:
    address = listener.path if not listener.path.startswith("@") else "\0" + listener.path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for gram in grams:
            try:
                s.sendto(gram, address)
            except OSError:
                continue  # too large for the socket buffer: the kernel refuses, fine
    got = listener.receive()
    assert all(isinstance(k, str) and isinstance(v, str) for m in got for k, v in m.items())
    assert all("_PID" in m for m in got)  # credentials: the kernel's, never the sender's words


# -- the control socket -------------------------------------------------------------


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Served]:
    """A real ControlServer in front of the protocol tests' small supervisor double."""
    logs = tmp_path / "logs"
    logs.mkdir()
    server = Served(FakeSupervisor(logs), tmp_path / "run" / "ctl.sock")
    try:
        yield server
    finally:
        server.close()


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4))
def test_control_socket_survives_anything(control: Served, payloads: list[bytes]) -> None:
    for payload in payloads:
        reply = raw(control.path, payload, read=b"\n" in payload, timeout=10)
        assert len(reply) < 70_000
    with control.client() as client:  # and it still serves a real request
        assert client.request("hello")["pid"] == os.getpid()


def test_control_socket_huge_and_interleaved_frames(control: Served) -> None:
    big = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    big.connect(str(control.path))
    half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    half.connect(str(control.path))
    try:
        half.sendall(b'{"v": 1, "cmd": "p')  # half a request, left hanging
        began = time.monotonic()
        try:
            big.sendall(b"x" * (1 << 20) + b"\n")  # a megabyte line
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = big.recv(65536)
        assert b"too_large" in answer or answer == b""
        with control.client() as client:  # others are served meanwhile
            assert client.request("ps")["instances"] is not None
        assert time.monotonic() - began < 10
    finally:
        big.close()
        half.close()


# The importers (docs/formats.md): each format's own reader and then forkwell's
# validation, fed random and mutated files.  The real examples are the seeds.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FORMATS = {
    "Procfile": (EXAMPLES / "Procfile").read_bytes(),
    "supervisord.conf": (EXAMPLES / "supervisord.conf").read_bytes(),
    "process-compose.yaml": (EXAMPLES / "process-compose.yaml").read_bytes(),
}


def check_imported(tmp_path: Path, name: str, data: bytes) -> None:
    from forkwell._supervisor._formats._load import load

    path = tmp_path / name
    path.write_bytes(data)
    try:
        loaded = load(path)
    except ConfigError as exc:
        assert exc.errors
        for line in exc.errors:
            one_line(line)
    else:
        for pname, program in loaded.config.programs.items():
            assert program.name == pname and program.command


@pytest.mark.parametrize("name", list(FORMATS))
@given(data=st.data())
def test_every_importer_takes_mutated_files(tmp_path: Path, name: str, data: st.DataObject) -> None:
    pytest.importorskip("yaml") if name.endswith(".yaml") else None
    check_imported(tmp_path, name, data.draw(mutated(FORMATS[name])))


@pytest.mark.parametrize("name", list(FORMATS))
@given(text=st.text(max_size=300))
def test_every_importer_takes_random_text(tmp_path: Path, name: str, text: str) -> None:
    pytest.importorskip("yaml") if name.endswith(".yaml") else None
    check_imported(tmp_path, name, text.encode("utf-8", "surrogatepass"))


@given(text=st.text(max_size=300))
def test_dotenv_takes_anything(tmp_path: Path, text: str) -> None:
    # Through the Procfile reader, as a user meets it: .env beside the Procfile.
    (tmp_path / ".env").write_text(text, errors="surrogatepass")
    check_imported(tmp_path, "Procfile", b"web: true\n")


@pytest.mark.parametrize(
    "text",
    [
        # Found by test_every_importer_takes_mutated_files: a NUL in a path
        # raised ValueError from os.path.realpath (a traceback, exit 1).
        '[supervisor]\nlog_dir = "a\\u0000b"\n[programs.a]\ncommand = "true"\n',
        '[programs.a]\ncommand = ["true", "a\\u0000"]\n',
        '[programs.a]\ncommand = "true"\nenvironment = { A = "x\\u0000" }\n',
    ],
)
def test_a_nul_byte_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_config_strict(tmp_path, text.encode())
    assert any("NUL byte" in e for e in info.value.errors)


def check_config_strict(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "forkwell.toml"
    path.write_bytes(data)
    load_config(path)
