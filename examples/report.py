"""A one-shot job that needs the web server: fetch a page, print it, exit 0."""

import os
import urllib.request

url = os.environ.get("URL", "http://127.0.0.1:8765/")
with urllib.request.urlopen(url, timeout=5) as response:
    print(f"report: {url} answered {response.status}: {response.read().decode().strip()}")
