"""One declaration per option: what every ``forkwell`` command takes, said once.

An :class:`Option` (or :class:`Operand`) says everything about one piece of a
command line: its spellings, metavar, how its value is read and shown (a
:class:`Kind`), its default, its help, whether it repeats.  Where the library
has the default, the declaration reads it from the library (:class:`Default`,
:func:`keyword_default`), so the command line and the library cannot drift.
A :class:`Command` gathers them with its usage line, description, exit
statuses and examples.  From that one declaration come the parser
(:mod:`._parser`), ``--help`` (:mod:`._help`) and ``docs/cli.md``
(:mod:`._docs`).  Gunicorn's ``Setting`` is the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# The declarations are plain classes with __slots__, not NamedTuples: a
# NamedTuple compiles each field's annotation when it is defined, ~0.3 ms per
# class, paid by every `forkwell ps` and `forkwell init`.


class UsageError(Exception):
    """A command line that cannot be parsed; the message is one line, without the program."""

    def __init__(self, message: str) -> None:
        # What was typed may hold a newline or an escape: shown escaped, the error stays one line.
        super().__init__(message if message.isprintable() else repr(message)[1:-1])


class Kind:
    """How a value is read from its text and shown in the help.

    ``parse`` raises ``ValueError`` saying what is wrong with the text (the
    parser prefixes an option's name), or :class:`UsageError` with the whole
    message.
    """

    __slots__ = ("name", "none", "parse", "show")

    def __init__(
        self,
        name: str,
        parse: Callable[[str], Any],
        show: Callable[[Any], str] = str,
        none: str = "none",  # how the help shows a default of None
    ) -> None:
        self.name = name
        self.parse = parse
        self.show = show
        self.none = none


class Default:
    """A default that is the library's: ``load`` reads it from there, when it is needed."""

    __slots__ = ("load",)

    def __init__(self, load: Callable[[], Any]) -> None:
        self.load = load


class Option:
    """One option: every spelling, its value, its default, its help."""

    __slots__ = ("aliases", "default", "dest", "help", "kind", "metavar", "names", "repeat",
                 "required")  # fmt: skip

    def __init__(  # noqa: PLR0913 (a declaration: one keyword per field)
        self,
        names: tuple[str, ...],  # ("-c", "--config"); the last one names it in messages
        metavar: str | None,  # None: a flag, which takes no value
        help: str,  # may name {default} and the command's facts
        kind: Kind | None = None,  # None: the text as it is
        default: Any = None,  # a flag's is False; a Default is read from the library
        *,
        repeat: bool = False,  # every value is kept, in a list (the default: [])
        required: bool = False,
        dest: str = "",  # the attribute it fills; "": from the last spelling
        aliases: tuple[str, ...] = (),  # old spellings, still taken; the help says "(also ...)"
    ) -> None:
        self.names = names
        self.aliases = aliases
        self.metavar = metavar
        self.help = help
        self.kind = kind
        self.default = default
        self.repeat = repeat
        self.required = required
        self.dest = dest

    @property
    def key(self) -> str:
        return self.dest or self.names[-1].lstrip("-").replace("-", "_")

    @property
    def long(self) -> str:
        return self.names[-1]

    @property
    def spellings(self) -> tuple[str, ...]:
        """Every spelling the parser takes: the names, then the aliases."""
        return (*self.names, *self.aliases)

    def initial(self) -> Any:
        """The value when the option is not given."""
        if self.repeat:
            return []
        if self.metavar is None:
            return bool(self.default)
        return self.default.load() if isinstance(self.default, Default) else self.default


class Operand:
    """One operand; only the last of a command may be optional or take the rest."""

    __slots__ = ("dest", "help", "kind", "metavar", "missing", "nargs")

    def __init__(  # noqa: PLR0913 (a declaration: one keyword per field)
        self,
        metavar: str,
        help: str = "",
        *,
        nargs: str = "1",  # "1", "?", "*" (the rest) or "+" (the rest, at least one)
        kind: Kind | None = None,
        missing: str = "",  # the message when it is missing ({metavar}; {last}: the one before)
        dest: str = "",
    ) -> None:
        self.metavar = metavar
        self.help = help
        self.nargs = nargs
        self.kind = kind
        self.missing = missing
        self.dest = dest

    @property
    def key(self) -> str:
        return self.dest or self.metavar.lower().replace("-", "_")


class Command:
    """One command's declaration: the parser, ``--help`` and docs/cli.md are made from it."""

    __slots__ = ("actions", "description", "examples", "exits", "facts", "hint", "name",
                 "notes", "once", "operands", "options", "permute", "summary", "usage",
                 "usage_exit", "words")  # fmt: skip

    def __init__(  # noqa: PLR0913 (a declaration: one keyword per field)
        self,
        name: str,  # "timeout", "daemon start"
        description: str,  # as printed: wrapped by hand, may name the facts
        *,
        options: tuple[Option, ...] = (),  # -h/--help and --version are added to every command
        operands: tuple[Operand, ...] = (),
        usage: str = "",  # what follows the program in the usage line; "": made from the rest
        notes: str = "",  # paragraphs after the options, as printed
        exits: tuple[tuple[str, str], ...] = (),  # (status, meaning)
        examples: tuple[str, ...] = (),
        permute: bool = True,  # False: options end at the first operand
        usage_exit: int = 2,  # the exit status of a usage error
        hint: str = " (see '{prog} --help')",  # what follows a usage error's message
        words: Mapping[str, str] | None = None,  # messages worded this command's way
        once: bool = False,  # an option that does not repeat may not be given twice
        facts: Mapping[str, Callable[[], str]] | None = None,  # library values the texts name
        summary: str = "",  # an action's one line (a command's is in the dispatcher's table)
        actions: tuple[Command, ...] = (),  # a group: the first operand picks one
    ) -> None:
        self.name = name
        self.description = description
        self.options = options
        self.operands = operands
        self.usage = usage
        self.notes = notes
        self.exits = exits
        self.examples = examples
        self.permute = permute
        self.usage_exit = usage_exit
        self.hint = hint
        self.words = words
        self.once = once
        self.facts = facts
        self.summary = summary
        self.actions = actions

    @property
    def all_options(self) -> tuple[Option, ...]:
        return (*self.options, HELP, VERSION)


# Every command takes these two; they print and exit 0.
HELP = Option(("-h", "--help"), None, "show this help and exit")
VERSION = Option(("--version",), None, "show forkwell's version and exit")

# Which fleet `forkwell up` and the control commands mean (here, not in a module
# of their own: `forkwell ps` would pay for one more import).  -c's default is
# the supervisor's (_supervisor._config.DEFAULT_FILE): the commands pass None
# on and the library applies it; reading it here would cost `forkwell up
# --help` tomllib.  tests/test_cli.py holds the two together.
CONFIG = Option(("-c", "--config"), "FILE",
                "the supervisor's config file: forkwell.toml, a Procfile, a supervisord.conf or "
                "a process-compose.yaml (default: the first of ./forkwell.toml, ./Procfile, "
                "./process-compose.yaml, ./supervisord.conf)")  # fmt: skip
SOCKET = Option(("--socket",), "PATH",
                "the control socket (default: $FORKWELL_SOCKET, else the config's [supervisor] "
                "socket)")  # fmt: skip


# -- kinds ------------------------------------------------------------------


def _format(text: str) -> str:
    from .._supervisor._formats._detect import parse_format

    return parse_format(text)


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
    # A plain number (`forkwell timeout 10 ...`, the usual case) is read as
    # parse_duration reads it, without importing it (~0.2 ms of timeout's
    # start-up); anything else, errors included, is parse_duration's.
    # tests/test_cli_parser.py holds the two together.
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value >= 0:  # not NaN, not negative: parse_duration's own checks
        return value
    from .._core._duration import parse_duration

    return parse_duration(text)


def _signal(text: str) -> int:
    from .._core._duration import parse_signal

    return parse_signal(text)


def _signal_or_zero(text: str) -> int:
    """A signal, or 0 (``EXIT``): GNU timeout sends "signal 0" and lets ``-k`` do the killing."""
    if text.strip().upper() in ("0", "EXIT", "SIGEXIT"):
        return 0
    return _signal(text)


def show_seconds(value: float) -> str:
    return f"{value:g}s"


def _show_signal(value: int) -> str:
    import signal

    return "EXIT" if value == 0 else signal.Signals(value).name.removeprefix("SIG")


def at_least(minimum: int) -> Kind:
    """Whole numbers from ``minimum`` up."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {text!r}")
        return value

    return Kind(f"int >= {minimum}", parse)


INT = Kind("int", _int)
FORMAT_KIND = Kind("format", _format)
FLOAT = Kind("float", _float, "{:g}".format)
DURATION = Kind("duration", _duration, show_seconds)
SIGNAL = Kind("signal", _signal, _show_signal)
SIGNAL_OR_ZERO = Kind("signal or 0", _signal_or_zero, _show_signal)


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


# The config file's format, for `up`, `check`, `convert` and every control command.
FORMAT = Option(("--format",), "FORMAT",
                "read -c FILE as procfile, supervisord, process-compose or toml (default: "
                "from its name: Procfile, Procfile.*, *.procfile; supervisord.conf, *.conf, "
                "*.ini; *.yaml, *.yml; anything else is TOML)", FORMAT_KIND)  # fmt: skip

# A Procfile's options, as foreman and honcho spell them (-c stays forkwell's config).
PROCFILE_OPTIONS = (
    Option(("-m", "--formation"), "NAME=N,...",
           "a Procfile's instances per entry: 'web=2,worker=3', 'all=2' (foreman's); entries "
           "not named run one, NAME=0 none", repeat=True),
    Option(("--concurrency",), "NAME=N,...", "the same, in honcho's words", repeat=True,
           dest="formation"),
    Option(("-p", "--port"), "PORT",
           "a Procfile's base PORT (default: PORT from .env, else from the environment, "
           "else 5000); entry I, instance N gets PORT+100*I+N", at_least(1)),
    Option(("-e", "--env"), "FILE[,FILE]",
           "a Procfile's environment files (default: .env beside it)", repeat=True),
    Option(("-t", "--timeout"), "SECONDS",
           "a Procfile's grace before SIGKILL when stopping (default 5s, as foreman)", DURATION),
    Option(("--restart",), None,
           "a Procfile's processes are restarted when they fail (forkwell's supervision) "
           "instead of the first exit stopping all, as foreman and honcho do"),
)  # fmt: skip
