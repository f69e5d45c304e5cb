"""``forkwell export systemd|kubernetes``: the fleet of a forkwell.toml for another engine.

Parsing and printing only; the units and manifests are written by
:mod:`forkwell._supervisor._export`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from ._options import CONFIG, Command, Option, at_least
from ._parser import parse_or_report as _parse_or_report

if TYPE_CHECKING:
    from .._supervisor._export._common import Site

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_PREFIX = Option(("--prefix",), "NAME",
                 "names units and objects NAME-PROGRAM (default: the config file's name, or "
                 "its directory's for forkwell.toml)")  # fmt: skip
_EXITS = (("0", "written"), ("1", "cannot write the output"),
          ("2", "bad usage, or an invalid config file (every problem is listed)"))  # fmt: skip

SYSTEMD = Command(
    "export systemd",
    summary="write a target and a template unit per program (or one unit: --single)",
    description="""\
Write PREFIX.target and one PREFIX-PROGRAM@.service template per program into
DIR: instances @0..@N-1, the dependencies as Requires=/After=, readiness
systemd cannot see as an ExecStartPost= that waits (forkwell probe --wait), a
stop that ends the whole tree (KillMode=control-group), logs in the journal.
With --single, one PREFIX.service that runs 'forkwell up' itself (Type=notify).""",
    options=(
        CONFIG,
        Option(("-o", "--output"), "DIR", "the directory to write the units to", required=True),
        Option(("--user",), None, "units for 'systemctl --user' (no User=/Group=, "
               "wanted by default.target)"),
        _PREFIX,
        Option(("--single",), None, "one unit running 'forkwell up' for the whole fleet"),
        Option(("--root",), "DIR", "where the config file's directory is on the machine the "
               "units are for (default: where it is)"),
        Option(("--forkwell",), "PATH", "the forkwell command there (default: this one)"),
        Option(("--systemd-version",), "N", "the systemd the units are for (default: the "
               "installed one): RestartSteps= needs 254", at_least(1)),
    ),
    exits=_EXITS,
    examples=(
        "forkwell export systemd -c forkwell.toml -o /etc/systemd/system --prefix shop",
        "systemctl daemon-reload && systemctl enable --now shop.target",
        "forkwell export systemd --user --single -c forkwell.toml -o ~/.config/systemd/user",
    ),
)  # fmt: skip

KUBERNETES = Command(
    "export kubernetes",
    summary="write a Deployment (and Service) per program, or one pod: --pod",
    description="""\
Write Kubernetes manifests (YAML) for the fleet: per program a Deployment
(replicas = numprocs; a Job for restart = "never") and a Service for its
ready port, probes from 'ready' and 'ready_timeout', an init container that
waits for each dependency.  With --pod, one Deployment whose container runs
'forkwell up' for the whole fleet.  What Kubernetes cannot express is said in
a comment above the object.  Needs PyYAML (pip install 'forkwell[kubernetes]').""",
    options=(
        CONFIG,
        Option(("-o", "--output"), "FILE", "write to FILE (default: standard output)"),
        Option(("--image",), "IMAGE", "the container image (default: PREFIX:latest)"),
        Option(("--pod",), None, "one pod running 'forkwell up' for the whole fleet"),
        _PREFIX,
        Option(("--root",), "DIR", "where the config file's directory is in the image",
               default="/app"),
        Option(("--forkwell",), "PATH", "the forkwell command in the image", default="forkwell"),
    ),
    exits=_EXITS,
    examples=(
        "forkwell export kubernetes -c forkwell.toml --image shop:1.4 -o k8s.yaml",
        "forkwell export kubernetes -c forkwell.toml --pod --image shop:1.4 | kubectl apply -f -",
    ),
)  # fmt: skip

EXPORT = Command(
    "export",
    description="""\
Write what another engine needs to run the fleet of a forkwell.toml: systemd
units for a server, Kubernetes manifests for a cluster.""",
    actions=(SYSTEMD, KUBERNETES),
    examples=(
        "forkwell export systemd -c forkwell.toml -o deploy/systemd",
        "forkwell export kubernetes -c forkwell.toml --image shop:1.4 -o deploy/k8s.yaml",
    ),
)
DECLARED = {"export": EXPORT}


def main(argv: list[str], *, prog: str, command: str) -> int:
    args = _parse_or_report(EXPORT, argv, prog)
    if isinstance(args, int):
        return args
    here = f"{prog} {args.action}"
    from .._exceptions import ConfigError

    try:
        if args.action == "systemd":
            return _systemd(here, args)
        return _kubernetes(here, args)
    except ConfigError as exc:
        n = len(exc.errors)
        print(f"{here}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"{here}: {exc} (see '{here} --help')", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{here}: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED


def _site(args: SimpleNamespace, root: str | None, forkwell: tuple[str, ...]) -> Site:
    from .._supervisor._export._common import Site, check_prefix, default_prefix
    from .._supervisor._formats._load import load
    from ._fleetfile import choose

    # Any fleet file `forkwell up` reads: forkwell.toml, a Procfile, supervisord.conf...
    path = choose(f"forkwell export {args.action}", args.config)
    loaded = load(path)
    for what in loaded.ignored:
        print(f"forkwell export {args.action}: {path}: {what}", file=sys.stderr)
    config = loaded.config
    prefix = check_prefix(args.prefix or default_prefix(config))
    where = Path(root) if root else config.path.parent
    if not where.is_absolute():
        raise ValueError(f"invalid --root {root!r}: expected an absolute path")
    return Site(config, prefix, where, forkwell)


def _this_forkwell() -> tuple[str, ...]:
    """The forkwell command that runs now, as a unit would call it."""
    import shutil

    me = sys.argv[0]
    if os.path.basename(me) == "forkwell" and os.path.isabs(me):
        return (me,)
    found = shutil.which("forkwell")
    return (os.path.abspath(found),) if found else (sys.executable, "-m", "forkwell")


def _systemd(here: str, args: SimpleNamespace) -> int:
    from .._supervisor._export import _systemd as sd

    forkwell = (args.forkwell,) if args.forkwell else _this_forkwell()
    if not os.path.isabs(forkwell[0]):
        raise ValueError(f"invalid --forkwell {forkwell[0]!r}: systemd needs an absolute path")
    site = _site(args, args.root, forkwell)
    if args.single:
        files = sd.export_single(site, user=args.user)
    else:
        version = args.systemd_version or sd.installed_version()
        files = sd.export(site, user=args.user, version=version)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        _write(out / name, text)
    print(f"{here}: wrote {', '.join(files)} to {out}")
    return EXIT_OK


def _kubernetes(here: str, args: SimpleNamespace) -> int:
    try:
        import yaml  # noqa: F401  (the extra's one dependency, asked for before any work)
    except ModuleNotFoundError:
        print(f"{here}: needs PyYAML: pip install 'forkwell[kubernetes]'", file=sys.stderr)
        return EXIT_FAILED
    from .._supervisor._export import _kubernetes as k8s

    site = _site(args, args.root, (args.forkwell,))
    image = args.image or f"{site.prefix}:latest"
    text = k8s.render(k8s.export(site, image=image, pod=args.pod), k8s.header(site.config, site))
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return EXIT_OK
    _write(Path(args.output), text)
    print(f"{here}: wrote {args.output}")
    return EXIT_OK


def _write(path: Path, text: str) -> None:
    """Write ``text`` whole or not at all (a unit half-written is worse than none)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
