"""Servers: ``ForkingServer`` (a child per connection) and ``PreforkServer`` (a worker pool).

A feature: it imports the core and :mod:`forkwell._exceptions`, never another
feature (``tests/test_layers.py``).  This ``__init__`` imports nothing.
"""
