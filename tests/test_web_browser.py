"""The status page in a real browser: headless Chromium, driven by Selenium, against a real ``forkwell up``.

Debian's ``chromium`` and ``chromium-driver`` (tests/debian-packages.txt) and
Selenium (the test extra); no browser is downloaded.  The page is checked as
a person sees it: a crash appears without a reload, an action is refused
without the token and taken with it, the log view follows new lines and
filters them, and the page reads on a phone and without JavaScript.

The screenshots are test artifacts, written to ``$FORKWELL_TEST_ARTIFACTS``
(default ``build/test-artifacts/``); the README's is one of them.

Waits are Selenium's ``WebDriverWait`` (a deadline over the page's state),
never a sleep; every program crashes when the test writes to its FIFO.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import read_pids
from webclient import TOKEN, Up, actions_up, fleet, make_fifo, poke

pytestmark = pytest.mark.timeout(180)

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (test extra)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("FORKWELL_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
WAIT = 20.0  # seconds for the page to show what the supervisor did

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "needs Debian's chromium and chromium-driver (bash tests/setup.sh installs them)",
        allow_module_level=True,
    )


@contextmanager
def browser(
    width: int = 1280, height: int = 900, *, javascript: bool = True, phone: bool = False
) -> Iterator[Any]:
    """Headless Chromium of the system, quit (and its processes gone) on exit.

    ``phone``: Chromium's own device emulation (a window cannot be narrower
    than 500 px, a phone's viewport is): touch, a mobile viewport, 2x pixels.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-prefers-reduced-motion",
                "--disable-background-networking", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    if phone:
        metrics = {"width": width, "height": height, "pixelRatio": 2.0, "touch": True}
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    driver = webdriver.Chrome(
        options=options, service=Service(CHROMEDRIVER, log_output=subprocess.DEVNULL)
    )
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: Any, what: str, check: Any) -> Any:
    """Wait for ``check(driver)`` to be truthy; the message says what the page failed to show."""
    return WebDriverWait(driver, WAIT).until(check, f"the page never showed {what}")


def cell(driver: Any, instance: str, field: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, f'tr[data-name="{instance}"] td[data-f="{field}"]')
    return found[0].text if found else ""


def mark_page(driver: Any) -> None:
    """A flag on this document: gone if the page reloads, so its presence proves no reload."""
    driver.execute_script("window.forkwellTestMark = 'not reloaded';")


def not_reloaded(driver: Any) -> bool:
    return bool(driver.execute_script("return window.forkwellTestMark === 'not reloaded';"))


def post_from_page(driver: Any, path: str, headers: dict[str, str] | None = None) -> int:
    """A POST the page's own script could make (same origin, its cookies): the HTTP status."""
    script = (
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: 'POST', credentials: 'same-origin', headers: arguments[1]})"
        ".then(r => done(r.status), e => done(String(e)));"
    )
    return int(driver.execute_async_script(script, path, headers or {}))


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def login(driver: Any, url: str, token: str) -> None:
    driver.get(url)
    field = driver.find_element(By.CSS_SELECTOR, 'form.login input[name="token"]')
    field.send_keys(token)
    field.submit()


def test_a_crash_shows_up_live_and_an_action_needs_the_token(tmp_path: Path) -> None:
    up, fifo, pids = actions_up(tmp_path)
    with up, browser() as driver:
        first = read_pids(pids, 1)[0]
        driver.get(up.url)
        until(driver, "the live stream connected", lambda d: d.find_element(By.ID, "live").text == "live")
        assert cell(driver, "crashy:0", "pid") == str(first)
        assert cell(driver, "crashy:0", "restarts") == "0"
        mark_page(driver)

        # A crash: the row and the event list change, the document stays the same.
        poke(fifo, "from the browser test")
        second = read_pids(pids, 2)[1]
        until(driver, "the restarted pid", lambda d: cell(d, "crashy:0", "pid") == str(second))
        until(driver, "one restart", lambda d: cell(d, "crashy:0", "restarts") == "1")
        until(driver, "RUNNING again", lambda d: cell(d, "crashy:0", "state") == "RUNNING")
        assert cell(driver, "crashy:0", "last_exit") == "1"  # the exit label, as ps prints it
        events = driver.find_element(By.ID, "events").text
        assert "crashy:0 RUNNING → EXITED" in events, events
        assert not_reloaded(driver)

        # Without the token: no button, and the page's own POST is refused.
        assert driver.find_elements(By.CSS_SELECTOR, "form.act") == []
        assert post_from_page(driver, "/api/v1/programs/crashy/restart") == 401
        assert post_from_page(driver, "/api/v1/programs/crashy/restart",
                              {"Authorization": "Bearer " + "x" * 32}) == 401  # fmt: skip
        login(driver, up.url, "not-the-token-at-all")
        until(driver, "the refused login", lambda d: "401" in d.title or "token" in d.page_source)
        assert driver.get_cookies() == []
        assert len(read_pids(pids, 2)) == 2  # nothing restarted

        # With the token: the buttons appear and restart takes effect, live.
        login(driver, up.url, TOKEN)
        until(driver, "the action buttons", lambda d: d.find_elements(By.CSS_SELECTOR, "form.act"))
        until(driver, "the live stream again", lambda d: d.find_element(By.ID, "live").text == "live")
        mark_page(driver)
        driver.find_element(
            By.CSS_SELECTOR, 'tr[data-name="crashy:0"] button[formaction$="/crashy:0/restart"]'
        ).click()
        third = read_pids(pids, 3)[2]
        until(driver, "the notice", lambda d: "requested" in d.find_element(By.ID, "notice").text)
        until(driver, "the new pid", lambda d: cell(d, "crashy:0", "pid") == str(third))
        assert not_reloaded(driver)
        # The session cannot be lifted by another page: HttpOnly, SameSite=Strict.
        (session,) = driver.get_cookies()
        assert session["httpOnly"] is True and session["sameSite"] == "Strict"
        assert driver.execute_script("return document.cookie;") == ""
        # The CSRF token is needed even with the session: a bare POST is refused.
        assert post_from_page(driver, "/api/v1/programs/crashy/restart") == 403
        shot = screenshot(driver, "status-page.png")
        audit = up.log_text()
    assert "http: restart crashy:0 by a page session from 127.0.0.1:" in audit, audit
    assert shot.stat().st_size > 10_000


