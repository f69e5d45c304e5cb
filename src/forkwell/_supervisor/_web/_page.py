"""The status page and the log view, as HTML made on the server.

The page is whole without JavaScript (read-only: every instance, the
dependency order, the recent events, each log searchable); ``static/``'s
script only makes it live: it follows the event stream and swaps in the
cells this module rendered (:func:`cells`, sent with each event), so every
cell is formatted in one place.  Everything is escaped here, once; the
Content-Security-Policy (:mod:`._routes`) allows no inline script and no
asset from elsewhere.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from ..._core._status import describe_exit, exit_label, format_bytes, format_uptime

if TYPE_CHECKING:
    from .._events import Event

STATIC = Path(__file__).parent / "static"
ACTIONS = ("start", "stop", "restart")
_COLUMNS = (
    ("state", "state"),
    ("pid", "pid"),
    ("uptime", "uptime"),
    ("restarts", "restarts"),
    ("last_exit", "last exit"),
    ("ready", "ready"),
    ("liveness", "liveness"),
    ("cpu", "CPU"),
    ("memory", "memory"),
)


class Program(NamedTuple):
    """One program as the page shows it: its place in the start order and its dependencies."""

    name: str
    order: int  # 1 starts first
    depends_on: tuple[str, ...]
    needed_by: tuple[str, ...]


class Auth(NamedTuple):
    """What the page offers the person looking at it."""

    actions: bool  # http_actions is on
    session: bool  # logged in: the action buttons work
    csrf: str  # the forms' CSRF token ("" without a session)
    login: bool  # a token exists: offer the login form (or the logout button)


class View(NamedTuple):
    doc: dict[str, Any]  # the ps document
    programs: list[Program]
    events: Sequence[tuple[int, Event]]  # the most recent, newest last
    since: int  # the last event number the page shows: the stream goes on from there
    auth: Auth
    notice: str = ""


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _probe(value: Any) -> str:
    """A readiness or liveness state from ps: a string, or a table with a ``state``."""
    if isinstance(value, dict):
        state = value.get("state") or "-"
        why = value.get("last_failure") or value.get("message") or ""
        title = f' title="{e(why)}"' if why else ""
        return f'<span class="probe probe-{e(state)}"{title}>{e(state)}</span>'
    if value is None or value == "":
        return "-"
    return f'<span class="probe probe-{e(value)}">{e(value)}</span>'


def _ready(row: dict[str, Any]) -> str:
    if "readiness" in row:
        return _probe(row["readiness"])
    if row["state"] == "RUNNING" and row.get("ready_at") is not None:
        took = row["ready_at"] - (row.get("started_at") or row["ready_at"])
        return f'<span class="probe probe-ready" title="ready after {took:.3f}s">ready</span>'
    if row["state"] == "STARTING" and row["pid"] is not None:
        return '<span class="probe probe-waiting">waiting</span>'
    return "-"


def _liveness(row: dict[str, Any]) -> str:
    """The liveness state as ``ps`` shows it (``failing x2``), the last failure and the
    restarts it caused in its title."""
    state = row.get("liveness")
    if not isinstance(state, str) or state == "":
        return _probe(state)
    why = [row["last_probe_failure"]] if row.get("last_probe_failure") else []
    if row.get("liveness_restarts"):
        why.append(f"liveness restarts: {row['liveness_restarts']}")
    title = f' title="{e("; ".join(why))}"' if why else ""
    text = f"failing x{row.get('liveness_failures', 0)}" if state == "failing" else state
    return f'<span class="probe probe-{e(state)}"{title}>{e(text)}</span>'


def cells(row: dict[str, Any]) -> dict[str, str]:
    """Each cell of an instance's row, as HTML: the page and its live updates both use this."""
    state, last = row["state"], row["last_exit"]
    cpu, rss = row.get("cpu_percent"), row.get("rss_bytes")
    return {
        "state": f'<span class="st st-{e(state)}">{e(state)}</span>',
        "pid": "-" if row["pid"] is None else e(row["pid"]),
        "uptime": "-" if row.get("uptime") is None else e(format_uptime(row["uptime"])),
        "restarts": e(row["restarts"]),
        "last_exit": (
            "-"
            if last is None
            else f'<span class="{"ok" if last == 0 else "bad"}" title="{e(describe_exit(last))}">'
            f"{e(exit_label(last))}</span>"
        ),
        "ready": _ready(row),
        "liveness": _liveness(row),
        "cpu": "-" if cpu is None else f"{cpu:.1f}%",
        "memory": "-" if rss is None else e(format_bytes(rss)),
    }


