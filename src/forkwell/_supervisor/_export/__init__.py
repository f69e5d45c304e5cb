"""``forkwell export``: the same ``forkwell.toml`` handed to systemd or to Kubernetes.

Part of the supervisor feature (it reads the supervisor's config): it writes
text, starts nothing.  :mod:`._common` resolves what every engine needs
(absolute commands, paths moved to where the fleet will live, the
``forkwell`` command the units call back), :mod:`._systemd` writes units,
:mod:`._kubernetes` writes manifests.  What an engine cannot express is said
in the output, next to the setting, and in ``docs/deploy.md``'s table.
"""
