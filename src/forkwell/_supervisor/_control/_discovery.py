"""Finding the control socket without loading the engine: ``forkwell ps`` and friends.

``--socket``, then ``$FORKWELL_SOCKET``, then the config's ``[supervisor]
socket``, read by a small scanner so the CLI pays neither for tomllib nor
for the config module; anything the scanner is not sure about falls back to
a real TOML parse.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..._exceptions import ConfigError

SOCKET_ENV = "FORKWELL_SOCKET"
DEFAULT_CONFIG = "forkwell.toml"
# The engine's defaults for [supervisor] socket and state_file
# (forkwell._supervisor._config.SUPERVISOR_KEYS; tests/test_control.py holds them together).
DEFAULT_SOCKET_SETTING = ".forkwell/forkwell.sock"
DEFAULT_STATE_SETTING = ".forkwell/state.json"


class Target(NamedTuple):
    """Where a control command looks for its supervisor."""

    socket: str
    # The config's state file: it says whether a supervisor is starting (None: not known).
    state_file: str | None
    # The config file it came from; None: --socket or $FORKWELL_SOCKET named the socket.
    config: str | None
    config_exists: bool


def socket_path(
    config: str | os.PathLike[str] = DEFAULT_CONFIG, *, env: dict[str, str] | None = None
) -> str:
    """The control socket ``forkwell up -c CONFIG`` listens on, for :class:`forkwell.ControlClient`.

    ``$FORKWELL_SOCKET`` (from ``env``, default ``os.environ``) if set, else the
    config's ``[supervisor] socket``, resolved as the supervisor resolves it.
    Raises :class:`forkwell.ConfigError` if the config file does not exist.
    """
    return find_target(None, os.fspath(config), env).socket


def find_socket(
    socket_opt: str | None,
    config_opt: str | None,
    env: dict[str, str] | None = None,
    fmt: str | None = None,
) -> str:
    """The control socket's path: ``--socket``, then ``$FORKWELL_SOCKET``, then the config."""
    return find_target(socket_opt, config_opt, env, fmt).socket


def find_target(
    socket_opt: str | None,
    config_opt: str | None,
    env: dict[str, str] | None = None,
    fmt: str | None = None,
) -> Target:
    """The control socket (``--socket``, then ``$FORKWELL_SOCKET``, then the config) and more.

    The config is ``config_opt``, else the first of ``forkwell.toml``,
    ``Procfile``, ``process-compose.yaml``, ``supervisord.conf`` here, in the
    format ``fmt`` or its name says.  A TOML file's ``[supervisor]`` settings
    are read with a small scanner so the CLI does not pay for tomllib and the
    engine; anything the scanner is not sure about falls back to a real TOML
    parse.  The other formats are read by their own readers.  A config named
    with ``-c`` must exist (:class:`forkwell.ConfigError`); the default one may
    be missing.
    """
    from .._formats._detect import find_default

    environ = os.environ if env is None else env
    config = os.path.abspath(config_opt or find_default() or DEFAULT_CONFIG)
    named = socket_opt or environ.get(SOCKET_ENV)
    try:
        settings = _settings_of(config, fmt)
    except FileNotFoundError:
        if config_opt and not named:
            raise ConfigError([f"config file {config_opt} does not exist"]) from None
        settings = None
    exists = settings is not None
    found = settings or {}
    state = resolve_setting(found.get("state_file"), config, DEFAULT_STATE_SETTING)
    if named:
        return Target(os.path.abspath(named), state if exists else None, None, exists)
    return Target(resolve_socket_setting(found.get("socket"), config), state, config, exists)


def _settings_of(config: str, fmt: str | None) -> dict[str, str]:
    """The config's ``[supervisor]`` settings the control commands need (those set).

    Raises FileNotFoundError if there is no such file; an unreadable one has
    none (the default places are still the best guess, and the "cannot
    reach" message names them).
    """
    from .._formats._detect import TOML, detect

    if detect(config, fmt) != TOML:
        if not os.path.exists(config):
            raise FileNotFoundError(config)
        return _settings_of_format(config, fmt)
    try:
        with open(config, "rb") as f:
            text = f.read().decode()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        return scan_settings(text)
    except _Unsure:
        return _settings_from_toml(text)


