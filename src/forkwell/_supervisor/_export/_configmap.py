"""``env_file`` on Kubernetes: a ConfigMap per program, taken with ``envFrom``.

A program with environment files gets one ConfigMap, ``PREFIX-PROGRAM-env``,
holding what its files give it: ``[supervisor] env_file``, then its own, in
order, each read by the supervisor's own dotenv parser, a later file's
variable winning, as ``forkwell up`` reads them.  One per program rather
than one per fleet: each ConfigMap is exactly what its program gets, so no
precedence between several ``envFrom`` sources needs to be reasoned about.

The container's ``env`` keeps only what ``environment`` sets (or sets
differently from the files): Kubernetes lets ``env`` override ``envFrom``,
as forkwell lets ``environment`` override ``env_file``, so the program sees
the same variables.  A file missing at export time with
``env_file_optional`` is skipped, as ``forkwell up`` would skip it, and a
comment says so.  A ConfigMap is not secret: names that look like
credentials are said in a comment (docs/deploy.md: move them to a Secret).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..._exceptions import ConfigError
from .._config import ProgramConfig
from .._dotenv import parse_dotenv
from ._common import Site, object_name

# Names people give passwords, tokens and keys (DB_PASSWORD, API_TOKEN, AWS_SECRET_ACCESS_KEY).
_SECRET = re.compile(r"PASS(WORD|WD)?|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL", re.I)


class EnvFiles(NamedTuple):
    """A program's env files as Kubernetes takes them."""

    notes: list[str]  # for the Deployment's comment
    config_map: dict[str, Any] | None  # the ConfigMap (None: no variable to hold)
    map_notes: list[str]  # for the ConfigMap's comment
    env: dict[str, str]  # what the container's env still sets: environment's own


def env_files(site: Site, program: ProgramConfig, labels: Mapping[str, str]) -> EnvFiles:
    """The ConfigMap of ``program``'s env files, and the ``env`` left beside it."""
    sup = site.config.supervisor
    files = [(p, sup.env_file_optional) for p in sup.env_file]
    files += [(p, program.env_file_optional) for p in program.env_file]
    data: dict[str, str] = {}
    notes: list[str] = []
    for path, optional in files:
        got = _read(path, optional)
        if got is None:
            notes.append(f"env_file {site.moved(path)}: missing when exported "
                         "(env_file_optional): not in the ConfigMap")  # fmt: skip
        else:
            data.update(got)
    env = {k: v for k, v in program.environment.items() if k not in data or data[k] != v}
    if not data:
        return EnvFiles(notes, None, [], env)
    name = f"{object_name(site, program.name)}-env"
    shown = ", ".join(str(site.moved(p)) for p, _ in files)
    notes.append(f"env_file {shown}: ConfigMap {name} (envFrom); env overrides it, as "
                 "environment overrides env_file in forkwell")  # fmt: skip
    secrets = [k for k in data if _SECRET.search(k)]
    map_notes = [f"{program.name}'s env files, later ones winning ({shown})."]
    if secrets:
        map_notes.append(f"{', '.join(secrets)}: a ConfigMap is not secret: move them to a "
                         "Secret (and envFrom its secretRef).")  # fmt: skip
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": dict(labels)}, "data": data}  # fmt: skip
    dotted = [k for k in data if "." in k]
    if dotted:
        map_notes.append(f"{', '.join(dotted)}: not C identifiers: a cluster without relaxed "
                         "environment variable names skips them (with an event).")  # fmt: skip
    return EnvFiles(notes, body, map_notes, env)


def _read(path: Path, optional: bool) -> dict[str, str] | None:
    """One env file's variables; None when it is missing and may be."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if optional:
            return None
        why = "no such file (set env_file_optional = true if it may be missing)"
        raise ConfigError([f"env_file: {path}: {why}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"env_file: {path}: cannot read: {exc}"]) from None
    return parse_dotenv(text, os.fspath(path))


def pod_notes(site: Site) -> list[str]:
    """``--pod``: ``forkwell up`` reads the env files itself, inside the container."""
    config = site.config
    paths = [*config.supervisor.env_file]
    paths += [p for program in config.programs.values() for p in program.env_file]
    if not paths:
        return []
    shown = ", ".join(dict.fromkeys(str(site.moved(p)) for p in paths))
    return [f"env_file {shown}: read by forkwell up in the container: put them in the image",
            "(or mount a ConfigMap or Secret there)."]  # fmt: skip
