"""One declaration per option, and the one parser of every ``forkwell`` command.

An :class:`Option` (or :class:`Operand`) says everything about one piece of a
command line, once: its spellings, metavar, how its value is read and shown
(a :class:`Kind`), its default, its help, whether it repeats.  Where the
library has the default, the declaration reads it from the library
(:class:`Default`), so the command line and the library cannot drift.  A
:class:`Command` gathers them with its usage line, description, exit
statuses and examples.  From that one declaration come the parser
(:func:`parse`), ``--help`` (:mod:`._help`) and ``docs/cli.md`` (:mod:`._docs`).

The parser follows GNU getopt: short options bundle (``-pv``, ``-k5``), long
ones take ``--name=value`` or ``--name value`` and may be abbreviated while
unambiguous, and ``--`` ends the options.  A command either permutes (options
may follow operands, as argparse allows) or stops at its first operand, which
and everything after it belongs to the command it runs (``forkwell init -v --
sh -c x -v``).  Not argparse, nor getopt: they cost start-up time (gettext,
locale, regexes compiled per run), and argparse cannot stop at an operand.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any, NamedTuple


class UsageError(Exception):
    """A command line that cannot be parsed; the message is one line, without the program."""


class HelpRequested(Exception):
    """``-h``/``--help`` was given: print the help instead of running."""


class Kind(NamedTuple):
    """How a value is read from its text and shown in the help.

    ``parse`` raises ``ValueError`` saying what is wrong with the text (the
    parser prefixes an option's name), or :class:`UsageError` with the whole
    message.
    """

    name: str
    parse: Callable[[str], Any]
    show: Callable[[Any], str] = str
    none: str = "none"  # how the help shows a default of None


class Default(NamedTuple):
    """A default that is the library's: ``load`` reads it from there, when it is needed."""

    load: Callable[[], Any]


class Option(NamedTuple):
    """One option: every spelling, its value, its default, its help."""

    names: tuple[str, ...]  # ("-c", "--config"); the last one names it in messages
    metavar: str | None  # None: a flag, which takes no value
    help: str  # may name {default} and the command's facts
    kind: Kind | None = None  # None: the text as it is
    default: Any = None  # a flag's is False; a Default is read from the library
    repeat: bool = False  # every value is kept, in a list (the default: [])
    required: bool = False
    dest: str = ""  # the attribute it fills; "" : from the last spelling

    @property
    def key(self) -> str:
        return self.dest or self.names[-1].lstrip("-").replace("-", "_")

    @property
    def long(self) -> str:
        return self.names[-1]

    def initial(self) -> Any:
        """The value when the option is not given."""
        if self.repeat:
            return []
        if self.metavar is None:
            return bool(self.default)
        return self.default.load() if isinstance(self.default, Default) else self.default


class Operand(NamedTuple):
    """One operand; only the last of a command may be optional or take the rest."""

    metavar: str
    help: str = ""
    nargs: str = "1"  # "1", "?" (or None), "*" (the rest) or "+" (the rest, at least one)
    kind: Kind | None = None
    missing: str = ""  # the message when it is missing ({metavar}, {last}: the operand before)
    dest: str = ""

    @property
    def key(self) -> str:
        return self.dest or self.metavar.lower().replace("-", "_")


# The messages of the parser, GNU getopt's words.  A command may word some of
# them its own way (Command.words), as scripts and tests know them.
WORDS = {
    "unknown": "unrecognized option {option!r}",
    "unknown_short": "invalid option -- {char!r}",
    "ambiguous": "ambiguous option {option!r}: could be {matches}",
    "needs_value": "option {option!r} requires an argument",
    "needs_value_short": "option requires an argument -- {char!r}",
    "no_value": "option {option!r} doesn't allow an argument",
    "required": "needs {option} {metavar}",
    "repeated": "option {option} given more than once",
    "missing": "missing operand {metavar}",
    "extra": "extra operand {operand!r}",
    "unknown_action": "unknown action {action!r} ({actions})",
}


class Command(NamedTuple):
    """One command's declaration: the parser, ``--help`` and docs/cli.md are made from it."""

    name: str  # "timeout", "daemon start"
    description: str  # as printed: wrapped by hand, may name the facts
    options: tuple[Option, ...] = ()  # -h/--help is added to every command
    operands: tuple[Operand, ...] = ()
    usage: str = ""  # what follows the program in the usage line; "": made from the rest
    notes: str = ""  # paragraphs after the options, as printed
    exits: tuple[tuple[str, str], ...] = ()  # (status, meaning)
    examples: tuple[str, ...] = ()
    permute: bool = True  # False: options end at the first operand
    usage_exit: int = 2  # the exit status of a usage error
    hint: str = " (see '{prog} --help')"  # what follows a usage error's message
    words: Mapping[str, str] | None = None  # messages worded this command's way
    once: bool = False  # an option that does not repeat may not be given twice
    facts: Mapping[str, Callable[[], str]] | None = None  # library values the texts name
    summary: str = ""  # an action's one line (a command's is in the dispatcher's table)
    actions: tuple[Command, ...] = ()  # a group: the first operand picks one

    @property
    def all_options(self) -> tuple[Option, ...]:
        return (*self.options, HELP)


HELP = Option(("-h", "--help"), None, "show this help and exit")


# -- kinds ------------------------------------------------------------------


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"invalid int value {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"invalid float value {text!r}") from None


def _duration(text: str) -> float:
    from .._core._duration import parse_duration

    return parse_duration(text)


def _signal(text: str) -> int:
    from .._core._duration import parse_signal

    return parse_signal(text)


def show_seconds(value: float) -> str:
    return f"{value:g}s"


def _show_signal(value: int) -> str:
    import signal

    return signal.Signals(value).name.removeprefix("SIG")


def at_least(minimum: int) -> Kind:
    """Whole numbers from ``minimum`` up."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {text!r}")
        return value

    return Kind(f"int >= {minimum}", parse)


INT = Kind("int", _int)
FLOAT = Kind("float", _float)
DURATION = Kind("duration", _duration, show_seconds)
SIGNAL = Kind("signal", _signal, _show_signal)


def keyword_default(func: Callable[..., Any], name: str) -> Any:
    """The default the library declares for keyword ``name`` of ``func`` (a class: its __init__).

    Read from the function itself (no ``inspect``: it costs start-up time).
    """
    code: Any = func.__init__ if isinstance(func, type) else func  # type: ignore[misc]
    keywords = code.__kwdefaults__ or {}
    if name in keywords:
        return keywords[name]
    names = code.__code__.co_varnames[: code.__code__.co_argcount]
    defaults = code.__defaults__ or ()
    return defaults[names.index(name) - len(names) + len(defaults)]


# -- the parser ---------------------------------------------------------------


def parse(command: Command, argv: list[str]) -> SimpleNamespace:
    """``argv`` read by ``command``: an attribute per option and operand.

    Raises :class:`UsageError`, or :class:`HelpRequested` at ``-h``/``--help``.
    """
    scan = _Scan(command)
    scan.scan(argv)
    return scan.result()


class _Scan:
    """One pass over a command line: options as they come, operands kept for the end."""

    def __init__(self, command: Command) -> None:
        self.command = command
        self.words = {**WORDS, **(command.words or {})}
        self.by_name = {name: opt for opt in command.all_options for name in opt.names}
        self.values: dict[str, Any] = {}
        self.operands: list[str] = []

    def error(self, word: str, **fields: object) -> UsageError:
        return UsageError(self.words[word].format(**fields))

    def scan(self, argv: list[str]) -> None:
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if arg == "--":
                self.operands += argv[i:]
                return
            if arg.startswith("--"):
                i = self._long(arg, argv, i)
            elif arg.startswith("-") and arg != "-":
                i = self._shorts(arg, argv, i)
            elif self.command.permute:
                self.operands.append(arg)
            else:
                self.operands += argv[i - 1 :]
                return

    def _long(self, arg: str, argv: list[str], i: int) -> int:
        name, eq, value = arg.partition("=")
        opt = self._lookup(name)
        if opt.metavar is None:
            if eq:
                raise self.error("no_value", option=opt.long)
            self._take(opt, None)
            return i
        if not eq:
            if i >= len(argv):
                raise self.error("needs_value", option=opt.long)
            value = argv[i]
            i += 1
        self._take(opt, value)
        return i

    def _lookup(self, name: str) -> Option:
        """The option ``name`` spells, or abbreviates without ambiguity."""
        opt = self.by_name.get(name)
        if opt is not None:
            return opt
        matches = {o.long: o for n, o in self.by_name.items() if n.startswith(name)}
        if len(matches) == 1:
            return next(iter(matches.values()))
        if matches:
            raise self.error("ambiguous", option=name, matches=" or ".join(matches))
        raise self.error("unknown", option=name)

    def _shorts(self, arg: str, argv: list[str], i: int) -> int:
        """``-pv``: flags bundled; ``-k5`` or ``-k 5``: a value, the rest of the word or the next."""
        for j in range(1, len(arg)):
            opt = self.by_name.get("-" + arg[j])
            if opt is None:
                raise self.error("unknown_short", option="-" + arg[j], char=arg[j])
            if opt.metavar is None:
                self._take(opt, None)
                continue
            value = arg[j + 1 :]
            if not value:
                if i >= len(argv):
                    raise self.error("needs_value_short", option=opt.long, char=arg[j])
                value = argv[i]
                i += 1
            self._take(opt, value)
            break
        return i

    def _take(self, opt: Option, text: str | None) -> None:
        if opt is HELP:
            raise HelpRequested
        value = True if text is None else convert(opt.kind, text, opt.long)
        if opt.repeat:
            self.values.setdefault(opt.key, []).append(value)
            return
        if self.command.once and opt.key in self.values:
            raise self.error("repeated", option=opt.long)
        self.values[opt.key] = value

    def result(self) -> SimpleNamespace:
        ns = SimpleNamespace()
        for opt in self.command.options:
            if opt.key in self.values:
                setattr(ns, opt.key, self.values[opt.key])
            elif opt.required:
                raise self.error("required", option=opt.long, metavar=opt.metavar)
            else:
                setattr(ns, opt.key, opt.initial())
        rest = self.operands
        last = ""
        for operand in self.command.operands:
            if operand.nargs in ("*", "+"):
                if not rest and operand.nargs == "+":
                    raise self._missing(operand, last)
                setattr(ns, operand.key, [convert(operand.kind, text) for text in rest])
                rest = []
            elif rest:
                last, rest = rest[0], rest[1:]
                setattr(ns, operand.key, convert(operand.kind, last))
            elif operand.nargs == "1":
                raise self._missing(operand, last)
            else:
                setattr(ns, operand.key, None)
        if rest:
            raise self.error("extra", operand=rest[0], operands=" ".join(rest))
        return ns

    def _missing(self, operand: Operand, last: str) -> UsageError:
        text = operand.missing or self.words["missing"]
        return UsageError(text.format(metavar=operand.metavar, last=last))


def convert(kind: Kind | None, text: str, option: str = "") -> Any:
    """``text`` read as ``kind``; a bad value is a UsageError (prefixed with the option's name)."""
    if kind is None:
        return text
    try:
        return kind.parse(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}" if option else str(exc)) from None


# -- running a command's parse --------------------------------------------------


def parse_or_report(command: Command, argv: list[str], prog: str) -> SimpleNamespace | int:
    """The parsed command line; or, once the help or the one-line error is printed, the exit status.

    A group's first operand picks its action (``daemon start``): the
    namespace's ``action`` says which.
    """
    if command.actions:
        return _parse_action(command, argv, prog)
    try:
        return parse(command, argv)
    except HelpRequested:
        print_help(command, prog)
        return 0
    except UsageError as exc:
        return report_usage(command, prog, str(exc))


def _parse_action(group: Command, argv: list[str], prog: str) -> SimpleNamespace | int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help(group, prog)
        return 0 if argv else group.usage_exit
    actions = {action.name.rsplit(" ", 1)[-1]: action for action in group.actions}
    action = actions.get(argv[0])
    if action is None:
        words = {**WORDS, **(group.words or {})}
        message = words["unknown_action"].format(action=argv[0], actions=", ".join(actions))
        return report_usage(group, prog, message)
    ns = parse_or_report(action, argv[1:], f"{prog} {argv[0]}")
    if not isinstance(ns, int):
        ns.action = argv[0]
    return ns


def report_usage(command: Command, prog: str, message: str) -> int:
    """Print a usage error the command's way, on one line (GNU's hint on a second); its status."""
    print(f"{prog}: {message}{command.hint.format(prog=prog)}", file=sys.stderr)
    return command.usage_exit


def print_help(command: Command, prog: str) -> None:
    from ._help import render

    print(render(command, prog))