class _Unsure(Exception):
    """The scanner met TOML it cannot read with certainty."""


# The [supervisor] settings the control commands need.
_WANTED = ("socket", "state_file")


def scan_socket_setting(text: str) -> str | None:
    """``[supervisor] socket = "..."`` from TOML text, None if unset (see :func:`scan_settings`)."""
    return scan_settings(text).get("socket")


def scan_settings(text: str) -> dict[str, str]:
    """``[supervisor]``'s ``socket`` and ``state_file`` strings from TOML text (those set).

    Raises ``_Unsure`` on anything but plain tables and one-line basic or
    literal strings without escapes.
    """
    table: str | None = None
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            table = _table_header(line)
        elif table is None and line.startswith("supervisor"):
            raise _Unsure  # dotted keys or an inline table at the top level
        elif table == "supervisor":
            key, value = _setting(line)
            if key in _WANTED:
                found[key] = value
    return found


def _table_header(line: str) -> str:
    """The name of the table a ``[...]`` line opens (``[[array]]`` for any array of tables)."""
    if line.startswith("[["):
        return "[[array]]"
    end = line.find("]")
    if end < 0:
        raise _Unsure
    table = line[1:end].strip().strip('"').strip("'")
    if table.startswith(("supervisor.", "supervisor ")):
        raise _Unsure
    return table


def _setting(line: str) -> tuple[str, str]:
    """``(key, string)`` of a ``key = "..."`` line of [supervisor] (``(key, "")`` if unwanted)."""
    key, eq, rest = line.partition("=")
    key = key.strip().strip('"').strip("'")
    if not eq:
        raise _Unsure
    if key not in _WANTED:
        return key, ""
    rest = rest.strip()
    if len(rest) < 2 or rest[0] not in "\"'":
        raise _Unsure
    quote = rest[0]
    end = rest.find(quote, 1)
    if end < 0 or rest.startswith(quote * 3):
        raise _Unsure
    literal = rest[1:end]
    if quote == '"' and "\\" in literal:
        raise _Unsure
    tail = rest[end + 1 :].strip()
    if tail and not tail.startswith("#"):
        raise _Unsure
    return key, literal


def resolve_socket_setting(value: str | None, config_path: str) -> str:
    """Where the engine puts the socket for a ``[supervisor] socket`` setting (None: unset)."""
    return resolve_setting(value, config_path, DEFAULT_SOCKET_SETTING)


def resolve_setting(value: str | None, config_path: str, default: str) -> str:
    """Where the engine puts a ``[supervisor]`` path setting (None: unset, ``default``).

    Mirrors ``forkwell._supervisor._config``: relative to the config file's directory, ``~``
    expanded, symlinks resolved; ``tests/test_control.py`` checks they agree.
    """
    base = os.path.realpath(os.path.dirname(config_path) or ".")
    setting = default if value is None else value
    return os.path.realpath(os.path.join(base, os.path.expanduser(setting)))


def _settings_of_format(config: str, fmt: str | None) -> dict[str, str]:
    """``[supervisor]`` settings as a Procfile, supervisord.conf or process-compose.yaml says.

    The file is read by its format's reader, without validating the rest:
    a file broken after ``forkwell up`` still finds the running supervisor.
    """
    from .._formats._load import read

    try:
        _, imported = read(config, fmt)
    except ConfigError:
        return {}
    table = imported.data.get("supervisor") if imported is not None else None
    if not isinstance(table, dict):
        return {}
    return {k: v for k in _WANTED if isinstance(v := table.get(k), str) and v}


def _settings_from_toml(text: str) -> dict[str, str]:
    """Slow path for configs the scanner is unsure about: a real TOML parse.

    Only the wanted settings are read, without validating the rest, so a
    config broken after ``forkwell up`` (and refused by ``reload``) still
    finds the running supervisor.
    """
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}
    table = data.get("supervisor")
    if not isinstance(table, dict):
        return {}
    return {k: v for k in _WANTED if isinstance(v := table.get(k), str) and v}
