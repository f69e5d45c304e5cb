import leakcheck

pytest_plugins = ["leakcheck"]


def pytest_configure(config):  # type: ignore[no-untyped-def]
    leakcheck.start_session_reaper()
