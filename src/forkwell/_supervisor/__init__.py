"""The supervisor: ``forkwell up``'s engine, its config, its programs and its control plane.

A feature: it imports the core and :mod:`forkwell._exceptions`, never another
feature (``tests/test_layers.py``).  This ``__init__`` imports nothing, so the
control client (``forkwell ps``) does not load the engine.
"""
