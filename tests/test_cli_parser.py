"""The one command-line parser (forkwell._cli._parser): GNU getopt's rules, in both modes.

A small declared command stands for the real ones; the real ones are run
end to end by each command's tests, and held against argparse in
tests/test_control.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkwell._cli._options import DURATION, INT, Command, Operand, Option, UsageError
from forkwell._cli._parser import HelpRequested, VersionRequested, parse, parse_or_report

OPTIONS = (
    Option(("-p", "--preserve-status"), None, "a flag", dest="preserve"),
    Option(("-v", "--verbose"), None, "another flag"),
    Option(("-k", "--kill-after"), "DURATION", "a duration", DURATION),
    Option(("-n", "--lines"), "N", "a number (default {default})", INT, 10),
    Option(("-e", "--env"), "K=V", "repeatable", repeat=True),
    Option(("--pidfile",), "PATH", "a path"),
    Option(("--pid",), "PID", "a spelling that is the start of another", INT),
)


def run(name: str = "run", **more: Any) -> Command:
    """Stops at its first operand, as timeout, init and daemon do."""
    return Command(name, "Run COMMAND.", options=OPTIONS,
                   operands=(Operand("COMMAND", nargs="+"),), permute=False, **more)  # fmt: skip


def show(name: str = "show", **more: Any) -> Command:
    """Permutes, as the control commands, serve and up do."""
    return Command(name, "Show NAMEs.", options=OPTIONS, operands=(Operand("NAME", nargs="*"),),
                   **more)  # fmt: skip


RUN = run()
SHOW = show()


def error(command: Command, *argv: str) -> str:
    with pytest.raises(UsageError) as info:
        parse(command, list(argv))
    return str(info.value)


def test_defaults_when_nothing_is_given() -> None:
    ns = parse(SHOW, [])
    assert vars(ns) == {"preserve": False, "verbose": False, "kill_after": None, "lines": 10,
                        "env": [], "pidfile": None, "pid": None, "name": []}  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-pv", "x"], {"preserve": True, "verbose": True}),
        (["-k5", "x"], {"kill_after": 5.0}),
        (["-k", "5", "x"], {"kill_after": 5.0}),
        (["-pk", "1m", "x"], {"preserve": True, "kill_after": 60.0}),
        (["-vpn3", "x"], {"verbose": True, "preserve": True, "lines": 3}),
        (["-n", "-3", "x"], {"lines": -3}),  # a value may start with "-"
    ],
)
def test_short_options_bundle(argv: list[str], expected: dict[str, object]) -> None:
    ns = vars(parse(RUN, argv))
    assert {key: ns[key] for key in expected} == expected
    assert ns["command"] == ["x"]


@pytest.mark.parametrize(
    ("argv", "key", "value"),
    [
        (["--kill-after=5", "x"], "kill_after", 5.0),
        (["--kill-after", "5", "x"], "kill_after", 5.0),
        (["--lines=-1", "x"], "lines", -1),
        (["--pidfile=", "x"], "pidfile", ""),
        (["--pidfile", "--lines", "x"], "pidfile", "--lines"),  # the next word, whatever it is
        (["--pre", "x"], "preserve", True),  # abbreviations, while unambiguous
        (["--verb", "x"], "verbose", True),
        (["--k=2s", "x"], "kill_after", 2.0),
        (["--pid", "7", "x"], "pid", 7),  # an exact spelling beats a longer one it starts
        (["--pidf", "/run/x.pid", "x"], "pidfile", "/run/x.pid"),
    ],
)
def test_long_options(argv: list[str], key: str, value: object) -> None:
    assert getattr(parse(RUN, argv), key) == value


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus", "x"], "unrecognized option '--bogus'"),
        (["-x", "x"], "invalid option -- 'x'"),
        (["-px", "x"], "invalid option -- 'x'"),
        (["--lines"], "option '--lines' requires an argument"),
        (["-n"], "option requires an argument -- 'n'"),
        (["-pvn"], "option requires an argument -- 'n'"),
        (["--verbose=1", "x"], "option '--verbose' doesn't allow an argument"),
        (["--p", "x"], "ambiguous option '--p': could be --preserve-status or --pidfile or --pid"),
        (["--ver", "x"], "ambiguous option '--ver': could be --verbose or --version"),
        (["-n", "many", "x"], "--lines: invalid int value 'many'"),
        (["--kill-after=1y", "x"], "--kill-after: invalid time interval '1y' (unit must be s, m, h or d)"),
        ([], "missing operand COMMAND"),
        (["-v"], "missing operand COMMAND"),
    ],
)
def test_errors_are_one_line(argv: list[str], message: str) -> None:
    assert error(RUN, *argv) == message


def test_double_dash_ends_the_options() -> None:
    assert parse(RUN, ["-p", "--", "-v", "--lines"]).command == ["-v", "--lines"]
    ns = parse(SHOW, ["a", "--", "-v", "--"])
    assert ns.name == ["a", "-v", "--"] and ns.verbose is False
    assert parse(SHOW, ["-", "-v"]).name == ["-"]  # "-" alone is an operand (stdin)


def test_stopping_mode_leaves_everything_after_the_first_operand() -> None:
    ns = parse(RUN, ["-p", "sh", "-c", "exit 4", "-v", "--bogus", "--"])
    assert ns.preserve is True and ns.verbose is False
    assert ns.command == ["sh", "-c", "exit 4", "-v", "--bogus", "--"]
    assert parse(RUN, ["sh", "--help"]).command == ["sh", "--help"]  # the command's --help


def test_permuting_mode_takes_options_anywhere() -> None:
    ns = parse(SHOW, ["web", "-v", "db", "--lines=2", "worker:0", "-p"])
    assert ns.name == ["web", "db", "worker:0"]
    assert (ns.verbose, ns.lines, ns.preserve) == (True, 2, True)
    with pytest.raises(HelpRequested):
        parse(SHOW, ["web", "--help"])
    with pytest.raises(VersionRequested):
        parse(SHOW, ["web", "--vers"])


def test_repeatable_options_keep_every_value_others_the_last() -> None:
    ns = parse(SHOW, ["-e", "A=1", "--env=B=2", "-eC=3", "--env", "D", "-n", "1", "-n2"])
    assert ns.env == ["A=1", "B=2", "C=3", "D"]
    assert ns.lines == 2
    once = show(once=True)
    assert error(once, "-n", "1", "--lines", "2") == "option --lines given more than once"
    assert parse(once, ["-e", "A", "-e", "B"]).env == ["A", "B"]  # repeatable stays so


def test_operands_required_optional_rest_and_extra() -> None:
    pair = Command("pair", "", operands=(Operand("SIG"), Operand("NAME", nargs="?")),
                   words={"extra": "unexpected {operand!r}"})  # fmt: skip
    assert vars(parse(pair, ["TERM"])) == {"sig": "TERM", "name": None}
    assert vars(parse(pair, ["TERM", "web"])) == {"sig": "TERM", "name": "web"}
    assert error(pair) == "missing operand SIG"
    assert error(pair, "TERM", "web", "db") == "unexpected 'db'"
    need = Command("need", "", options=(Option(("--pidfile",), "PATH", "", required=True),))
    assert error(need) == "needs --pidfile PATH"


def test_report_is_one_line_with_the_hint_and_the_commands_exit_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse_or_report(RUN, ["--bogus"], "forkwell run") == 2
    assert capsys.readouterr().err == (
        "forkwell run: unrecognized option '--bogus' (see 'forkwell run --help')\n"
    )
    gnu = run(usage_exit=125, hint="\nTry '{prog} --help' for more information.")
    assert parse_or_report(gnu, [], "forkwell run") == 125
    assert capsys.readouterr().err == (
        "forkwell run: missing operand COMMAND\nTry 'forkwell run --help' for more information.\n"
    )


def test_help_and_version_print_and_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_or_report(RUN, ["-vh"], "forkwell run") == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: forkwell run [OPTIONS] [--] COMMAND...\n\nRun COMMAND.\n")
    assert "  -n, --lines N              a number (default 10)\n" in out
    assert "      --pidfile PATH         a path\n" in out
    import forkwell

    assert parse_or_report(SHOW, ["--version"], "forkwell show") == 0
    assert capsys.readouterr().out == f"forkwell {forkwell.__version__}\n"


def test_a_group_picks_its_action_by_the_first_operand(capsys: pytest.CaptureFixture[str]) -> None:
    group = Command("tool", "A group.", actions=(run("tool run", summary="run"),
                                                 show("tool show", summary="show")))  # fmt: skip
    ns = parse_or_report(group, ["show", "a", "-v"], "forkwell tool")
    assert not isinstance(ns, int)
    assert (ns.action, ns.name, ns.verbose) == ("show", ["a"], True)
    assert parse_or_report(group, ["bounce"], "forkwell tool") == 2
    assert capsys.readouterr().err == (
        "forkwell tool: unknown action 'bounce' (run, show) (see 'forkwell tool --help')\n"
    )
    assert parse_or_report(group, [], "forkwell tool") == 2  # help, but a usage error
    assert "actions:\n  run   run\n  show  show\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text",
    ["10", "0", "0.5", " 7 ", "1e3", "1_000", "inf", "Infinity", "nan", "-5", "-0", "5s", "2m",
     "1.5h", "0.5d", "abc", "5x", "", " ", "1e999", "-inf"],
)  # fmt: skip
def test_a_duration_is_read_as_parse_duration_reads_it(text: str) -> None:
    """DURATION reads plain numbers itself (start-up time); it must agree with the core."""
    from forkwell._core._duration import parse_duration

    try:
        expected: object = parse_duration(text)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: object = DURATION.parse(text)
    except ValueError as exc:
        got = str(exc)
    assert got == expected


def _every_declared_command() -> list[Command]:
    from forkwell._cli._docs import declared

    out = []
    for command in declared().values():
        out += list(command.actions) or [command]
    return out


_WORDS = st.sampled_from(["-", "--", "-x", "-pv", "--p", "--pid=", "=", "-n", "5", "-1", "1m",
                          "TERM", "web=2", "--env", "A=1", "--ready", "tcp:1", "exec", "nan"])  # fmt: skip


@pytest.mark.timeout(300)  # the profile's examples, on a loaded single core too
@given(argv=st.lists(_WORDS | st.text(max_size=8), max_size=6))
def test_no_command_line_gets_a_traceback(argv: list[str]) -> None:
    """Whatever is typed, every command's parse ends in a result or a one-line UsageError."""
    for command in _every_declared_command():
        try:
            parse(command, argv)
        except (HelpRequested, VersionRequested):
            pass
        except UsageError as exc:
            assert str(exc) and "\n" not in str(exc), (command.name, argv, str(exc))