def test_the_log_view_follows_new_lines_and_filters_them(tmp_path: Path) -> None:
    fifo = make_fifo(tmp_path / "talk.fifo")
    # The FIFO is held open read-write: reopening it per line would race with the
    # writer's close and read an EOF.
    script = (
        f"exec 3<> {fifo}; echo 'GET /a 200'; echo 'POST /b 500'; "
        'while read line <&3; do echo "said: $line"; done'
    )
    programs = f"[programs.talk]\ncommand = {json.dumps(['sh', '-c', script])}\n"
    log = tmp_path / ".forkwell" / "logs" / "talk.0.stdout.log"
    with Up(tmp_path, programs, http="127.0.0.1:0") as up, browser() as driver:
        read_lines = lambda: log.read_text() if log.exists() else ""  # noqa: E731
        until(driver, "the first lines in the file", lambda _: "POST /b" in read_lines())
        driver.get(up.url)
        driver.find_element(By.CSS_SELECTOR, 'tr[data-name="talk:0"] a[href="/logs/talk:0"]').click()
        until(driver, "the log following", lambda d: d.find_element(By.ID, "live").text == "following")
        pre = driver.find_element(By.ID, "log")
        assert "GET /a 200" in pre.text and "POST /b 500" in pre.text
        mark_page(driver)
        poke(fifo, "hello <b>world</b>")
        until(driver, "the new line", lambda d: "said: hello <b>world</b>" in pre.text)
        # The search box filters what is shown, new lines included, as one types.
        driver.find_element(By.ID, "q").send_keys("SAID")
        until(driver, "only matching lines", lambda d: "GET /a" not in pre.text)
        poke(fifo, "again")
        until(driver, "the next matching line", lambda d: "said: again" in pre.text)
        assert "said: hello <b>world</b>" in pre.text and "POST /b" not in pre.text
        # Escaped, not markup: no <b> element came from the program's output.
        assert pre.find_elements(By.TAG_NAME, "b") == []
        assert not_reloaded(driver)


def test_the_page_reads_on_a_phone_and_without_javascript(tmp_path: Path) -> None:
    programs, _, pids = fleet(tmp_path)
    with Up(tmp_path, programs, http="127.0.0.1:0") as up:
        read_pids(pids, 1)
        with browser(390, 844, phone=True) as phone:
            phone.get(up.url)
            until(phone, "the live stream", lambda d: d.find_element(By.ID, "live").text == "live")
            screenshot(phone, "status-page-phone.png")
            width = phone.execute_script("return document.documentElement.scrollWidth;")
            view = phone.execute_script("return window.innerWidth;")
            assert view < 500  # a phone's viewport, not a window's minimum
            assert width <= view, f"the page is {width}px wide on a {view}px screen"
            # Each instance is a card of "label  value" lines, not a table to scroll.
            td = 'tr[data-name="web:1"] td[data-f="restarts"]'
            shown = phone.execute_script(
                "const td = document.querySelector(arguments[0]);"
                "const box = td.getBoundingClientRect();"
                "return [getComputedStyle(td).display, getComputedStyle(td, '::before').content,"
                " box.right <= window.innerWidth, td.textContent];", td)  # fmt: skip
            assert shown == ["flex", '"restarts"', True, "0"], shown
        with browser(javascript=False) as plain:
            plain.get(up.url)
            assert plain.find_element(By.ID, "live").text == "static"  # the script did not run
            names = [tr.get_attribute("data-name")
                     for tr in plain.find_elements(By.CSS_SELECTOR, "tr[data-name]")]  # fmt: skip
            assert names == ["db:0", "web:0", "web:1", "crashy:0"]  # in start order
            assert cell(plain, "db:0", "state") == "RUNNING"
            # The log search works as a plain form.
            plain.find_element(By.CSS_SELECTOR, 'tr[data-name="crashy:0"] a[href$="stderr"]').click()
            plain.find_element(By.ID, "q").send_keys("nothing-matches-this")
            plain.find_element(By.CSS_SELECTOR, "form.search button").click()
            assert "0 of the last" in plain.find_element(By.CSS_SELECTOR, "p.meta").text
