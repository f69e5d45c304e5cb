"""Servers: ``ForkingServer`` (a child per connection), ``PreforkServer`` (a worker pool),
and ``serve_wsgi`` (WSGI apps over HTTP/1.1 on that pool; its parser is the ``wsgi`` extra).

A feature: it imports the core and :mod:`forkwell._exceptions`, never another
feature (``tests/test_layers.py``).  This ``__init__`` imports nothing.
"""
