"""The web endpoint end to end: a real ``forkwell up`` serving HTTP, read by real clients.

Clients are ``http.client`` (not the server's own parser), ``/metrics`` is
read by Prometheus' parser and checked by ``promtool``, and the programs are
real processes that crash when the test writes to their FIFO.  The browser's
view of the page is in tests/test_web_browser.py; the HTTP layer's limits,
against raw sockets, in tests/test_web_limits.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PY, read_pids, wait_until
from webclient import (
    SLEEPER,
    TOKEN,
    Events,
    UnixHTTPConnection,
    Up,
    actions_up,
    bearer,
    fleet,
    make_fifo,
    poke,
    token_file,
)

from forkwell import ConfigError, load_config

pytestmark = pytest.mark.timeout(60)

# -- the setting -----------------------------------------------------------------


def config_with(tmp_path: Path, supervisor: str) -> Path:
    path = tmp_path / "forkwell.toml"
    path.write_text(f"[supervisor]\n{supervisor}\n\n[programs.a]\ncommand = {SLEEPER}\n")
    return path


@pytest.mark.parametrize(
    ("value", "loopback"),
    [
        ("127.0.0.1:9100", True),
        ("127.1.2.3:0", True),
        ("[::1]:9100", True),
        ("localhost:9100", True),
        ("unix:web.sock", True),
    ],
)
def test_loopback_and_unix_addresses_need_no_token(
    tmp_path: Path, value: str, loopback: bool
) -> None:
    http = load_config(config_with(tmp_path, f'http = "{value}"')).supervisor.http
    assert http is not None and http.loopback is loopback
    if value.startswith("unix:"):
        assert http.path == tmp_path / "web.sock"  # relative to the config file


@pytest.mark.parametrize("value", ["0.0.0.0:9100", "[::]:9100", "10.1.2.3:80", "myhost:9100"])
def test_any_other_address_is_refused_without_a_token(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config_with(tmp_path, f'http = "{value}"'))
    (line,) = info.value.errors
    assert "is not a loopback address, so every request must carry a token" in line
    assert "set http_token_file" in line
    tok = token_file(tmp_path)
    cfg = load_config(config_with(tmp_path, f'http = "{value}"\nhttp_token_file = "{tok}"'))
    assert cfg.supervisor.http is not None and not cfg.supervisor.http.loopback


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("9100", "expected 'HOST:PORT'"),
        ("127.0.0.1:99999", "the port must be 0-65535"),
        ("::1:9100", "put an IPv6 address in brackets"),
        ("unix:", "no path after 'unix:'"),
        ("bad host!:80", "invalid host"),
    ],
)
def test_a_bad_address_is_one_line_saying_what_is_expected(
    tmp_path: Path, value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config_with(tmp_path, f'http = "{value}"'))
    (line,) = info.value.errors
    assert "supervisor.http: " in line and says in line


def test_actions_need_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config_with(tmp_path, 'http = "127.0.0.1:0"\nhttp_actions = true'))
    assert info.value.errors[0].endswith(
        "supervisor.http_actions: needs http_token_file (actions are only taken with its "
        "bearer token)"
    )


@pytest.mark.parametrize(
    ("mode", "content", "says"),
    [
        (0o644, TOKEN, "may be read by other users (mode 0644); chmod 600"),
        (0o640, TOKEN, "may be read by other users (mode 0640)"),
        (0o600, "short", "too short (5 characters, at least 16)"),
        (0o600, "two words in it x", "must hold one token"),
    ],
)
def test_the_token_file_must_be_private_and_hold_a_real_token(
    tmp_path: Path, mode: int, content: str, says: str
) -> None:
    tok = token_file(tmp_path, content, mode)
    with pytest.raises(ConfigError) as info:
        load_config(config_with(tmp_path, f'http = "127.0.0.1:0"\nhttp_token_file = "{tok}"'))
    (line,) = info.value.errors
    assert "supervisor.http_token_file: " in line and says in line


def test_without_h11_http_is_a_one_line_config_error(tmp_path: Path) -> None:
    """``python -S`` hides site-packages, where h11 lives: as if the extra were not installed."""
    import h11

    assert "site-packages" in h11.__file__
    cfg = config_with(tmp_path, 'http = "127.0.0.1:0"')
    src = Path(__file__).parent.parent / "src"
    out = subprocess.run(
        [PY, "-S", "-m", "forkwell", "up", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    assert out.returncode == 2
    assert out.stderr == (
        f"forkwell up: {cfg}: supervisor.http: the web endpoint needs the web extra: "
        "pip install 'forkwell[web]' (h11 is not installed)\n"
    )


def test_http_option_overrides_the_file_and_its_errors_name_the_option(tmp_path: Path) -> None:
    cfg = config_with(tmp_path, "")
    out = subprocess.run(
        [PY, "-m", "forkwell", "up", "-c", str(cfg), "--http", "0.0.0.0:9100"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.startswith(f"forkwell up: {cfg}: --http: http://0.0.0.0:9100/ is not a")
    sock = tmp_path / "opt.sock"
    with Up(tmp_path, f"[programs.a]\ncommand = {SLEEPER}\n", http="127.0.0.1:0",
            args=("--http", f"unix:{sock}")) as up:  # fmt: skip
        assert up.url == f"unix:{sock}"
        assert up.get("/healthz").status == 200


def test_http_option_serves_a_procfile_fleet_too(tmp_path: Path) -> None:
    """--http goes through the format loader: a Procfile (no [supervisor] table) gets it."""
    procfile = tmp_path / "Procfile"
    procfile.write_text("web: exec sleep 1000\n")
    sock = tmp_path / "pf.sock"
    proc = subprocess.Popen(
        [PY, "-m", "forkwell", "up", "-c", str(procfile), "--http", f"unix:{sock}", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: sock.exists() or proc.poll() is not None, 30, "the http socket")
        assert proc.poll() is None, proc.communicate()
        wait_until(lambda: _get(sock, "/readyz")[0] == 200, 30, "web.1 up on /readyz")
        doc = json.loads(_get(sock, "/api/v1/programs")[1])
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert [r["name"] for r in doc["instances"]] == ["web.1"]
    assert proc.returncode == 0


def _get(sock: Path, path: str) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(str(sock))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# -- reading ---------------------------------------------------------------------


def test_api_programs_is_the_ps_json_document_plus_the_dependency_order(tmp_path: Path) -> None:
    programs, _, pids = fleet(tmp_path)
    with Up(tmp_path, programs) as up:
        read_pids(pids, 1)
        api = up.get("/api/v1/programs")
        ps = up.ps()
        one = up.get("/api/v1/programs/web").json()
        inst = up.get("/api/v1/programs/web:1").json()
        unknown = up.get("/api/v1/programs/nope")
    assert api.status == 200 and api.headers["content-type"] == "application/json"
    doc = api.json()
    assert set(doc) == {*ps, "programs"}
    assert doc["version"] == ps["version"] == 2
    assert doc["supervisor"] == ps["supervisor"]
    assert doc["healthy"] is ps["healthy"] is True
    stable = ("name", "program", "index", "state", "pid", "started_at", "ready_at", "restarts",
              "last_exit", "autostart")  # fmt: skip
    assert len(doc["instances"]) == len(ps["instances"]) == 4
    for ours, theirs in zip(doc["instances"], ps["instances"], strict=True):
        assert ours.keys() == theirs.keys()
        assert {k: ours[k] for k in stable} == {k: theirs[k] for k in stable}
    assert doc["programs"] == [
        {"name": "db", "order": 1, "depends_on": [], "needed_by": ["web"]},
        {"name": "web", "order": 2, "depends_on": ["db"], "needed_by": []},
        {"name": "crashy", "order": 3, "depends_on": [], "needed_by": []},
    ]
    assert [r["name"] for r in one["instances"]] == ["web:0", "web:1"]
    assert [r["name"] for r in inst["instances"]] == ["web:1"]
    assert unknown.status == 404
    assert unknown.json()["error"] == {
        "code": "unknown_name",
        "message": "unknown program 'nope' (programs: db, web, crashy)",
    }


def test_healthz_and_readyz_for_kubernetes(tmp_path: Path) -> None:
    programs = f"""
    [programs.ok]
    command = {SLEEPER}
    [programs.broken]
    command = ["false"]
    start_retries = 1
    [programs.manual]
    command = ["false"]
    autostart = false
    """
    with Up(tmp_path, programs) as up:
        assert up.get("/healthz").status == 200
        ready = up.get("/readyz")
        assert ready.status == 503
        assert ready.json() == {
            "ready": False, "starting": False, "not_ready_count": 1, "not_ready": ["broken:0"],
        }  # fmt: skip
        subprocess.run([PY, "-m", "forkwell", "stop", "-c", str(up.config), "broken"],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
        # A stopped autostart program is not up either: readiness is about the fleet.
        assert up.get("/readyz").status == 503
    second = tmp_path / "second"
    second.mkdir()
    with Up(second, f"[programs.ok]\ncommand = {SLEEPER}\n") as up:
        ready = up.get("/readyz")
        assert ready.status == 200
        assert ready.json() == {"ready": True, "starting": False, "not_ready_count": 0,
                                "not_ready": []}  # fmt: skip


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by sample name, as Prometheus' own parser reads them."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(fams: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    found = [v for lab, v in fams.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, fams.get(name))
    return found[0]


def test_metrics_in_prometheus_text_format_count_a_crash(tmp_path: Path) -> None:
    programs, fifo, pids = fleet(tmp_path)
    programs += """
    [programs.broken]
    command = ["false"]
    start_retries = 2
    """
    with Up(tmp_path, programs) as up:
        read_pids(pids, 1)
        before = time.time()
        poke(fifo)
        read_pids(pids, 2)
        wait_until(lambda: "crashy:0 STARTING -> RUNNING" in up.log_text().split("EXITED")[-1],
                   10, "crashy to run again")  # fmt: skip
        reply = up.get("/metrics")
        after = time.time()
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = families(reply.text)
    crashy = {"program": "crashy", "instance": "crashy:0"}
    assert value(fams, "forkwell_instance_restarts_total", **crashy) == 1
    assert value(fams, "forkwell_instance_last_exit_code", **crashy) == 1
    assert value(fams, "forkwell_instance_up", **crashy) == 1
    assert value(fams, "forkwell_instance_state", state="RUNNING", **crashy) == 1
    assert value(fams, "forkwell_instance_state", state="EXITED", **crashy) == 0
    assert value(fams, "forkwell_instance_failed_starts_total", **crashy) == 0
    assert before <= value(fams, "forkwell_instance_start_time_seconds", **crashy) <= after
    assert value(fams, "forkwell_instance_memory_bytes", **crashy) > 0
    assert value(fams, "forkwell_instance_cpu_seconds_total", **crashy) >= 0
    broken = {"program": "broken", "instance": "broken:0"}
    assert value(fams, "forkwell_instance_failed_starts_total", **broken) == 2
    assert value(fams, "forkwell_instance_state", state="FATAL", **broken) == 1
    assert value(fams, "forkwell_instance_up", **broken) == 0
    assert not [lab for lab, _ in fams["forkwell_instance_start_time_seconds"]
                if lab["instance"] == "broken:0"]  # not running: no start time  # fmt: skip
    assert value(fams, "forkwell_supervisor_instances") == 5
    assert value(fams, "forkwell_supervisor_programs") == 4
    assert value(fams, "forkwell_supervisor_ready") == 0  # broken is FATAL
    assert value(fams, "forkwell_supervisor_memory_bytes") > 1 << 20
    assert value(fams, "forkwell_supervisor_transitions_total") >= 10
    assert value(fams, "forkwell_supervisor_http_requests_total") >= 1
    # Every name is forkwell's, every per-instance series has both labels.
    for name, samples in fams.items():
        assert name.startswith(("forkwell_instance_", "forkwell_supervisor_")), name
        if name.startswith("forkwell_instance_"):
            assert all({"program", "instance"} <= lab.keys() for lab, _ in samples), name
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus): text parsed only")
    check = subprocess.run([promtool, "check", "metrics"], input=reply.text,
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # promtool's negative control: it does fail a counter named against the conventions.
    bad = "# HELP x_seconds a counter\n# TYPE x_seconds counter\nx_seconds 1\n"
    check = subprocess.run([promtool, "check", "metrics"], input=bad,
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert check.returncode != 0 and "_total" in check.stdout + check.stderr


def test_events_stream_every_transition_with_the_instance_row(tmp_path: Path) -> None:
    programs, fifo, pids = fleet(tmp_path)
    with Up(tmp_path, programs) as up:
        old_pid = read_pids(pids, 1)[0]
        events = Events(up, "/api/v1/events")
        try:
            poke(fifo)
            seen = []
            while len(seen) < 3:
                _, data, ident = events.until(lambda n, d, i: n == "transition")
                if data["instance"] == "crashy:0":
                    seen.append((data["old"], data["new"], int(ident or 0), data))
        finally:
            events.close()
        # Reconnecting with Last-Event-ID: the events after it, again, in order.
        first_id = seen[0][2]
        again = Events(up, "/api/v1/events", {"Last-Event-ID": str(first_id)})
        try:
            replay = [again.until(lambda n, d, i: n == "transition") for _ in range(2)]
        finally:
            again.close()
    assert [(o, n) for o, n, _, _ in seen] == [
        ("RUNNING", "EXITED"), ("EXITED", "STARTING"), ("STARTING", "RUNNING"),
    ]  # fmt: skip
    ids = [i for _, _, i, _ in seen]
    assert ids == sorted(ids) and len(set(ids)) == 3
    last = seen[-1][3]
    assert last["why"].startswith("pid ") and "ready (exec'd)" in last["why"]
    assert last["row"]["name"] == "crashy:0" and last["row"]["restarts"] == 1
    assert last["row"]["pid"] not in (None, old_pid)
    assert seen[0][3]["why"].startswith("exited with status 1 after ")
    assert [int(i or 0) for _, _, i in replay] == ids[1:]


def test_log_view_escapes_searches_and_follows(tmp_path: Path) -> None:
    fifo = make_fifo(tmp_path / "talk.fifo")
    script = (
        "echo '<script>alert(1)</script> & more'; echo 'GET /a 200'; echo 'get /b 500'; "
        f"while read line < {fifo}; do echo \"said: $line\"; done"
    )
    programs = f"[programs.talk]\ncommand = {json.dumps(['sh', '-c', script])}\nlog_markers = false\n"
    with Up(tmp_path, programs) as up:
        log = tmp_path / ".forkwell" / "logs" / "talk.0.stdout.log"
        wait_until(lambda: log.exists() and "get /b" in log.read_text(), 10, "the first lines")
        page = up.get("/logs/talk:0")
        found = up.get("/logs/talk:0?q=GET&n=10")
        missing = up.get("/logs/nope:0")
        bad = up.get("/logs/talk:0?stream=stdin")
        follow = Events(up, "/api/v1/logs/talk:0?tail=1")
        try:
            first = follow.next()
            poke(fifo, "hello <b>")
            text = ""
            while "said: hello <b>\n" not in text:
                name, data, _ = follow.next()
                assert name == "output"
                text += data["text"]
        finally:
            follow.close()
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page.text
    assert "<script>alert" not in page.text
    assert "content-security-policy" in page.headers
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # The search: plain text, any case, matches marked; the others left out.
    assert "2 of the last 3 lines match" in found.text
    assert "<mark>GET</mark> /a 200" in found.text and "<mark>get</mark> /b 500" in found.text
    assert "alert" not in found.text
    assert missing.status == 404 and bad.status == 400
    assert first == ("output", {"text": "get /b 500\n"}, None)


# -- the page without JavaScript --------------------------------------------------


def test_the_page_shows_every_instance_by_program_in_dependency_order(tmp_path: Path) -> None:
    programs, _, pids = fleet(tmp_path)
    with Up(tmp_path, programs) as up:
        read_pids(pids, 1)
        page = up.get("/")
        css = up.get("/static/forkwell.css")
        js = up.get("/static/forkwell.js")
        nothing = up.get("/static/../_page.py")
    text = page.text
    assert page.status == 200
    # In start order, each with its dependencies said.
    assert text.index('id="p-db"') < text.index('id="p-web"') < text.index('id="p-crashy"')
    assert "db <small>before web</small>" in text and "web <small>after db</small>" in text
    for name in ("db:0", "web:0", "web:1", "crashy:0"):
        assert f'<tr data-name="{name}">' in text
    for column in ("state", "pid", "uptime", "restarts", "last exit", "ready", "liveness", "CPU",
                   "memory"):  # fmt: skip
        assert f"<th>{column}</th>" in text
    assert '<span class="st st-RUNNING">RUNNING</span>' in text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    # Everything it loads is served by forkwell itself.
    for url in ("/static/forkwell.css", "/static/forkwell.js"):
        assert url in text
    assert "http://" not in text.replace("http://127.0.0.1", "") and "https://" not in text
    assert css.status == js.status == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert nothing.status == 404
    # Read-only: no form acts without http_actions.
    assert "/api/v1/programs/" not in text.split("<main", 1)[1].split("recent events")[0].replace(
        '<a href="/logs/', "")  # fmt: skip
    assert "<form" not in text


# -- acting ----------------------------------------------------------------------


def test_actions_are_off_unless_asked_for(tmp_path: Path) -> None:
    programs, _, pids = fleet(tmp_path)
    tok = token_file(tmp_path)
    with Up(tmp_path, programs, supervisor=f'http_token_file = "{tok}"') as up:
        pid = read_pids(pids, 1)[0]
        reply = up.request("POST", "/api/v1/programs/crashy/restart", bearer())
        assert read_pids(pids, 1) == [pid]
    assert reply.status == 403
    assert reply.json()["error"]["code"] == "actions_off"


def test_an_action_needs_the_right_token_and_is_taken_with_it(tmp_path: Path) -> None:
    up, _, pids = actions_up(tmp_path)
    with up:
        pid = read_pids(pids, 1)[0]
        none = up.request("POST", "/api/v1/programs/crashy/restart")
        wrong = up.request("POST", "/api/v1/programs/crashy/restart", bearer("x" * 32))
        basic = up.request("POST", "/api/v1/programs/crashy/restart",
                           {"Authorization": f"Basic {TOKEN}"})  # fmt: skip
        assert read_pids(pids, 1) == [pid]  # nothing happened
        ok = up.request("POST", "/api/v1/programs/crashy/restart", bearer())
        new = read_pids(pids, 2)[1]
        unknown = up.request("POST", "/api/v1/programs/nope/restart", bearer())
        stop = up.request("POST", "/api/v1/programs/web:1/stop", bearer())
        states = {r["name"]: r["state"] for r in up.ps()["instances"]}
        audit = up.log_text()
    for reply in (none, wrong, basic):
        assert reply.status == 401
        assert reply.headers["www-authenticate"] == 'Bearer realm="forkwell"'
        assert reply.json()["error"]["code"] == "unauthorized"
    assert ok.status == 200
    body = ok.json()
    assert body["ok"] is True
    assert [(r["instance"], r["ok"], r["state"]) for r in body["results"]] == [
        ("crashy:0", True, "RUNNING")
    ]
    assert new != pid
    assert unknown.status == 404 and unknown.json()["error"]["code"] == "unknown_name"
    assert stop.status == 200 and states["web:1"] == "STOPPED" and states["web:0"] == "RUNNING"
    assert "http: restart crashy by the token from 127.0.0.1:" in audit


def test_no_get_acts_and_no_other_site_can_make_a_browser_act(tmp_path: Path) -> None:
    up, _, pids = actions_up(tmp_path)
    with up:
        pid = read_pids(pids, 1)[0]
        get = up.request("GET", "/api/v1/programs/crashy/restart", bearer())
        origin = f"http://127.0.0.1:{up.port}"
        cross = [
            up.request("POST", "/api/v1/programs/crashy/restart",
                       {**bearer(), "Origin": "http://evil.example"}),
            up.request("POST", "/api/v1/programs/crashy/restart",
                       {**bearer(), "Origin": "null"}),
            up.request("POST", "/api/v1/programs/crashy/restart",
                       {**bearer(), "Sec-Fetch-Site": "cross-site", "Origin": origin}),
        ]  # fmt: skip
        login_elsewhere = up.request(
            "POST", "/login", {"Origin": "http://evil.example",
                               "Content-Type": "application/x-www-form-urlencoded"},
            f"token={TOKEN}",
        )  # fmt: skip
        assert read_pids(pids, 1) == [pid]
    assert get.status == 405 and get.headers["allow"] == "POST"
    for reply in cross:
        assert reply.status == 403 and reply.json()["error"]["code"] == "cross_site"
    assert login_elsewhere.status == 403 and "set-cookie" not in login_elsewhere.headers


def test_the_page_acts_through_its_session_and_csrf_token_only(tmp_path: Path) -> None:
    up, _, pids = actions_up(tmp_path)
    form = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}
    with up:
        pid = read_pids(pids, 1)[0]
        anonymous = up.get("/")
        wrong = up.request("POST", "/login", form, "token=not-the-token-at-all")
        login = up.request("POST", "/login", form, f"token={TOKEN}")
        cookie = login.headers["set-cookie"].split(";")[0]
        page = up.get("/", Cookie=cookie)
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        no_csrf = up.request("POST", "/api/v1/programs/crashy/restart", {**form, "Cookie": cookie})
        bad_csrf = up.request("POST", "/api/v1/programs/crashy/restart",
                              {**form, "Cookie": cookie}, "csrf=" + "0" * 64)  # fmt: skip
        other = up.request("POST", "/api/v1/programs/crashy/restart",
                           {**form, "Cookie": "forkwell_session_1=" + cookie.split("=", 1)[1]},
                           f"csrf={csrf}")  # fmt: skip
        assert read_pids(pids, 1) == [pid]
        done = up.request("POST", "/api/v1/programs/crashy/restart", {**form, "Cookie": cookie},
                          f"csrf={csrf}")  # fmt: skip
        read_pids(pids, 2)
        after = up.get(done.headers["location"], Cookie=cookie)
    assert anonymous.status == 200 and "<form" in anonymous.text and 'name="token"' in anonymous.text
    assert "/restart" not in anonymous.text  # no action buttons before logging in
    assert wrong.status == 401 and "set-cookie" not in wrong.headers
    assert login.status == 303 and login.headers["location"] == "/"
    attrs = login.headers["set-cookie"]
    assert attrs.startswith(f"forkwell_session_{up.port}=")
    assert "HttpOnly" in attrs and "SameSite=Strict" in attrs
    assert 'formaction="/api/v1/programs/crashy:0/restart"' in page.text
    assert len(csrf) == 64
    assert no_csrf.status == bad_csrf.status == 403
    assert other.status == 401  # a cookie of another port's name is no session here
    assert done.status == 303 and done.headers["location"].startswith("/?done=restart&name=crashy")
    assert "restart crashy: requested" in after.text


# -- reading where it needs a token ---------------------------------------------------


def test_a_host_that_is_not_loopback_cannot_read_the_status(tmp_path: Path) -> None:
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1."""
    with Up(tmp_path, f"[programs.a]\ncommand = {SLEEPER}\n", http="127.0.0.1:0") as up:
        evil = up.get("/api/v1/programs", Host=f"evil.example:{up.port}")
        good = [up.get("/api/v1/programs", Host=h).status
                for h in (f"127.0.0.1:{up.port}", f"localhost:{up.port}", "127.0.0.1")]  # fmt: skip
    assert evil.status == 403 and evil.json()["error"]["code"] == "forbidden_host"
    assert good == [200, 200, 200]


