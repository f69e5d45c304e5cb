"""A Flask application for the WSGI tests (no tests), made by ``create_app()``.

Served as ``wsgi_flask_app:create_app()``: the factory form gunicorn takes too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, Response, jsonify, make_response, request, send_file


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        return "flask index"

    @app.get("/users/<int:uid>")
    def user(uid: int) -> Response:
        return jsonify(uid=uid, q=request.args.get("q"), tags=request.args.getlist("tag"))

    @app.post("/form")
    def form() -> Response:
        return jsonify(dict(request.form))

    @app.post("/json")
    def json_body() -> Response:
        return jsonify(got=request.get_json())

    @app.post("/upload")
    def upload() -> Response:
        digest = hashlib.sha256()
        size = 0
        # A multipart file, or a chunked body read as it arrives.
        stream = request.files["f"].stream if request.files else request.stream
        while chunk := stream.read(65536):
            digest.update(chunk)
            size += len(chunk)
        return jsonify(length=size, sha256=digest.hexdigest())

    @app.get("/stream")
    def stream() -> Response:
        return Response((f"line {i}\n" for i in range(int(request.args["n"]))),
                        mimetype="text/plain")

    @app.get("/forever")
    def forever() -> Response:
        mark = request.args["mark"]

        def body() -> Iterator[bytes]:
            try:
                while True:
                    yield b"y" * 65536
            finally:
                Path(mark).write_text(f"closed by {os.getpid()}")

        return Response(body(), mimetype="application/octet-stream")

    @app.get("/file")
    def file() -> Response:
        return send_file(request.args["path"], mimetype="application/octet-stream")

    @app.get("/cookie/set")
    def cookie_set() -> Response:
        resp = make_response("set")
        resp.set_cookie("flavour", "oatmeal")
        return resp

    @app.get("/cookie/get")
    def cookie_get() -> Response:
        return jsonify(dict(request.cookies))

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("flask boom: secret detail")

    @app.get("/pid")
    def pid() -> str:
        return str(os.getpid())

    return app
