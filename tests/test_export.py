"""``forkwell export``: the units and manifests, checked by the real tools and key by key.

Every systemd unit goes through ``systemd-analyze verify`` (which exits 0
on some warnings, so its stderr must be empty too); every manifest through
``kubernetes-validate``'s strict schema check for the Kubernetes version it
defaults to.  docs/deploy.md's table is held to the exporters' mappings, and
examples/deploy/ to what the exporters write today.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import PY

import forkwell
from forkwell._supervisor._config import PROGRAM_KEYS
from forkwell._supervisor._export import _kubernetes, _systemd

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="needs systemd-analyze (Debian: systemd; tests/setup.sh)"
)

# Every key that maps to something, with what a shell or systemd would mangle.
RICH = f"""
[supervisor]
shutdown_timeout = 40

[programs.db]
command = ["{PY}", "-c", "print('100% $HOME \\\\ \\"quoted\\"')", ";"]
environment = {{ GREETING = "hello world", PCT = "50%", DOLLAR = "$HOME" }}
ready = "tcp:0.0.0.0:5432"
ready_timeout = 20
stop_timeout = 15
user = "daemon"
group = "daemon"
umask = "027"

[programs.api]
command = "sleep 1000"
numprocs = 3
depends_on = ["db"]
ready = "notify"
restart = "always"
stop_signal = "INT"
stop_timeout = 2.5
success_exit_codes = [0, 3]
backoff_max = 5

[programs.cron]
command = "sleep 1"
depends_on = ["api", "db"]
ready = "cmd:test -e /"
restart = "never"
autostart = false