def test_not_loopback_needs_the_token_even_to_read_and_says_so(tmp_path: Path) -> None:
    tok = token_file(tmp_path)
    with Up(tmp_path, f"[programs.a]\ncommand = {SLEEPER}\n", http="0.0.0.0:0",
            supervisor=f'http_token_file = "{tok}"') as up:  # fmt: skip
        replies = {path: up.get(path) for path in ("/", "/api/v1/programs", "/metrics",
                                                    "/logs/a:0", "/api/v1/events")}  # fmt: skip
        with_token = {path: up.get(path, Authorization=f"Bearer {TOKEN}").status
                      for path in ("/", "/api/v1/programs", "/metrics")}  # fmt: skip
        probes = (up.get("/healthz"), up.get("/readyz"),
                  up.get("/readyz", Authorization=f"Bearer {TOKEN}"))  # fmt: skip
        banner = up.log_text()
    assert f"http: serving http://0.0.0.0:{up.port}/: not a loopback address, so every request " \
           f"needs the token in {tok}" in banner  # fmt: skip
    for path, reply in replies.items():
        assert reply.status == 401, path
    assert 'name="token"' in replies["/"].text  # a browser gets the login form
    assert with_token == {"/": 200, "/api/v1/programs": 200, "/metrics": 200}
    health, ready, ready_authed = probes
    assert health.status == 200
    assert ready.status == 200 and "not_ready" not in ready.json()  # no names without the token
    assert ready_authed.json()["not_ready"] == []


def test_unix_socket_is_owner_and_group_only_and_removed_at_exit(tmp_path: Path) -> None:
    with Up(tmp_path, f"[programs.a]\ncommand = {SLEEPER}\n") as up:
        mode = stat.S_IMODE(os.stat(up.socket_path).st_mode)
        assert up.get("/healthz").status == 200
        banner = up.log_text()
    assert mode == 0o660
    assert not up.socket_path.exists()
    assert f"http: serving unix:{up.socket_path}: read-only without a token (loopback)" in banner


def test_a_taken_port_is_a_one_line_error_and_nothing_is_left_running(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        cfg = config_with(tmp_path, f'http = "127.0.0.1:{port}"')
        out = subprocess.run([PY, "-m", "forkwell", "up", "-c", str(cfg), "--quiet"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    finally:
        busy.close()
    assert out.returncode == 1
    assert out.stderr == (
        f"forkwell up: http: cannot listen on http://127.0.0.1:{port}/: Address already in use\n"
    )
