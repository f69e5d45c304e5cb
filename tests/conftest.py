# The leak checker (tests/leakcheck.py) is a plugin: its autouse fixture fails any
# test that leaves a process behind, and its pytest_configure starts the session
# subreaper.  pytester runs the leak checker's own negative control.
pytest_plugins = ["leakcheck", "pytester"]