[programs.late]
command = "sleep 1000"
ready = "delay:1.5"
numprocs = 0
"""


def export(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "forkwell", "export", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)  # fmt: skip


def fleets(tmp_path: Path) -> list[Path]:
    """Every example fleet (every format forkwell up reads), and one that uses every key."""
    rich = tmp_path / "rich.toml"
    rich.write_text(RICH)
    kinds = ("*.toml", "Procfile", "supervisord.conf", "process-compose.yaml")
    return [*sorted(p for kind in kinds for p in EXAMPLES.glob(kind)), rich]


def verify(directory: Path, *, user: bool = False) -> None:
    """``systemd-analyze verify`` the target (or unit) and every instance it wants."""
    assert SYSTEMD_ANALYZE is not None
    units = [directory / f.name for f in sorted(directory.iterdir()) if not f.name.endswith("@.service")]
    for target in (u for u in units if u.suffix == ".target"):
        wanted = re.findall(r"^Wants=(\S+)$", target.read_text(), re.M)
        units += [directory / w for w in wanted]
    env = dict(os.environ)
    cmd = [SYSTEMD_ANALYZE]
    if user:
        runtime = directory.parent / "runtime"
        runtime.mkdir(exist_ok=True, mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)  # a user manager needs one, even to verify
        cmd.append("--user")
    result = subprocess.run([*cmd, "verify", "--man=no", *map(str, units)],
                            capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert (result.returncode, result.stderr, result.stdout) == (0, "", ""), units


def units(directory: Path) -> dict[str, str]:
    return {f.name: f.read_text() for f in sorted(directory.iterdir())}


# -- systemd -------------------------------------------------------------------


@needs_systemd
@pytest.mark.parametrize("mode", [(), ("--user",), ("--single",), ("--single", "--user")])
def test_every_fleet_exports_units_systemd_verifies_silently(tmp_path: Path, mode: tuple[str, ...]) -> None:
    for config in fleets(tmp_path):
        out = tmp_path / f"out-{config.stem}-{'-'.join(mode)}"
        result = export("systemd", "-c", str(config), "-o", str(out), *mode)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("forkwell export systemd: wrote ")
        verify(out, user="--user" in mode)


def rich_units(tmp_path: Path, *args: str) -> dict[str, str]:
    config = tmp_path / "rich.toml"
    config.write_text(RICH)
    out = tmp_path / "units"
    result = export("systemd", "-c", str(config), "-o", str(out), "--forkwell", "/opt/fw/forkwell",
                    *args)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return units(out)


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_the_target_wants_each_autostart_instance(tmp_path: Path) -> None:
    target = rich_units(tmp_path)["rich.target"]
    wants = re.findall(r"^Wants=(\S+)$", target, re.M)
    # cron: autostart = false; late: numprocs = 0
    assert wants == ["rich-db@0.service", "rich-api@0.service", "rich-api@1.service",
                     "rich-api@2.service"]  # fmt: skip
    assert "WantedBy=multi-user.target" in lines(target)


def test_template_maps_each_key(tmp_path: Path) -> None:
    files = rich_units(tmp_path)
    db, api, cron, late = (lines(files[f"rich-{p}@.service"]) for p in ("db", "api", "cron", "late"))
    assert f"ExecStart={PY} -c \"print('100%% $$HOME \\\\ \\\"quoted\\\"')\" \\;" in db
    assert 'Environment="GREETING=hello world"' in db
    assert 'Environment="PCT=50%%"' in db and 'Environment="DOLLAR=$HOME"' in db
    assert 'Environment="FORKWELL_INSTANCE=db:%i"' in db
    assert {"User=daemon", "Group=daemon", "UMask=0027"} <= set(db)
    assert "ExecStartPost=/opt/fw/forkwell probe --wait --timeout 20 tcp:0.0.0.0:5432" in db
    assert {"Type=exec", "TimeoutStartSec=21", "TimeoutStopSec=15s", "KillSignal=SIGTERM"} <= set(db)
    assert "Restart=on-failure" in db and "KillMode=control-group" in db
    assert all("KillMode=process" not in f for f in files.values())
    sleep = shutil.which("sleep")
    assert f"ExecStart={sleep} 1000" in api
    assert {"Type=notify", "NotifyAccess=all", "Restart=always", "KillSignal=SIGINT",
            "TimeoutStopSec=2.5s", "SuccessExitStatus=3", "RestartSec=100ms"} <= set(api)  # fmt: skip
    assert "Requires=rich-db@0.service" in api and "After=rich-db@0.service" in api
    deps = "rich-api@0.service rich-api@1.service rich-api@2.service rich-db@0.service"
    assert {f"Requires={deps}", f"After={deps}", "Restart=no"} <= set(cron)
    assert "ExecStartPost=/opt/fw/forkwell probe --wait --timeout 30 \"cmd:test -e /\"" in cron
    assert f"ExecStartPost={sleep} 1.5" in late
    assert {"StartLimitBurst=5", "PartOf=rich.target", "WantedBy=rich.target",
            "StandardOutput=journal", "SyslogIdentifier=rich-api-%i"} <= set(api)  # fmt: skip


def test_restart_steps_only_for_a_systemd_that_has_them(tmp_path: Path) -> None:
    old = lines(rich_units(tmp_path, "--systemd-version", "252")["rich-api@.service"])
    assert not any(x.startswith("RestartSteps=") for x in old)
    assert "# RestartSteps=6 RestartMaxDelaySec=5s: systemd 254+ (here 252)" in old
    new = lines(rich_units(tmp_path, "--systemd-version", "255")["rich-api@.service"])
    assert {"RestartSteps=6", "RestartMaxDelaySec=5s"} <= set(new)  # 0.1s doubling 6 times: 5s


def test_user_units_say_they_cannot_switch_user(tmp_path: Path) -> None:
    files = rich_units(tmp_path, "--user")
    db = lines(files["rich-db@.service"])
    assert "User=daemon" not in db
    assert "# User=daemon: a user unit runs as its user; not expressible" in db
    assert "WantedBy=default.target" in lines(files["rich.target"])


def test_single_runs_forkwell_up_as_a_notify_service(tmp_path: Path) -> None:
    files = rich_units(tmp_path, "--single")
    assert list(files) == ["rich.service"]
    unit = lines(files["rich.service"])
    config = tmp_path / "rich.toml"
    assert f"ExecStart=/opt/fw/forkwell up -c {config}" in unit
    assert {"Type=notify", "NotifyAccess=main", "KillMode=mixed", "TimeoutStopSec=45",
            "ExecReload=/bin/kill -HUP $MAINPID"} <= set(unit)  # fmt: skip


def test_root_moves_every_path(tmp_path: Path) -> None:
    files = rich_units(tmp_path, "--root", "/srv/rich", "--single")
    assert "ExecStart=/opt/fw/forkwell up -c /srv/rich/rich.toml" in lines(files["rich.service"])
    assert "WorkingDirectory=/srv/rich" in lines(files["rich.service"])


@pytest.mark.parametrize(("args", "message"), [
    (("--prefix", "Bad_Name"), "invalid prefix 'Bad_Name'"),
    (("--root", "relative"), "invalid --root 'relative': expected an absolute path"),
    (("--forkwell", "forkwell"), "systemd needs an absolute path"),
])  # fmt: skip
def test_bad_options_are_one_line_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    config = tmp_path / "rich.toml"
    config.write_text(RICH)
    result = export("systemd", "-c", str(config), "-o", str(tmp_path / "o"), *args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_a_command_not_on_path_and_a_broken_config_are_reported(tmp_path: Path) -> None:
    config = tmp_path / "forkwell.toml"
    config.write_text('[programs.x]\ncommand = "no-such-program-anywhere"\n')
    result = export("systemd", "-c", str(config), "-o", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "programs.x.command: 'no-such-program-anywhere' is not on PATH" in result.stderr
    config.write_text('[programs.x]\ncommand = "sleep 1"\nrestart = "sometimes"\n')
    result = export("kubernetes", "-c", str(config))
    assert result.returncode == 2
    assert "programs.x.restart: expected 'always', 'on-failure' or 'never'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unwritable_output_is_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "rich.toml"
    config.write_text(RICH)
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = export("systemd", "-c", str(config), "-o", str(blocker / "sub"))
    assert result.returncode == 1
    assert result.stderr.startswith("forkwell export systemd: cannot write")


# -- Kubernetes ------------------------------------------------------------------


def manifests(config: Path, *args: str) -> list[dict[str, Any]]:
    import yaml

    result = export("kubernetes", "-c", str(config), *args)
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


@pytest.mark.parametrize("pod", [False, True])
def test_every_fleet_exports_manifests_the_schema_accepts(tmp_path: Path, pod: bool) -> None:
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    for config in fleets(tmp_path):
        docs = manifests(config, *(["--pod"] if pod else []))
        assert docs
        for doc in docs:
            # strict: an unknown field is an error too, not silently dropped
            kubernetes_validate.validate(doc, version, strict=True)


def by_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_deployments_map_each_key(tmp_path: Path) -> None:
    config = tmp_path / "rich.toml"
    config.write_text(RICH)
    docs = by_name(manifests(config, "--image", "shop:1.4"))
    db = docs["Deployment", "rich-db"]["spec"]
    (container,) = db["template"]["spec"]["containers"]
    assert container["image"] == "shop:1.4"
    assert container["command"] == [PY] and container["args"][0] == "-c"
    assert container["workingDir"] == "/app"
    assert {"name": "GREETING", "value": "hello world"} in container["env"]
    assert container["readinessProbe"]["tcpSocket"] == {"port": 5432}
    assert container["startupProbe"]["failureThreshold"] == 20
    assert db["template"]["spec"]["terminationGracePeriodSeconds"] == 15
    assert docs["Service", "rich-db"]["spec"]["ports"][0]["port"] == 5432
    api = docs["Deployment", "rich-api"]["spec"]
    assert api["replicas"] == 3
    (wait,) = api["template"]["spec"]["initContainers"]
    assert wait["command"] == ["forkwell", "probe", "--wait", "tcp:rich-db:5432"]
    assert api["template"]["spec"]["terminationGracePeriodSeconds"] == 3  # 2.5s, rounded up
    cron = docs["Job", "rich-cron"]["spec"]
    assert (cron["parallelism"], cron["template"]["spec"]["restartPolicy"]) == (0, "Never")
    probe = cron["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]
    assert probe == ["/bin/sh", "-c", "test -e /"]
    assert docs["Deployment", "rich-late"]["spec"]["minReadySeconds"] == 2


def test_what_kubernetes_cannot_express_is_said_above_the_object(tmp_path: Path) -> None:
    config = tmp_path / "rich.toml"
    config.write_text(RICH)
    text = export("kubernetes", "-c", str(config)).stdout
    for note in ("# api: stop_signal SIGINT: Kubernetes sends SIGTERM; set STOPSIGNAL SIGINT",
                 "# api: ready notify: Kubernetes has no sd_notify",
                 "# db: user daemon: set securityContext.runAsUser to its id",
                 "# cron: Kubernetes does not order Deployments: the init containers wait"):  # fmt: skip
        assert note in text
    assert "&id" not in text  # no YAML anchors for a reader to chase


def test_a_loopback_port_is_probed_from_inside_the_container() -> None:
    docs = by_name(manifests(EXAMPLES / "demo.toml"))
    web = docs["Deployment", "demo-web"]["spec"]["template"]["spec"]["containers"][0]
    program = forkwell.load_config(EXAMPLES / "demo.toml").programs["web"]
    assert program.ready.host == "127.0.0.1"  # the kubelet's own check would miss it
    assert web["readinessProbe"]["exec"]["command"] == ["forkwell", "probe", str(program.ready)]
    if program.liveness is not None:  # the same, for liveness
        live = web["livenessProbe"]
        assert live["exec"]["command"] == ["forkwell", "probe", str(program.liveness)]
        assert live["failureThreshold"] == program.liveness_failures


def test_pod_runs_forkwell_up_with_the_grace_of_the_longest_stop_chain(tmp_path: Path) -> None:
    config = tmp_path / "rich.toml"
    config.write_text(RICH)
    (deploy, service) = manifests(config, "--pod", "--root", "/srv")
    spec = deploy["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["forkwell", "up", "-c", "/srv/rich.toml"]
    assert container["readinessProbe"]["exec"]["command"][-3:] == ["ready", "-c", "/srv/rich.toml"]
    assert container["livenessProbe"]["exec"]["command"][-3:] == ["live", "-c", "/srv/rich.toml"]
    # cron (10s) after api (2.5s) after db (15s): 27.5s, under shutdown_timeout 40; +2 margin
    assert spec["terminationGracePeriodSeconds"] == 30
    assert service["kind"] == "Service"


def test_kubernetes_without_pyyaml_says_what_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "yaml.py"
    blocker.write_text("raise ModuleNotFoundError('no yaml here', name='yaml')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = subprocess.run([PY, "-m", "forkwell", "export", "kubernetes", "-c",
                             str(EXAMPLES / "demo.toml")], capture_output=True, text=True,
                            env=env, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == ("forkwell export kubernetes: needs PyYAML: "
                             "pip install 'forkwell[kubernetes]'\n")  # fmt: skip


# -- the docs and the examples ---------------------------------------------------


def test_every_program_key_has_a_mapping_in_each_exporter() -> None:
    keys = {k.name for k in PROGRAM_KEYS}
    assert set(_systemd.MAPPING) == keys
    assert set(_kubernetes.MAPPING) == keys


def test_deploy_md_table_is_the_exporters_mapping_key_by_key() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    rows = {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r"^\| `(\w+)` \| (.*?) \| (.*?) \|$", text, re.M)}  # fmt: skip
    for key in PROGRAM_KEYS:
        assert rows.get(key.name) == (_systemd.MAPPING[key.name], _kubernetes.MAPPING[key.name])


def test_examples_deploy_is_what_the_exporters_write_today(tmp_path: Path) -> None:
    script = EXAMPLES / "deploy" / "export.sh"
    out = tmp_path / "deploy"
    result = subprocess.run(["bash", str(script), str(out)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "FORKWELL_PY": PY})  # fmt: skip
    assert result.returncode == 0, result.stderr
    committed = EXAMPLES / "deploy"
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert written
    stale = [str(p) for p in written if (committed / p).read_text() != (out / p).read_text()]
    assert not stale, f"examples/deploy is stale ({stale}): run 'bash examples/deploy/export.sh'"
    kept = sorted(p.relative_to(committed) for p in committed.rglob("*")
                  if p.is_file() and p.name != "export.sh")  # fmt: skip
    assert kept == written


def test_forkwell_up_tells_systemd_ready_reloading_and_stopping(tmp_path: Path) -> None:
    """What --single's Type=notify unit relies on, through a real $NOTIFY_SOCKET."""
    import socket

    from test_ctl_e2e import IDLE

    config = tmp_path / "forkwell.toml"
    config.write_text(f"[programs.idle]\n{IDLE}\n")
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        manager.settimeout(30)
        proc = subprocess.Popen([PY, "-m", "forkwell", "up", "-c", str(config), "--quiet"],
                                env={**os.environ, "NOTIFY_SOCKET": str(path)})  # fmt: skip

        def next_message() -> dict[str, str]:
            data = manager.recv(4096).decode()
            return dict(line.split("=", 1) for line in data.splitlines())

        try:
            ready = next_message()
            assert ready["READY"] == "1" and ready["MAINPID"] == str(proc.pid)
            proc.send_signal(signal.SIGHUP)
            assert next_message() == {"RELOADING": "1"}
            assert next_message() == {"READY": "1"}
            proc.send_signal(signal.SIGTERM)
            assert next_message() == {"STOPPING": "1"}
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_foreman_style_keys_port_and_names(tmp_path: Path) -> None:
    """port, name_variables and instance_name (the Procfile keys) in both engines."""
    config = tmp_path / "procfile.toml"
    config.write_text('[programs.web]\ncommand = "sleep 100"\nport = 5000\nnumprocs = 2\n'
                      'name_variables = ["PS"]\ninstance_name = "{program}.{number}"\n')  # fmt: skip
    out = tmp_path / "units"
    assert export("systemd", "-c", str(config), "-o", str(out)).returncode == 0
    unit = lines((out / "procfile-web@.service").read_text())
    assert {'Environment="PORT=5000"', 'Environment="PS=web.%i"',
            'Environment="FORKWELL_INSTANCE=web.%i"'} <= set(unit)  # fmt: skip
    assert any(x.startswith("# port 5000: every instance gets PORT=5000") for x in unit)
    if SYSTEMD_ANALYZE is not None:
        verify(out)
    (deploy,) = manifests(config)
    env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "PORT", "value": "5000"} in env
    assert {"name": "PS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env
