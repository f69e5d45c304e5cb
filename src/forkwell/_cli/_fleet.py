"""The options ``forkwell up`` and the control commands share: which fleet they mean."""

from __future__ import annotations

from ._options import Option

# The default is the supervisor's (_supervisor._config.DEFAULT_FILE): the
# commands pass None on and the library applies it; reading it here would cost
# `forkwell up --help` tomllib.  tests/test_cli.py holds the two together.
CONFIG = Option(("-c", "--config"), "FILE",
                "the supervisor's config file (default ./forkwell.toml)")  # fmt: skip
SOCKET = Option(("--socket",), "PATH",
                "the control socket (default: $FORKWELL_SOCKET, else the config's [supervisor] "
                "socket)")  # fmt: skip
