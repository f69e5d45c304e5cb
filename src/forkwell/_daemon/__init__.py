"""Daemons: ``daemonize()``, the engine of ``forkwell daemon``, pidfiles and locks.

A feature: it imports the core and :mod:`forkwell._exceptions`, never another
feature (``tests/test_layers.py``).  This ``__init__`` imports nothing.
"""
