"""``forkwell export kubernetes``: a Deployment per program, or one pod running ``forkwell up``.

The mapping, key by key, is :data:`MAPPING` (``docs/deploy.md``'s table is
tested against it).  What Kubernetes cannot express is said in a comment
above the object it concerns.  Probes run inside the container: a port on
127.0.0.1 is probed with ``forkwell probe`` (an exec probe), since the
kubelet's ``tcpSocket`` knocks on the pod's IP.  ``depends_on`` cannot be
enforced across Deployments: an init container waits for the dependency's
Service with ``forkwell probe --wait``, which orders the first start only.
Environment files become a ConfigMap per program (:mod:`._configmap`).

Objects are plain dicts; :func:`render` writes them as YAML with PyYAML (the
``kubernetes`` extra), each under its comments.
"""

from __future__ import annotations

import math
import signal
from typing import Any, NamedTuple

from .._config import Config, ProgramConfig
from .._probespec import ProbeSpec
from ._common import Site, argv, object_name, seconds, shutdown_seconds
from ._configmap import env_files, pod_notes

#: forkwell.toml key -> what the manifest says (docs/deploy.md's Kubernetes column).
MAPPING: dict[str, str] = {
    "command": "the container's command and args",
    "directory": "workingDir",
    "environment": "env",
    "user": "not expressible by name: set securityContext.runAsUser to its uid",
    "group": "not expressible by name: set securityContext.runAsGroup to its gid",
    "umask": "not expressible: set it in the image's entrypoint",
    "numprocs": "replicas (Job: parallelism and completions)",
    "autostart": "false: replicas 0",
    "restart": "always and on-failure: a Deployment (Kubernetes restarts it whatever "
    "its status); never: a Job",
    "success_exit_codes": "not expressible: every status but 0 is a failure",
    "ready": "readinessProbe and startupProbe (tcpSocket, or exec forkwell probe for "
    "127.0.0.1; exec for cmd:); delay: minReadySeconds; notify: not expressible",
    "ready_timeout": "startupProbe: failureThreshold probes 1s apart",
    "depends_on": "an init container waiting with forkwell probe for the dependency's "
    "Service (first start only)",
    "min_uptime": "not expressible (Kubernetes' CrashLoopBackOff has its own)",
    "start_retries": "not expressible (a Job: backoffLimit)",
    "backoff_max": "not expressible (CrashLoopBackOff: 10s doubling to 5 min)",
    "stop_signal": "not expressible but TERM: set STOPSIGNAL in the image",
    "stop_timeout": "terminationGracePeriodSeconds",
    "redirect_stderr": "both streams go to the container's log",
    "log_max_bytes": "the kubelet's containerLogMaxSize",
    "log_backups": "the kubelet's containerLogMaxFiles",
    "priority": "not expressible: Kubernetes starts Deployments in no order",
    "process_group": "not expressible (select the Deployments by label instead)",
    "instance_name": "not expressible: a pod is named by Kubernetes",
    "port": "env PORT (the same in every replica: each pod has its own address)",
    "name_variables": "env from the pod's name (metadata.name)",
    "env_file": "a ConfigMap per program, read by envFrom (env still overrides it, as "
    "environment overrides env_file)",
    "env_file_optional": "a file missing at export is left out of the ConfigMap (a comment)",
    "liveness": "livenessProbe (tcpSocket, httpGet, or exec forkwell probe / sh -c); "
    "watchdog: not expressible (a comment)",
    "liveness_period": "livenessProbe.periodSeconds",
    "liveness_timeout": "livenessProbe.timeoutSeconds",
    "liveness_failures": "livenessProbe.failureThreshold",
    "liveness_delay": "livenessProbe.initialDelaySeconds",
    "watchdog_sec": "not expressible (a comment, with liveness)",
    "essential": "not expressible: a pod's containers restart alone (a comment)",
    "log_timestamps": "the container runtime timestamps every line (kubectl logs --timestamps)",
    "log_markers": "the kubelet records each start and exit (kubectl describe)",
}

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Manifest(NamedTuple):
    """One Kubernetes object and the comments written above it."""

    notes: list[str]
    body: dict[str, Any]


def export(site: Site, *, image: str, pod: bool = False) -> list[Manifest]:
    """The fleet's objects: per program (a Deployment or Job, a Service), or one pod."""
    if pod:
        return _pod(site, image)
    out: list[Manifest] = []
    for program in site.config.programs.values():
        out.extend(_program(site, program, image))
    return out


