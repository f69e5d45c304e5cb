# The leak checker (tests/leakcheck.py) is a plugin: its autouse fixture fails any
# test that leaves a process behind, and its pytest_configure starts the session
# subreaper.  pytester runs the leak checker's own negative control.
pytest_plugins = ["leakcheck", "pytester"]

# Hypothesis budgets (tests/test_fuzz.py): "ci" by default, a few seconds per
# target; "long" by hand: pytest tests/test_fuzz.py --hypothesis-profile=long
from hypothesis import HealthCheck, settings  # noqa: E402

_FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
settings.register_profile("ci", max_examples=150, **_FUZZ)
settings.register_profile("long", max_examples=20_000, **_FUZZ)
settings.load_profile("ci")
