"""Browser tests: Playwright drives Debian's Chromium (headless) against a live `pictale serve` on 127.0.0.1.

Chromium never reaches beyond this machine: every host but localhost resolves to nothing, proxies point at a
closed local port, background networking is off. Every page also records each request it makes, and a test
fails if one left the server's origin. Screenshots of the pages a test visits go to
`test-artifacts/browser/` (CI keeps them; look at them by eye).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import ClassVar

import pytest

from tests.e2e.live import iter_server

REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("PICTALE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
]
SERVER_ENV = {"OMP_NUM_THREADS": "1", "PICTALE_MAX_STEPS": "5000"}  # 1 thread: OpenMP spin-waits cost 100x here


@pytest.fixture(scope="package")
def browser(tmp_path_factory):
    """Chromium for the browser tests only: Playwright's sync API runs an event loop on this thread while it is
    open, which would break later tests that call asyncio.run()."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: ./run test installs it (apt-get install chromium)")
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("chromium-config")),
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "no_proxy": "localhost,127.0.0.1,::1",
    }
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS, env=env)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A live server on the tiny demo model, one per test module: {"base", "port", "log", "proc"}."""
    yield from iter_server(tmp_path_factory.mktemp("web"), "tiny", env=SERVER_ENV, ready="/v1/server")


class Shots:
    """`shots("step")` saves a full-page screenshot named after the test; the last one is taken at teardown."""

    opened: ClassVar[dict[str, int]] = {}

    def __init__(self, page, name: str) -> None:
        # a second browser in the same test gets its own names: "-b", "-c", ...
        n = Shots.opened[name] = Shots.opened.get(name, 0) + 1
        self.page, self.name, self.n = page, name if n == 1 else f"{name}-{chr(ord('a') + n - 1)}", 0
        SHOTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, label: str) -> Path:
        self.n += 1
        path = SHOTS / f"{self.name}-{self.n:02d}-{label}.png"
        self.page.screenshot(path=path, full_page=True)
        return path


def open_page(browser, base: str, request, *, viewport=None, color_scheme="light", key: str | None = None):
    """A fresh browser context on `base` (with `key` already in its localStorage); yields (page, shots)."""
    context = browser.new_context(
        viewport=viewport or {"width": 1280, "height": 900}, color_scheme=color_scheme, accept_downloads=True
    )
    if key:
        context.add_init_script(f"localStorage.setItem('pictale.key', {key!r})")
    page = context.new_page()
    page.set_default_timeout(30_000)
    off_host: list[str] = []
    errors: list[str] = []

    def on_request(req) -> None:
        if not req.url.startswith((base + "/", "data:", "blob:")):
            off_host.append(req.url)

    page.on("request", on_request)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    shots = Shots(page, request.node.name)
    try:
        yield page, shots
    finally:
        shots("end")
        context.close()
    assert not off_host, f"requests left the server: {off_host}"
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def ui(browser, server, request):
    """(page, shots) on the module's server, light theme, desktop size."""
    yield from open_page(browser, server["base"], request)
