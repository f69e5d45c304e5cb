"""Environment files (``.env``): the dotenv dialect, parsed strictly.

:func:`parse_dotenv` reads the dialect that honcho, foreman, docker compose
and python-dotenv share, and that a shell can ``source``::

    # a comment line, and blank lines, are skipped
    export PATH_PREFIX=/opt/app     # "export " is allowed and ignored
    PORT=8000                       # unquoted: trimmed; " #" starts a comment
    GREETING='hello $USER'          # single quotes: literal, nothing expanded
    MOTD="line one\\nline two"       # double quotes: \\n \\t \\r \\" \\\\ \\$ are escapes
    KEY = value                     # spaces around = are allowed
    EMPTY=                          # the empty string
    PEM="-----BEGIN KEY-----
    ...
    -----END KEY-----"              # a quoted value may span lines

Nothing is expanded (``$VAR`` stays as written), as in honcho and foreman:
an environment file is data, not a script.  A malformed line is a
:class:`~forkwell.ConfigError` of one line naming ``file:line`` and what was
expected, never a silently skipped variable.  Standard library only, and no
dependency on the supervisor: the config importers reuse it.
"""

from __future__ import annotations

import re

from .._exceptions import ConfigError

# Names as the shells and the dotenv tools accept them (dots for Java-style keys).
_LINE = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.]*)[ \t]*(=?)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_dotenv(text: str, path: str) -> dict[str, str]:
    """The variables of an environment file's ``text``, in file order (later ones win).

    ``path`` names the file in errors: ``ConfigError(["PATH:LINE: ..."])``.
    """
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        i += 1
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None or not m.group(2):
            raise _error(path, i, f"expected KEY=VALUE, got {_show(stripped)}")
        rest = line[m.end() :].lstrip(" \t")
        start = i
        if rest[:1] in ("'", '"'):
            value, i = _quoted(lines, i, rest, path)
        else:
            value = _unquoted(rest)
        if "\0" in value:
            raise _error(path, start, f"the value of {m.group(1)} contains a NUL byte")
        out[m.group(1)] = value
    return out


def _unquoted(rest: str) -> str:
    """An unquoted value: up to a comment (`` #``), trimmed."""
    cut = re.search(r"[ \t]#", rest)
    return (rest[: cut.start()] if cut else rest).strip()


def _quoted(lines: list[str], i: int, rest: str, path: str) -> tuple[str, int]:
    """A quoted value starting at ``rest`` (line ``i``); it may run over later lines.

    Returns the value and the number of the next line to read.
    """
    quote = rest[0]
    start = i
    text = rest[1:]
    while True:
        end = _closing(text, quote)
        if end >= 0:
            break
        if i >= len(lines):
            raise _error(path, start, f"unterminated {quote}-quoted value (no closing {quote})")
        text += "\n" + lines[i]
        i += 1
    tail = text[end + 1 :].strip()
    if tail and not tail.startswith("#"):
        raise _error(path, i, f"unexpected {_show(tail)} after the closing {quote}")
    body = text[:end]
    return (body if quote == "'" else _unescape(body)), i


def _closing(text: str, quote: str) -> int:
    """Index of the quote that ends ``text`` (backslash escapes count in double quotes)."""
    if quote == "'":
        return text.find("'")
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        i += 1
    return -1


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), body, flags=re.S)


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _error(path: str, line: int, message: str) -> ConfigError:
    return ConfigError([f"{path}:{line}: {message}"])
