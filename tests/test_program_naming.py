"""The keys the imported formats needed in forkwell's own: priority, process_group,
instance_name, port and name_variables, on a real Supervisor."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_supervisor_harness import cmd, config, drive, info, until, when

from forkwell import ConfigError, Supervisor, UnknownProgramError

pytestmark = pytest.mark.timeout(40)


def test_priority_orders_starts_and_stops_like_supervisord(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.last]
        command = {cmd("sleep", "1000")}
        priority = 900
        [programs.first]
        command = {cmd("sleep", "1000")}
        priority = 1
        [programs.middle]
        command = {cmd("sleep", "1000")}
        priority = 50
        numprocs = 2
        """,
    )
    seen: dict[str, Supervisor] = {}

    async def body(sup: Supervisor) -> None:
        seen["sup"] = sup
        assert [i.name for i in sup.instances()] == ["first:0", "middle:0", "middle:1", "last:0"]

    drive(cfg, body)
    sup = seen["sup"]
    started = [e.instance for e in sup.events if e.new == "STARTING"]
    assert started == ["first:0", "middle:0", "middle:1", "last:0"]
    # Stops: the highest priority first, each lower one only once those are STOPPED.
    assert when(sup, "last:0", "STOPPED") <= min(when(sup, f"middle:{i}", "STOPPING")
                                                 for i in range(2))
    assert max(when(sup, f"middle:{i}", "STOPPED") for i in range(2)) <= when(
        sup, "first:0", "STOPPING")


def test_dependencies_come_before_priority(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.app]
        command = {cmd("sleep", "1000")}
        priority = 1
        depends_on = ["db"]
        [programs.db]
        command = {cmd("sleep", "1000")}
        priority = 999
        """,
    )
    assert cfg.start_order() == ["db", "app"]

    async def body(sup: Supervisor) -> None:
        assert when(sup, "db:0", "RUNNING") <= when(sup, "app:0", "STARTING", 0) + 1

    drive(cfg, body)


def test_groups_and_instance_names_as_supervisorctl_names_them(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.front]
        command = {cmd("sleep", "1000")}
        process_group = "web"
        instance_name = "{{process_group}}:{{program}}"
        [programs.api]
        command = {cmd("sleep", "1000")}
        process_group = "web"
        numprocs = 2
        instance_name = "web:api-{{index:02d}}"
        [programs.solo]
        command = {cmd("sleep", "1000")}
        """,
    )

    async def body(sup: Supervisor) -> None:
        names = [i.name for i in sup.instances()]
        assert names == ["web:front", "web:api-00", "web:api-01", "solo:0"]
        assert sup.resolve(["web:*"]) == ["web:front", "web:api-00", "web:api-01"]
        assert sup.resolve(["web"]) == sup.resolve(["web:*"])
        assert sup.resolve(["web:api-01", "api"]) == ["web:api-01", "web:api-00"]
        results = await sup.stop(["web:*"])
        assert all(r.ok for r in results)
        assert info(sup, "solo:0").state == "RUNNING"
        assert info(sup, "web:front").state == "STOPPED"
        with pytest.raises(UnknownProgramError, match="groups: web"):
            sup.resolve(["nope:*"])
        with pytest.raises(ValueError, match="has no"):
            await sup.scale("front", 2)

    drive(cfg, body)


def test_port_and_name_variables_as_foreman_and_honcho_set_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(
        tmp_path,
        f"""
        [programs.web]
        command = ["/bin/sh", "-c", "echo $PORT $PS $HONCHO_PROCESS_NAME > {out}/$PS; exec sleep 1000"]
        numprocs = 3
        port = 5100
        instance_name = "{{program}}.{{number}}"
        name_variables = ["PS", "HONCHO_PROCESS_NAME"]
        environment = {{ PORT = "1" }}
        """,
    )

    async def body(sup: Supervisor) -> None:
        await until(lambda: len(list(out.iterdir())) == 3, what="three instances writing")
        got = {p.name: p.read_text().split() for p in out.iterdir()}
        assert got == {f"web.{n}": [str(5099 + n), f"web.{n}", f"web.{n}"] for n in (1, 2, 3)}

    drive(cfg, body)


@pytest.mark.parametrize(("table", "message"), [
    ('numprocs = 2\ninstance_name = "{program}"',
     "programs.a.instance_name: '{program}' names every instance alike"),
    ('instance_name = "b"', "programs.a.instance_name: instance name 'b' is also the name of"),
    ('instance_name = "{nope}"', "programs.a.instance_name: expected a name like"),
    ('instance_name = "all"', "makes 'all'"),
    ('process_group = "b"', "programs.a.process_group: 'b' is also a program's name"),
    ('process_group = "x:y"', "programs.a.process_group: expected a group name"),
    ("port = 70000", "programs.a.port: expected a port number 1-65535"),
    ('priority = "1"', "programs.a.priority: expected an integer"),
    ('name_variables = ["A=B"]', "programs.a.name_variables: expected an array of environment"),
])  # fmt: skip
def test_the_naming_keys_are_checked(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, f'[programs.a]\ncommand = "true"\n{table}\n[programs.b]\ncommand = "true"\n')
    assert any(message in e for e in caught.value.errors), caught.value.errors
