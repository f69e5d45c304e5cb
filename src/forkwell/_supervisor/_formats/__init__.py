"""The fleets people already have: Procfile, supervisord.conf, process-compose.yaml.

Each format's module reads its file the way its own tool does and turns it
into the TOML-shaped data :func:`forkwell._supervisor._config.parse_config`
validates, so every format gets the same validation, errors and defaults:
:mod:`._procfile` (honcho's and foreman's Procfile and ``.env``),
:mod:`._supervisord` (supervisord's INI, its expansions and ``[include]``),
:mod:`._compose` (process-compose's YAML, with PyYAML's safe loader),
:mod:`._detect` (which format a file is, and which file ``forkwell up``
uses when given none: lean, for the control commands), :mod:`._load` (the
one entry point) and :mod:`._convert` (``forkwell convert``: a commented
``forkwell.toml``).
"""
