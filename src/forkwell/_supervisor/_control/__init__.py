"""The supervisor's control plane: protocol, server, client and socket discovery.

The client half imports neither asyncio, tomllib nor the engine: ``forkwell ps``
starts in about the time of ``python -c pass``.  This ``__init__`` imports nothing.
"""
