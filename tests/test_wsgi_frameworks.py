"""Real frameworks on forkwell.serve_wsgi: a Flask app and a Django project, driven by httpx.

The same checks for both: routing and query strings, form and JSON bodies, a
10 MB upload sent in chunks, a streamed response, a file response (through
``wsgi.file_wrapper``: the worker never read()s the file), cookies, an error
in the app (a 500; the traceback only in the error log; the worker lives on)
and a client that leaves mid-response (the app's iterable is closed).
"""

from __future__ import annotations

import hashlib
import os
import socket
import textwrap
from pathlib import Path

import httpx
import pytest
from helpers import wait_until
from wsgi_apps import WSGIServed

pytestmark = pytest.mark.timeout(60)

CHUNK = os.urandom(1 << 20)
TEN_MB_SHA = hashlib.sha256(CHUNK * 10).hexdigest()


def _syscr(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError("no syscr")


def check_leaving_client_closes_the_iterable(srv: WSGIServed, mark: Path) -> None:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(f"GET /forever?mark={mark} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # leave with RST
    wait_until(mark.exists, 10, "the app's iterable to be closed")


def check_file_response(srv: WSGIServed, c: httpx.Client, tmp_path: Path) -> None:
    blob = tmp_path / "download.bin"
    blob.write_bytes(os.urandom(3 << 20))
    (worker,) = srv.worker_pids()
    before = _syscr(worker)
    r = c.get("/file", params={"path": str(blob)})
    assert r.status_code == 200
    assert r.content == blob.read_bytes()
    assert _syscr(worker) - before < 100  # sendfile: the bytes never passed through the worker


def check_error_is_a_500_with_traceback_in_log(srv: WSGIServed, c: httpx.Client) -> None:
    pid = c.get("/pid").text
    r = c.get("/boom")
    assert r.status_code == 500
    assert "secret detail" not in r.text and "Traceback" not in r.text
    srv.wait_for(lambda lines: any("secret detail" in x for x in lines), 10, "the traceback")
    assert srv.count("Traceback") == 1, srv.text()
    assert c.get("/pid").text == pid


def test_flask(tmp_path: Path) -> None:
    with WSGIServed("wsgi_flask_app:create_app()", workers=1) as srv:
        srv.ready()
        with httpx.Client(base_url=srv.url, timeout=20) as c:
            assert c.get("/").text == "flask index"
            assert c.get("/users/42", params=[("q", "a b"), ("tag", "x"), ("tag", "y")]).json() == {
                "uid": 42, "q": "a b", "tags": ["x", "y"]}
            assert c.get("/users/nope").status_code == 404
            assert c.post("/form", data={"name": "Ada", "lang": "fr"}).json() == {
                "name": "Ada", "lang": "fr"}
            assert c.post("/json", json={"n": [1, 2]}).json() == {"got": {"n": [1, 2]}}
            r = c.post("/upload", content=iter([CHUNK] * 10))  # chunked on the wire
            assert r.json() == {"length": 10 << 20, "sha256": TEN_MB_SHA}
            r = c.post("/upload", files={"f": ("a.bin", CHUNK)})
            assert r.json()["sha256"] == hashlib.sha256(CHUNK).hexdigest()
            with c.stream("GET", "/stream", params={"n": 1000}) as r:
                assert r.headers["transfer-encoding"] == "chunked"
                assert sum(1 for _ in r.iter_lines()) == 1000
            check_file_response(srv, c, tmp_path)
            assert c.get("/cookie/set").cookies["flavour"] == "oatmeal"
            assert c.get("/cookie/get").json() == {"flavour": "oatmeal"}  # the jar sent it back
            check_error_is_a_500_with_traceback_in_log(srv, c)
        check_leaving_client_closes_the_iterable(srv, tmp_path / "closed")


DJANGO_FILES = {
    "djproj/__init__.py": "",
    "djproj/settings.py": """
        SECRET_KEY = "test-only"
        DEBUG = False
        ALLOWED_HOSTS = ["*"]
        ROOT_URLCONF = "djproj.urls"
        INSTALLED_APPS = []
        MIDDLEWARE = []
        USE_TZ = True
        DATA_UPLOAD_MAX_MEMORY_SIZE = None
        LOGGING = {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR",
                                           "propagate": False}},
        }
    """,
    "djproj/urls.py": """
        from django.urls import path
        from . import views
        urlpatterns = [path(name, view) for name, view in views.ROUTES.items()]
        urlpatterns.append(path("items/<int:n>/", views.item))
    """,
    "djproj/views.py": """
        import hashlib, json, os
        from pathlib import Path
        from django.http import (FileResponse, HttpResponse, JsonResponse,
                                 StreamingHttpResponse)

        def index(request):
            return HttpResponse("django index")

        def item(request, n):
            return JsonResponse({"n": n, "q": request.GET.get("q"),
                                 "tags": request.GET.getlist("tag")})

        def form(request):
            return JsonResponse(request.POST.dict())

        def json_body(request):
            return JsonResponse({"got": json.loads(request.body)})

        def upload(request):
            digest, size = hashlib.sha256(), 0
            for chunk in request.FILES["f"].chunks():
                digest.update(chunk)
                size += len(chunk)
            return JsonResponse({"length": size, "sha256": digest.hexdigest()})

        def stream(request):
            return StreamingHttpResponse(f"line {i}\\n" for i in range(int(request.GET["n"])))

        def forever(request):
            mark = request.GET["mark"]
            def body():
                try:
                    while True:
                        yield b"z" * 65536
                finally:
                    Path(mark).write_text(f"closed by {os.getpid()}")
            return StreamingHttpResponse(body())

        def file(request):
            return FileResponse(open(request.GET["path"], "rb"))

        def cookie_set(request):
            response = HttpResponse("set")
            response.set_cookie("flavour", "oatmeal")
            return response

        def cookie_get(request):
            return JsonResponse(request.COOKIES)

        def boom(request):
            raise RuntimeError("django boom: secret detail")

        def pid(request):
            return HttpResponse(str(os.getpid()))

        ROUTES = {"": index, "form": form, "json": json_body, "upload": upload,
                  "stream": stream, "forever": forever, "file": file,
                  "cookie/set": cookie_set, "cookie/get": cookie_get, "boom": boom, "pid": pid}
    """,
    "djproj/wsgi.py": """
        import os
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")
        from django.core.wsgi import get_wsgi_application
        application = get_wsgi_application()
    """,
}


def test_django(tmp_path: Path) -> None:
    for name, text in DJANGO_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    with WSGIServed("djproj.wsgi", cwd=tmp_path, workers=1) as srv:  # :application implied
        srv.ready()
        with httpx.Client(base_url=srv.url, timeout=20) as c:
            assert c.get("/").text == "django index"
            assert c.get("/items/7/", params=[("q", "é"), ("tag", "x"), ("tag", "y")]).json() == {
                "n": 7, "q": "é", "tags": ["x", "y"]}
            assert c.get("/items/nope/").status_code == 404
            assert c.post("/form", data={"name": "Ada", "lang": "fr"}).json() == {
                "name": "Ada", "lang": "fr"}
            assert c.post("/json", content=b'{"n": [1, 2]}').json() == {"got": {"n": [1, 2]}}
            # Django reads no chunked request body (it needs CONTENT_LENGTH): a 10 MB
            # multipart upload, which httpx sends in pieces and Django reads in chunks.
            r = c.post("/upload", files={"f": ("big.bin", CHUNK * 10)})
            assert r.json() == {"length": 10 << 20, "sha256": TEN_MB_SHA}
            with c.stream("GET", "/stream", params={"n": 1000}) as r:
                assert r.headers["transfer-encoding"] == "chunked"
                assert sum(1 for _ in r.iter_lines()) == 1000
            check_file_response(srv, c, tmp_path)
            assert c.get("/cookie/set").cookies["flavour"] == "oatmeal"
            assert c.get("/cookie/get").json() == {"flavour": "oatmeal"}
            check_error_is_a_500_with_traceback_in_log(srv, c)
        check_leaving_client_closes_the_iterable(srv, tmp_path / "closed")