def render(manifests: list[Manifest], header: str) -> str:
    """The manifests as one YAML stream, ``header`` and each object's notes as comments."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a probe used twice is written twice: no &id001 for a reader to chase

    parts = [_comment(header.splitlines())]
    for m in manifests:
        text = yaml.dump(
            m.body, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=100
        )
        parts.append(f"---\n{_comment(m.notes)}{text}")
    return "".join(parts)


def _comment(lines: list[str]) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def _labels(site: Site, name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": site.prefix,
            "app.kubernetes.io/managed-by": "forkwell"}  # fmt: skip


def _metadata(site: Site, name: str) -> dict[str, Any]:
    return {"name": name, "labels": _labels(site, name)}


def _program(site: Site, program: ProgramConfig, image: str) -> list[Manifest]:
    name = object_name(site, program.name)
    files = env_files(site, program, _labels(site, name))
    notes = [f"{program.name}: {n}" for n in [*_unexpressed(site, program), *files.notes]]
    container: dict[str, Any] = {"name": name, "image": image, **_command(site, program)}
    container["workingDir"] = str(site.moved(program.directory))
    if files.config_map is not None:
        container["envFrom"] = [{"configMapRef": {"name": files.config_map["metadata"]["name"]}}]
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in files.env.items()]
    if program.port is not None:
        env.append({"name": "PORT", "value": str(program.port)})
    pod_name = {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    env += [{"name": var, **pod_name} for var in program.name_variables]
    if env:
        container["env"] = env
    port = _port(program)
    if port is not None:
        container["ports"] = [{"containerPort": port, "name": "ready"}]
        if program.ready.host in _LOOPBACK:
            notes.append(f"{program.name}: listens on {program.ready.host}: the Service "
                         "reaches it only if it binds 0.0.0.0")  # fmt: skip
    container.update(_probes(site, program))
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": seconds(program.stop_timeout),
        "containers": [container],
    }
    waits = _waits(site, program, image, notes)
    if waits:
        spec = {"initContainers": waits, **spec}
    out = [] if files.config_map is None else [Manifest(files.map_notes, files.config_map)]
    out.append(Manifest(notes, _workload(site, program, name, spec)))
    if port is not None:
        out.append(_service(site, name, [port]))
    return out


def _workload(
    site: Site, program: ProgramConfig, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    template = {"metadata": {"labels": _labels(site, name)}, "spec": spec}
    replicas = program.numprocs if program.autostart else 0
    if program.restart == "never":
        spec["restartPolicy"] = "Never"
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _metadata(site, name),
                "spec": {"parallelism": replicas, "completions": replicas,
                         "backoffLimit": 0, "template": template}}  # fmt: skip
    body: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
    }
    if program.ready.kind == "delay":
        assert program.ready.seconds is not None
        body["minReadySeconds"] = seconds(program.ready.seconds)
    body["template"] = template
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(site, name),
            "spec": body}  # fmt: skip


def _command(site: Site, program: ProgramConfig) -> dict[str, Any]:
    first, *rest = argv(site, program, resolve=False)
    return {"command": [first], **({"args": rest} if rest else {})}


def _port(program: ProgramConfig) -> int | None:
    return program.ready.port if program.ready.kind in ("tcp", "http") else None


def _handler(site: Site, program: ProgramConfig) -> dict[str, Any] | None:
    """How the kubelet probes ``ready``, from inside the container; None: it cannot."""
    return _handler_of(site, program.ready)


def _handler_of(site: Site, ready: ProbeSpec) -> dict[str, Any] | None:
    """How the kubelet runs one probe; None: it cannot (delay, notify, log, watchdog)."""
    if ready.kind == "http":
        if ready.host in _LOOPBACK:
            return {"exec": {"command": [*site.forkwell, "probe", str(ready)]}}
        scheme = "HTTPS" if ready.tls else "HTTP"
        return {"httpGet": {"path": ready.target or "/", "port": ready.port, "scheme": scheme}}
    if ready.kind == "tcp":
        if ready.host in _LOOPBACK:
            return {"exec": {"command": [*site.forkwell, "probe", str(ready)]}}
        return {"tcpSocket": {"port": ready.port}}
    if ready.kind == "cmd":
        assert ready.command is not None
        return {"exec": {"command": ["/bin/sh", "-c", ready.command]}}
    return None


def _probes(site: Site, program: ProgramConfig) -> dict[str, Any]:
    live = program.liveness
    alive = None if live is None else _handler_of(site, live)
    liveness = {} if alive is None else {"livenessProbe": {
        **alive, "periodSeconds": seconds(program.liveness_period),
        "timeoutSeconds": seconds(program.liveness_timeout),
        "failureThreshold": program.liveness_failures,
        "initialDelaySeconds": math.ceil(program.liveness_delay),
    }}  # fmt: skip
    handler = _handler(site, program)
    if handler is None:
        return liveness
    return liveness | {
        "readinessProbe": {**handler, "periodSeconds": 10, "timeoutSeconds": 1},
        # ready_timeout: probed each second until it is up, or the container is restarted.
        "startupProbe": {**handler, "periodSeconds": 1, "timeoutSeconds": 1,
                         "failureThreshold": seconds(program.ready_timeout)},
    }  # fmt: skip


def _waits(site: Site, program: ProgramConfig, image: str, notes: list[str]) -> list[Any]:
    """One init container per dependency with a port: wait for its Service."""
    waits = []
    for dep in program.depends_on:
        port = _port(site.config.programs[dep])
        if port is None:
            notes.append(f"{program.name}: depends_on {dep}, which has no port to wait for: "
                         "not enforced")  # fmt: skip
            continue
        target = f"tcp:{object_name(site, dep)}:{port}"
        waits.append({"name": f"wait-for-{object_name(site, dep)}", "image": image,
                      "command": [*site.forkwell, "probe", "--wait", target]})  # fmt: skip
    if waits:
        notes.append(
            f"{program.name}: Kubernetes does not order Deployments: the init "
            "containers wait for depends_on's Services, on the first start only"
        )
    return waits


def _service(site: Site, name: str, ports: list[int]) -> Manifest:
    return Manifest([], {
        "apiVersion": "v1", "kind": "Service", "metadata": _metadata(site, name),
        "spec": {"selector": {"app.kubernetes.io/name": name},
                 "ports": [{"name": f"port-{p}", "port": p, "targetPort": p} for p in ports]},
    })  # fmt: skip


def _unexpressed(site: Site, program: ProgramConfig) -> list[str]:
    """What this program's settings ask that Kubernetes cannot do."""
    notes = []
    if program.stop_signal != signal.SIGTERM:
        sig = signal.Signals(program.stop_signal).name
        notes.append(f"stop_signal {sig}: Kubernetes sends SIGTERM; set STOPSIGNAL {sig} "
                     "in the image")  # fmt: skip
    if program.restart == "on-failure":
        notes.append("restart on-failure: a Deployment restarts it after any exit")
    if program.ready.kind == "notify":
        notes.append("ready notify: Kubernetes has no sd_notify; it counts as ready once started")
    for key, value in (("user", program.user), ("group", program.group)):
        if value is not None:
            notes.append(f"{key} {value}: set securityContext.runAs{key.title()} to its id")
    if program.umask is not None:
        notes.append(f"umask {program.umask:03o}: set it in the image's entrypoint")
    return notes + _health_notes(site, program)