def _head(title: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n"
        '<link rel="icon" href="data:,">\n'
        '<link rel="stylesheet" href="/static/forkwell.css">\n'
        '<script src="/static/forkwell.js" defer></script>\n</head>\n'
    )


def _csrf_input(auth: Auth) -> str:
    return f'<input type="hidden" name="csrf" value="{e(auth.csrf)}">'


def _buttons(auth: Auth, name: str, label: str) -> str:
    """start / stop / restart for ``name`` (a program, an instance or ``all``)."""
    target = quote(name, safe=":")
    buttons = "".join(
        f'<button formaction="/api/v1/programs/{target}/{action}" '
        f'title="{action} {e(label)}">{action}</button>'
        for action in ACTIONS
    )
    return f'<form class="act" method="post">{_csrf_input(auth)}{buttons}</form>'


def _account(auth: Auth) -> str:
    if not auth.login:
        return ""
    if auth.session:
        return (
            f'<form class="account" method="post" action="/logout">{_csrf_input(auth)}'
            "<button>log out</button></form>"
        )
    return login_form("log in to act" if auth.actions else "")


def login_form(hint: str = "") -> str:
    return (
        '<form class="account login" method="post" action="/login">'
        '<label>token <input type="password" name="token" autocomplete="current-password" '
        'required></label><button>log in</button>'
        + (f' <span class="hint">{e(hint)}</span>' if hint else "")
        + "</form>"
    )


def status_page(view: View) -> str:
    """The whole status page."""
    doc, auth = view.doc, view.auth
    sup = doc["supervisor"]
    rows = doc["instances"]
    by_program: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_program.setdefault(row["program"], []).append(row)
    down = sum(1 for r in rows if r["autostart"] and r["state"] != "RUNNING")
    can_act = auth.actions and auth.session
    parts = [
        _head(f"forkwell: {len(rows)} instances"),
        f'<body data-csrf="{e(auth.csrf)}" data-since="{view.since}">\n<header>\n',
        '<h1><a href="/">forkwell</a></h1>\n',
        f'<p class="meta">pid {e(sup["pid"])} &middot; '
        f'<span title="config">{e(sup["config"])}</span>'
        f" &middot; {len(view.programs)} programs, {len(rows)} instances &middot; "
        f'<span id="health" class="{"ok" if doc["healthy"] else "bad"}">'
        f"{'all up' if doc['healthy'] else f'{down} not up'}</span>"
        ' &middot; <span id="live" class="static">static</span></p>\n',
        _account(auth),
        "</header>\n",
        f'<p id="notice" role="status">{e(view.notice)}</p>\n' if view.notice else "",
        '<main id="fleet">\n',
    ]
    if can_act:
        parts.append(f'<section class="all"><h2>all programs</h2>{_buttons(auth, "all", "all")}'
                     "</section>\n")  # fmt: skip
    for program in view.programs:
        parts.append(_program(program, by_program.get(program.name, []), auth, can_act))
    parts.append(_events(view.events))
    parts.append("</main>\n</body>\n</html>\n")
    return "".join(parts)


def _program(program: Program, rows: list[dict[str, Any]], auth: Auth, can_act: bool) -> str:
    after = before = ""
    if program.depends_on:
        after = f" <small>after {e(', '.join(program.depends_on))}</small>"
    if program.needed_by:
        before = f" <small>before {e(', '.join(program.needed_by))}</small>"
    head = [
        f'<section class="program" id="p-{e(program.name)}">\n<h2>'
        f'<span class="order" title="start order">{program.order}</span> '
        f"{e(program.name)}{after}{before}</h2>\n",
        _buttons(auth, program.name, program.name) if can_act else "",
        "<table>\n<thead><tr><th>instance</th>",
        *(f"<th>{label}</th>" for _, label in _COLUMNS),
        "<th>logs</th>",
        "<th>actions</th>" if can_act else "",
        "</tr></thead>\n<tbody>\n",
    ]
    body = []
    for row in rows:
        name = row["name"]
        row_cells = cells(row)
        link = f"/logs/{quote(name, safe=':')}"
        body.append(
            f'<tr data-name="{e(name)}"><td data-label="instance" class="name">{e(name)}</td>'
            + "".join(
                f'<td data-f="{key}" data-label="{label}">{row_cells[key]}</td>'
                for key, label in _COLUMNS
            )
            + f'<td data-label="logs"><a href="{link}">stdout</a> '
            f'<a href="{link}?stream=stderr">stderr</a></td>'
            + (f'<td data-label="actions">{_buttons(auth, name, name)}</td>' if can_act else "")
            + "</tr>\n"
        )
    if not rows:
        body.append('<tr><td colspan="12">no instances (numprocs = 0)</td></tr>\n')
    return "".join(head + body) + "</tbody>\n</table>\n</section>\n"


