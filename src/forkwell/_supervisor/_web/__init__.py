"""The supervisor's HTTP endpoint: a status page, a JSON API, metrics and health, in its own loop.

Off unless ``[supervisor] http`` (or ``forkwell up --http``) asks for it.
:mod:`._address` reads the setting (standard library only: the config
imports it); everything else needs h11 (``pip install 'forkwell[web]'``) and
is imported by the engine only once its event loop runs: :mod:`._http` (the
bounded HTTP/1.1 server on asyncio, h11 parsing), :mod:`._auth` (tokens,
sessions, CSRF, Host and Origin checks), :mod:`._live` (subscriptions to the
event log: server-sent events without a timer while nobody listens),
:mod:`._routes` (what each URL answers), :mod:`._page` (the HTML, with the
assets in ``static/``), :mod:`._metrics` (Prometheus' text format) and
:mod:`._server` (the whole, started and closed by ``Supervisor.run``).
"""
