# The leak checker (tests/leakcheck.py) is a plugin: its autouse fixture fails any
# test that leaves a process behind, and its pytest_configure starts the session
# subreaper.
pytest_plugins = ["leakcheck"]