def _events(events: Sequence[tuple[int, Event]]) -> str:
    items = [
        f'<li><time datetime="{_iso(ev.time)}">{time.strftime("%H:%M:%S", time.localtime(ev.time))}'
        f"</time> <b>{e(ev.instance)}</b> {e(ev.old)} &rarr; "
        f'<span class="st st-{e(ev.new)}">{e(ev.new)}</span>'
        + (f" <span class=\"why\">{e(ev.why)}</span>" if ev.why else "")
        + "</li>\n"
        for _, ev in reversed(events)
    ]
    return (
        '<section class="events"><h2>recent events</h2>\n<ol id="events">\n'
        + "".join(items)
        + "</ol>\n</section>\n"
    )


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


class LogView(NamedTuple):
    instance: str
    stream: str
    path: Path
    lines: list[str]  # already filtered
    query: str
    scanned: int  # how many lines were searched
    n: int


def log_page(view: LogView) -> str:
    """One instance's log: the last lines (those matching the search), then followed live."""
    name, stream, query = view.instance, view.stream, view.query
    link = f"/logs/{quote(name, safe=':')}"
    follow = f"/api/v1/logs/{quote(name, safe=':')}?stream={stream}"
    other = "stderr" if stream == "stdout" else "stdout"
    found = (
        f"{len(view.lines)} of the last {view.scanned} lines match &ldquo;{e(query)}&rdquo;"
        if query
        else f"the last {len(view.lines)} lines"
    )
    lines = "".join(f"<span>{_mark(line, query)}\n</span>" for line in view.lines)
    return "".join(
        [
            _head(f"{name} {stream}: forkwell"),
            "<body>\n<header>\n",
            '<h1><a href="/">forkwell</a> &rsaquo; '
            f"{e(name)} <small>{e(stream)}</small></h1>\n",
            f'<form class="search" method="get" action="{link}">'
            f'<input type="hidden" name="stream" value="{e(stream)}">'
            f'<input type="search" name="q" value="{e(query)}" placeholder="search" id="q">'
            f'<label>lines <input type="number" name="n" value="{view.n}" min="1" max="5000">'
            "</label><button>search</button></form>\n",
            f'<p class="meta">{found} of {e(view.path)} &middot; '
            f'<a href="{link}?stream={other}">{other}</a> &middot; '
            '<label><input type="checkbox" id="follow" checked> follow</label> &middot; '
            '<span id="live" class="static">static</span></p>\n',
            "</header>\n<main>\n",
            f'<pre id="log" data-follow="{e(follow)}">{lines}</pre>\n',
            "</main>\n</body>\n</html>\n",
        ]
    )


def search(query: str) -> re.Pattern[str] | None:
    """What the log search matches: ``query`` as plain text, any case (never a regex: no ReDoS)."""
    return re.compile(re.escape(query), re.IGNORECASE) if query else None


def _mark(line: str, query: str) -> str:
    """``line`` escaped, each match of ``query`` in a ``<mark>``."""
    pattern = search(query)
    if pattern is None:
        return e(line)
    out, pos = [], 0
    for hit in pattern.finditer(line):
        out += [e(line[pos : hit.start()]), f"<mark>{e(hit.group())}</mark>"]
        pos = hit.end()
    out.append(e(line[pos:]))
    return "".join(out)


def login_page(message: str) -> str:
    """What a browser without a session sees where reading needs the token."""
    return "".join(
        [
            _head("forkwell: log in"),
            "<body>\n<header>\n<h1>forkwell</h1>\n</header>\n<main>\n",
            f'<p class="notice">{e(message)}</p>\n',
            login_form(),
            "\n</main>\n</body>\n</html>\n",
        ]
    )


def asset(name: str) -> tuple[bytes, str] | None:
    """A file of ``static/`` and its content type; None for anything else."""
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    path = STATIC / name
    kind = types.get(path.suffix)
    if kind is None or "/" in name or not path.is_file():
        return None
    return path.read_bytes(), kind
