"""``forkwell probe``: is it up?  Exit 0 or 1, for exec probes, init containers, ExecStartPost=.

Lean on purpose (Kubernetes runs it every few seconds in every pod): an
HTTP or TCP probe imports neither asyncio, tomllib, the engine nor the
control client; ``ready`` and ``live`` import what ``forkwell ps`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import SimpleNamespace

from ._options import CONFIG, DURATION, SOCKET, Command, Operand, Option
from ._parser import parse_or_report as _parse_or_report

EXIT_UP = 0
EXIT_DOWN = 1
EXIT_USAGE = 2
TIMEOUT = 1.0  # one try's default, as a Kubernetes probe's timeoutSeconds

PROBE = Command(
    "probe",
    description="""\
Probe TARGET once and exit 0 if it is up, 1 (with one line saying why) if it
is not.  The forms are those of a program's 'ready' setting, plus the local
supervisor's own state, so one command serves Kubernetes exec probes and init
containers and systemd's ExecStartPost=.""",
    options=(
        Option(("-t", "--timeout"), "DURATION",
               "how long one probe may take (default 1s); with --wait, how long to keep "
               "trying (default: no limit; 0: no limit)", DURATION),
        Option(("-w", "--wait"), None,
               "probe every 0.1s until TARGET is up or --timeout passed"),
        CONFIG,
        SOCKET,
    ),
    operands=(Operand("TARGET", "what to probe (see below)", missing="no TARGET given"),),
    notes="""\
TARGET is one of:
  http://HOST[:PORT]/PATH  a GET is answered 200-399 (also https://; the
                           certificate is not verified, as the kubelet does not)
  tcp:HOST:PORT            the port accepts a connection (tcp:PORT: 127.0.0.1)
  cmd:COMMAND              /bin/sh -c COMMAND exits 0
  ready                    every autostart program of the local supervisor is
                           up (what 'forkwell ps' exits 0 for)
  live                     the local supervisor answers on its control socket
-c and --socket say which supervisor 'ready' and 'live' ask (as for 'forkwell ps').""",
    exits=(
        ("0", "up"),
        ("1", "not up (one line on stderr says why)"),
        ("2", "bad usage, or a TARGET that is not one of the forms"),
    ),
    examples=(
        "forkwell probe http://127.0.0.1:8000/health",
        "forkwell probe --wait --timeout 30 tcp:db:5432    # an init container",
        "forkwell probe ready -c /app/forkwell.toml        # a readinessProbe",
    ),
)  # fmt: skip
DECLARED = {"probe": PROBE}


def main(argv: list[str], *, prog: str, command: str) -> int:
    args = _parse_or_report(PROBE, argv, prog)
    if isinstance(args, int):
        return args
    timeout: float | None = args.timeout
    if args.wait:
        timeout = timeout or None  # 0 or absent: no limit
    elif timeout is None:
        timeout = TIMEOUT
    elif timeout <= 0:
        return _usage(prog, "--timeout must be more than 0 (or give --wait)")
    target = args.target.strip()
    if target.lower() in ("ready", "live"):
        probe = _supervisor_probe(target.lower(), args)
    else:
        from .._core._probe import check, parse_target

        try:
            parsed = parse_target(target)
        except ValueError as exc:
            return _usage(prog, str(exc))

        def probe(seconds: float) -> str | None:
            return check(parsed, seconds)

    try:
        if args.wait:
            from .._core._probe import wait

            why = wait(probe, timeout)
        else:
            assert timeout is not None
            why = probe(timeout)
    except KeyboardInterrupt:
        return 130
    if why is None:
        return EXIT_UP
    print(f"{prog}: {why}", file=sys.stderr)
    return EXIT_DOWN


def _usage(prog: str, message: str) -> int:
    print(f"{prog}: {message} (see '{prog} --help')", file=sys.stderr)
    return EXIT_USAGE


def _supervisor_probe(kind: str, args: SimpleNamespace) -> Callable[[float], str | None]:
    """One try of ``ready`` or ``live``: ask the supervisor for ``ps``."""
    from .._exceptions import ControlRequestError, SupervisorUnreachableError
    from .._supervisor._control._client import ControlClient
    from .._supervisor._control._discovery import find_socket
    from .._supervisor._control._protocol import healthy_row

    path = find_socket(args.socket, args.config)

    def probe(seconds: float) -> str | None:
        try:
            with ControlClient(path, connect_timeout=max(seconds, 0.001)) as client:
                result = client.request("ps", timeout=max(seconds, 0.001))
        except SupervisorUnreachableError as exc:
            return str(exc)
        except ControlRequestError as exc:
            return exc.message
        if kind == "live" or result.get("healthy"):
            return None
        waiting = [f"{r['name']} {r['state']}" for r in result.get("instances", [])
                   if r.get("autostart") and not healthy_row(r)]  # fmt: skip
        more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
        shown = ", ".join(waiting[:5]) + more
        return f"not ready: {shown or 'some autostart instance is not up'}"

    return probe
