"""The control protocol, version 1: framing, replies, error codes and limits.

One JSON object per line, UTF-8, over a ``SOCK_STREAM`` Unix socket
(documented for users in ``docs/control.md``).  A request is
``{"v": 1, "cmd": "ps", "args": {...}}``; the answer is
``{"v": 1, "ok": true, "result": {...}}`` or
``{"v": 1, "ok": false, "error": {"code": "...", "message": "..."}}``.  While a
``start``/``stop``/``restart`` asked with ``"progress": true`` runs, the server
also sends ``{"v": 1, "progress": {"web:0": "STARTING", ...}}`` lines.  A
connection may carry several requests, one after the other.

Shared by the server and the client, so it stays as lean as the client.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from ..._exceptions import ControlRequestError

PROTOCOL_VERSION = 1

# Requests are a few hundred bytes; this leaves room for thousands of names.
MAX_REQUEST_BYTES = 64 * 1024
# A client gets this long to send one complete request line (also the idle
# limit between requests on a kept-open connection).
REQUEST_TIMEOUT = 10.0
# A reply the client does not read within this long ends the connection.
WRITE_TIMEOUT = 10.0
# Beyond this many open connections new ones get a "busy" error and are closed,
# so a flood cannot exhaust the supervisor's file descriptors.
MAX_CONNECTIONS = 256
# How often a waiting start/stop/restart reports progress.
PROGRESS_INTERVAL = 0.2

ERROR_CODES = (
    "bad_request",  # malformed JSON, unknown command, wrong argument types
    "too_large",  # request line above MAX_REQUEST_BYTES; the connection is closed
    "timeout",  # no complete request within REQUEST_TIMEOUT; closed
    "version",  # unsupported protocol version
    "forbidden",  # peer uid is neither the supervisor's nor root; closed
    "busy",  # too many connections; closed
    "unknown_name",  # a program/instance name that does not exist
    "config",  # reload: the new config is invalid (error.errors lists every problem)
    "failed",  # the supervisor could not do it (error.message says why)
    "internal",  # a bug in the supervisor; it keeps serving
)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def error_reply(code: str, message: str, **extra: Any) -> dict[str, Any]:
    error = {"code": code, "message": message, **extra}
    return {"v": PROTOCOL_VERSION, "ok": False, "error": error}


def ok_reply(result: dict[str, Any]) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": True, "result": result}


def request(cmd: str, args: dict[str, Any] | None, progress: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"v": PROTOCOL_VERSION, "cmd": cmd, "args": args or {}}
    if progress:
        message["progress"] = True
    return message


class BadRequest(Exception):
    """A request the server refuses as asked: the reply says why (``code``, ``extra``)."""

    def __init__(self, message: str, code: str = "bad_request", **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra

    def reply(self) -> dict[str, Any]:
        return error_reply(self.code, str(self), **self.extra)


def parse_request(line: bytes, known: Collection[str]) -> tuple[str, dict[str, Any], bool]:
    """A request line's command, arguments and whether it wants progress; else BadRequest."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request is not valid JSON") from None
    if not isinstance(message, dict):
        raise BadRequest("request must be a JSON object")
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise BadRequest(
            f"unsupported protocol version {version!r} (this supervisor speaks"
            f" {PROTOCOL_VERSION})",
            "version",
            supported=[PROTOCOL_VERSION],
        )
    cmd = message.get("cmd")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise BadRequest("'args' must be a JSON object")
    if not isinstance(cmd, str) or cmd not in known:
        raise BadRequest(f"unknown command {cmd!r} (known: {', '.join(sorted(known))})")
    return cmd, args, message.get("progress") is True


def result_of(reply: dict[str, Any]) -> dict[str, Any]:
    """The ``result`` of an answer; a refusal raises :class:`~forkwell.ControlRequestError`."""
    if reply.get("v") != PROTOCOL_VERSION:
        raise ControlRequestError(
            "version", f"the supervisor speaks protocol {reply.get('v')!r}, we speak 1"
        )
    if reply.get("ok") is True:
        result = reply.get("result")
        return result if isinstance(result, dict) else {}
    error = reply.get("error")
    if not isinstance(error, dict):
        raise ControlRequestError("protocol", "the supervisor sent an error without details")
    errors = error.get("errors")
    raise ControlRequestError(
        str(error.get("code", "failed")),
        str(error.get("message", "request failed")),
        errors=[str(e) for e in errors] if isinstance(errors, list) else [],
    )


def healthy_row(row: Mapping[str, Any]) -> bool:
    """A ``ps`` row that counts as up: RUNNING, or a one-shot job finished with status 0.

    EXITED is only ever a resting state when the restart policy says "do not
    restart", so EXITED with 0 is a job done, not an outage.  Anything else
    (STARTING, BACKOFF, FATAL, STOPPED, a failed exit) is not healthy: unlike
    supervisorctl (issue 1488), "still starting" does not count as up.
    """
    state, last_exit = row["state"], row["last_exit"]
    return bool(state == "RUNNING" or (state == "EXITED" and last_exit == 0))
