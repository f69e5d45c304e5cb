# The leak checker (tests/leakcheck.py) is a plugin: its autouse fixture fails any
# test that leaves a process behind, and its pytest_configure starts the session
# subreaper.  pytester runs the leak checker's own negative control.
pytest_plugins = ["leakcheck", "pytester"]

import signal  # noqa: E402

# A suite started in the background (``nohup``, ``cmd &`` in a script, some CI
# runners) inherits SIGINT, SIGQUIT or SIGHUP ignored, and every child then
# keeps them ignored, as forkwell and GNU timeout mean to: the tests that send
# them would fail for where they were started.  Give the suite the defaults a
# terminal would; tests of inherited ignored signals set them up themselves.
for _sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        _default = signal.default_int_handler if _sig == signal.SIGINT else signal.SIG_DFL
        signal.signal(_sig, _default)

# Hypothesis budgets (tests/test_fuzz.py): "ci" by default, a few seconds per
# target; "long" by hand: pytest tests/test_fuzz.py --hypothesis-profile=long
from hypothesis import HealthCheck, settings  # noqa: E402

_FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
settings.register_profile("ci", max_examples=150, **_FUZZ)
settings.register_profile("long", max_examples=20_000, **_FUZZ)
settings.load_profile("ci")
