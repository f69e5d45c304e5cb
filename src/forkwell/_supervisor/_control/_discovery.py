"""Finding the control socket without loading the engine: ``forkwell ps`` and friends.

``--socket``, then ``$FORKWELL_SOCKET``, then the config's ``[supervisor]
socket``, read by a small scanner so the CLI pays neither for tomllib nor
for the config module; anything the scanner is not sure about falls back to
a real TOML parse.
"""

from __future__ import annotations

import os

SOCKET_ENV = "FORKWELL_SOCKET"
DEFAULT_CONFIG = "forkwell.toml"
# The engine's default for [supervisor] socket (forkwell._supervisor._config.SUPERVISOR_KEYS).
DEFAULT_SOCKET_SETTING = ".forkwell/forkwell.sock"


def find_socket(
    socket_opt: str | None,
    config_opt: str | None,
    env: dict[str, str] | None = None,
    fmt: str | None = None,
) -> str:
    """The control socket's path: ``--socket``, then ``$FORKWELL_SOCKET``, then the config.

    The config is ``config_opt``, else the first of ``forkwell.toml``,
    ``Procfile``, ``process-compose.yaml``, ``supervisord.conf`` here, in the
    format ``fmt`` or its name says.  A TOML file's ``[supervisor] socket``
    is read with a small scanner so the CLI does not pay for tomllib and the
    engine; anything the scanner is not sure about falls back to a real
    TOML parse.  The other formats are read by their own readers.
    """
    from .._formats._detect import TOML, detect, find_default

    environ = os.environ if env is None else env
    if socket_opt:
        return os.path.abspath(socket_opt)
    if environ.get(SOCKET_ENV):
        return os.path.abspath(environ[SOCKET_ENV])
    config = os.path.abspath(config_opt or find_default() or DEFAULT_CONFIG)
    if detect(config, fmt) != TOML:
        return resolve_socket_setting(_socket_setting_of(config, fmt), config)
    try:
        with open(config, "rb") as f:
            text = f.read().decode()
    except (OSError, UnicodeDecodeError):
        # No readable config: the default place is still the best guess, and
        # the "cannot reach" message names it.
        return resolve_socket_setting(None, config)
    try:
        found = scan_socket_setting(text)
    except _Unsure:
        found = _socket_setting_from_toml(text)
    return resolve_socket_setting(found, config)


class _Unsure(Exception):
    """The scanner met TOML it cannot read with certainty."""


def scan_socket_setting(text: str) -> str | None:
    """``[supervisor] socket = "..."`` from TOML text, None if unset.

    Raises ``_Unsure`` on anything but plain tables and one-line basic or
    literal strings without escapes.
    """
    table: str | None = None
    value: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            table = _table_header(line)
        elif table is None and line.startswith("supervisor"):
            raise _Unsure  # dotted keys or an inline table at the top level
        elif table == "supervisor":
            value = _socket_value(line, value)
    return value


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


def _socket_value(line: str, value: str | None) -> str | None:
    """The string of a ``socket = ...`` line of [supervisor]; ``value`` for any other key."""
    key, eq, rest = line.partition("=")
    key = key.strip().strip('"').strip("'")
    if not eq:
        raise _Unsure
    if key != "socket":
        return value
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
    return literal


def resolve_socket_setting(value: str | None, config_path: str) -> str:
    """Where the engine puts the socket for a ``[supervisor] socket`` setting (None: unset).

    Mirrors ``forkwell._supervisor._config``: relative to the config file's directory, ``~``
    expanded, symlinks resolved; ``tests/test_control.py`` checks they agree.
    """
    base = os.path.realpath(os.path.dirname(config_path) or ".")
    setting = DEFAULT_SOCKET_SETTING if value is None else value
    return os.path.realpath(os.path.join(base, os.path.expanduser(setting)))


def _socket_setting_of(config: str, fmt: str | None) -> str | None:
    """``[supervisor] socket`` as a Procfile, supervisord.conf or process-compose.yaml says it.

    The file is read by its format's reader, without validating the rest:
    a file broken after ``forkwell up`` still finds the running supervisor.
    """
    from ..._exceptions import ConfigError
    from .._formats._load import read

    try:
        _, imported = read(config, fmt)
    except ConfigError:
        return None
    if imported is None:
        return None
    value = imported.data.get("supervisor", {}).get("socket")
    return value if isinstance(value, str) and value else None


def _socket_setting_from_toml(text: str) -> str | None:
    """Slow path for configs the scanner is unsure about: a real TOML parse.

    Only the one setting is read, without validating the rest, so a config
    broken after ``forkwell up`` (and refused by ``reload``) still finds the
    running supervisor.
    """
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    table = data.get("supervisor")
    value = table.get("socket") if isinstance(table, dict) else None
    return value if isinstance(value, str) and value else None