def _health_notes(site: Site, program: ProgramConfig) -> list[str]:
    notes = []
    if program.liveness is not None and program.liveness.kind == "watchdog":
        notes.append("liveness watchdog: Kubernetes has no sd_notify watchdog")
    if program.ready.kind == "log":
        notes.append(f"ready {program.ready}: Kubernetes cannot wait for a log line")
    if program.essential:
        notes.append("essential: a pod's containers restart alone; use --pod to keep it")
    return notes


def _pod(site: Site, image: str) -> list[Manifest]:
    """One Deployment whose one container runs ``forkwell up`` for the whole fleet."""
    config = site.config
    name = site.prefix
    cfg = str(site.config_file)
    ask = [*site.forkwell, "probe"]
    container: dict[str, Any] = {
        "name": name, "image": image,
        "command": [*site.forkwell, "up", "-c", cfg],
        "workingDir": str(site.root),
    }  # fmt: skip
    ports = [p for p in map(_port, config.programs.values()) if p is not None]
    if ports:
        container["ports"] = [{"containerPort": p, "name": f"port-{p}"} for p in ports]
    start = sum(p.ready_timeout for p in config.programs.values())
    container["readinessProbe"] = {"exec": {"command": [*ask, "ready", "-c", cfg]},
                                   "periodSeconds": 10, "timeoutSeconds": 2}  # fmt: skip
    container["livenessProbe"] = {"exec": {"command": [*ask, "live", "-c", cfg]},
                                  "periodSeconds": 10, "timeoutSeconds": 2,
                                  "failureThreshold": 3}  # fmt: skip
    container["startupProbe"] = {"exec": {"command": [*ask, "ready", "-c", cfg]},
                                 "periodSeconds": 1, "timeoutSeconds": 2,
                                 "failureThreshold": seconds(start)}  # fmt: skip
    # forkwell up stops dependents first; the grace period covers the longest chain.
    grace = seconds(shutdown_seconds(config)) + 2
    spec = {"terminationGracePeriodSeconds": grace, "containers": [container]}
    notes = [f"The whole fleet of {cfg} in one container, forkwell up as its PID 1:",
             "it stops every program in dependency order on SIGTERM and exits as soon",
             "as all are gone.", *pod_notes(site)]  # fmt: skip
    selector = {"matchLabels": {"app.kubernetes.io/name": name}}
    template = {"metadata": {"labels": _labels(site, name)}, "spec": spec}
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(site, name),
            "spec": {"replicas": 1, "selector": selector, "template": template}}  # fmt: skip
    out = [Manifest(notes, body)]
    if ports:
        out.append(_service(site, name, ports))
    return out


def header(config: Config, site: Site) -> str:
    return (f"Written by 'forkwell export kubernetes' from {site.config_file}:\n"
            f"edit that file and export again rather than this one ({len(config.programs)} "
            "programs).")  # fmt: skip
