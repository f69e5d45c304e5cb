"""The public surface: exactly what __all__ says, each name importable, nothing private leaks."""

import importlib
import subprocess
import sys

from helpers import PY

import forkwell


def test_all_is_sorted_and_unique() -> None:
    assert forkwell.__all__ == sorted(set(forkwell.__all__))


def test_every_exported_name_resolves() -> None:
    for name in forkwell.__all__:
        assert getattr(forkwell, name) is not None, name


def test_exported_objects_claim_the_public_module() -> None:
    for name in forkwell.__all__:
        obj = getattr(forkwell, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__module__ == "forkwell", f"{name} says {obj.__module__}"


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        forkwell.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_private_modules_are_private() -> None:
    mods = {m for m in sys.modules if m.startswith("forkwell.")}
    assert all(m.split(".")[1].startswith("_") for m in mods), mods


def test_import_is_lazy_and_stdlib_only() -> None:
    """`import forkwell` loads none of the feature modules (the CLI start-up depends on it)."""
    code = "import sys, forkwell; print(sorted(m for m in sys.modules if m.startswith('forkwell')))"
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['forkwell']"


def test_exceptions_subclass_the_fitting_builtins() -> None:
    assert issubclass(forkwell.CommandNotFoundError, FileNotFoundError)
    assert issubclass(forkwell.CommandNotExecutableError, PermissionError)
    assert issubclass(forkwell.SpawnResourceError, BlockingIOError)
    assert issubclass(forkwell.CommandTimedOutError, TimeoutError)
    for name in forkwell.__all__:
        obj = getattr(forkwell, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, forkwell.ForkwellError), name


def test_reimport_is_stable() -> None:
    assert importlib.import_module("forkwell") is forkwell


def test_classes_made_by_a_factory_refuse_direct_construction() -> None:
    """``Process`` comes from ``spawn()``: the class says so in code, not only in its docstring."""
    try:
        forkwell.Process(["true"])  # type: ignore[call-arg]
    except TypeError as exc:
        assert "forkwell.spawn()" in str(exc)
    else:
        raise AssertionError("Process() should have raised TypeError")
    proc = forkwell.spawn(["true"])
    assert proc.wait(10) == 0
    proc.close()


def test_run_async_has_the_signature_of_run() -> None:
    """No private parameter in a public signature; the async twin loses none of run()'s."""
    import inspect

    sync = inspect.signature(forkwell.run)
    assert not [p for p in sync.parameters if p.startswith("_")]
    assert inspect.signature(forkwell.run_async).parameters == sync.parameters
