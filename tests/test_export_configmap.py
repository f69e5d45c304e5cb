"""``forkwell export kubernetes``: env files become a ConfigMap per program, taken by envFrom.

The manifests come from the real command, are checked by
``kubernetes-validate`` (strict), and the variables the container would
get (the ConfigMap's data, then ``env`` over it, as Kubernetes resolves
them) are compared with what ``forkwell up`` gives the program: the
config's own merged environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_export import by_name, export, manifests

import forkwell

pytestmark = pytest.mark.timeout(120)

PEM = "-----BEGIN KEY-----\nMIIB\n-----END KEY-----"


def fleet(tmp_path: Path) -> Path:
    (tmp_path / "shared.env").write_text("REGION=eu\nLEVEL=info\n")
    (tmp_path / "web.env").write_text(
        "export PORT=8000   # a comment\n"
        "LEVEL=debug\n"
        "GREETING='hello $USER'\n"
        f'CERT="{PEM.replace(chr(10), chr(92) + "n")}"\n'
        "DB_PASSWORD=hunter2\n"
    )
    (tmp_path / "web.local.env").write_text("PORT=9000\nMODE=local\njava.opts=-Xmx1g\n")
    config = tmp_path / "shop.toml"
    config.write_text(
        """
[supervisor]
env_file = "shared.env"

[programs.web]
command = "sleep 1000"
env_file = ["web.env", "web.local.env", "absent.env"]
env_file_optional = true
environment = { MODE = "prod", LEVEL = "debug", EXTRA = "1" }

[programs.worker]
command = "sleep 1000"

[programs.plain]
command = "sleep 1000"
env_file = ["absent.env"]
env_file_optional = true
"""
    )
    return config


def container(docs: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    (one,) = docs["Deployment", name]["spec"]["template"]["spec"]["containers"]
    return one


def resolved(docs: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, str]:
    """The container's variables as the kubelet makes them: envFrom, then env over it."""
    box = container(docs, name)
    out: dict[str, str] = {}
    for source in box.get("envFrom", []):
        out.update(docs["ConfigMap", source["configMapRef"]["name"]]["data"])
    out.update({e["name"]: e["value"] for e in box.get("env", []) if "value" in e})
    return out


def test_env_files_become_one_configmap_per_program(tmp_path: Path) -> None:
    import kubernetes_validate

    config = fleet(tmp_path)
    listed = manifests(config)
    version = kubernetes_validate.latest_version()
    for doc in listed:
        kubernetes_validate.validate(doc, version, strict=True)
    docs = by_name(listed)
    # The [supervisor] file, then web's own in order: a later file wins; the optional
    # missing one is skipped.  Parsed as forkwell parses them (export, quotes, escapes).
    assert docs["ConfigMap", "shop-web-env"]["data"] == {
        "REGION": "eu", "LEVEL": "debug", "PORT": "9000", "GREETING": "hello $USER",
        "CERT": PEM, "DB_PASSWORD": "hunter2", "MODE": "local", "java.opts": "-Xmx1g",
    }  # fmt: skip
    # Before the Deployment that needs it (kubectl apply -f goes in order).
    kinds = [(d["kind"], d["metadata"]["name"]) for d in listed]
    assert kinds.index(("ConfigMap", "shop-web-env")) < kinds.index(("Deployment", "shop-web"))
    web = container(docs, "shop-web")
    assert web["envFrom"] == [{"configMapRef": {"name": "shop-web-env"}}]
    # env keeps what environment sets differently (LEVEL=debug is the files' already).
    assert web["env"] == [{"name": "MODE", "value": "prod"}, {"name": "EXTRA", "value": "1"}]
    # What the pod would see is what forkwell up gives the program.
    programs = forkwell.load_config(config).programs
    assert resolved(docs, "shop-web") == dict(programs["web"].environment)
    # [supervisor] env_file reaches a program without files of its own.
    assert docs["ConfigMap", "shop-worker-env"]["data"] == {"REGION": "eu", "LEVEL": "info"}
    assert resolved(docs, "shop-worker") == dict(programs["worker"].environment)
    assert "env" not in container(docs, "shop-worker")


def test_the_manifest_says_precedence_missing_files_and_secrets(tmp_path: Path) -> None:
    text = export("kubernetes", "-c", str(fleet(tmp_path)), "--root", "/app").stdout
    configmap, deployment = text.split("kind: ConfigMap", 1)[0], text.split("kind: Deployment")[0]
    assert "# web: env_file /app/shared.env, /app/web.env, /app/web.local.env, /app/absent.env: " \
        "ConfigMap shop-web-env (envFrom); env overrides it, as environment overrides env_file " \
        "in forkwell" in deployment  # fmt: skip
    assert "# web: env_file /app/absent.env: missing when exported (env_file_optional): " \
        "not in the ConfigMap" in deployment  # fmt: skip
    assert "# DB_PASSWORD: a ConfigMap is not secret: move them to a Secret" in configmap
    assert "# java.opts: not C identifiers: a cluster without relaxed" in configmap
    assert "GREETING" not in text.split("shop-worker-env")[1]  # web's own stay web's


def test_only_missing_optional_files_mean_no_configmap(tmp_path: Path) -> None:
    config = fleet(tmp_path)
    (tmp_path / "shared.env").write_text("")  # plain's only variables would be from here
    docs = by_name(manifests(config))
    assert ("ConfigMap", "shop-plain-env") not in docs
    assert "envFrom" not in container(docs, "shop-plain")


def test_a_file_gone_since_the_config_was_read_is_a_config_error(tmp_path: Path) -> None:
    from forkwell._supervisor._export._common import Site
    from forkwell._supervisor._export._configmap import env_files

    config = forkwell.load_config(fleet(tmp_path))
    (tmp_path / "shared.env").unlink()  # after the config read it: export reads it again
    site = Site(config, "shop", tmp_path, ("forkwell",))
    with pytest.raises(forkwell.ConfigError) as caught:
        env_files(site, config.programs["worker"], {})
    assert caught.value.errors == [
        f"env_file: {tmp_path / 'shared.env'}: no such file "
        "(set env_file_optional = true if it may be missing)"
    ]


def test_pod_reads_the_files_in_the_container(tmp_path: Path) -> None:
    listed = manifests(fleet(tmp_path), "--pod", "--root", "/app")
    assert not [d for d in listed if d["kind"] == "ConfigMap"]
    text = export("kubernetes", "-c", str(fleet(tmp_path)), "--pod", "--root", "/app").stdout
    assert "# env_file /app/shared.env, /app/web.env, /app/web.local.env, /app/absent.env: " \
        "read by forkwell up in the container: put them in the image" in text  # fmt: skip
