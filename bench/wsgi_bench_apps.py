"""The applications bench_wsgi.py serves with forkwell and with gunicorn (no benchmark here)."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify

BODY = b"Hello, world!"


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


flask_app = Flask(__name__)


@flask_app.get("/")
def index() -> Any:
    return jsonify(message="Hello, world!", items=list(range(10)))


def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """An app waiting 20 ms on I/O (a database, an API) per request."""
    import time

    time.sleep(0.02)
    return hello(environ, start_response)
