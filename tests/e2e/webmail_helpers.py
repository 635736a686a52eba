"""Helpers for the webmail end-to-end tests: Chromium through Playwright, a server with users,
and a login helper. Shared by every webmail area's tests (mail, calendar, drive, settings).

- ``chromium_path()``: Debian's Chromium at ``/usr/bin/chromium`` or ``$RMAIL_CHROMIUM``;
  a missing browser fails the test loudly (``.ci/run`` installs the ``chromium`` package),
  it never skips;
- ``launch_chromium()``: a headless browser for a module (``--no-sandbox`` when run as root,
  where Chromium refuses its sandbox);
- ``start_webmail_server(tmp_path, users)``: ``rmail serve`` with the users made through the
  store (``api_helpers.start_api_server``), as a :class:`WebmailServer` that knows its URLs;
- ``new_page(browser, server)``: a fresh context (own cookies) and page, with every request
  the page makes to a host other than 127.0.0.1 recorded and aborted;
- ``login(page, server, address, password)``: the login form, filled and sent.

A module uses them as::

    @pytest.fixture(scope="module")
    def browser() -> Iterator[Browser]:
        with launch_chromium() as b:
            yield b

The Playwright *sync* API is used: the tests are plain functions, and the server is a child
process, so there is no event loop of ours to share.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import pytest
from api_helpers import ApiServer, start_api_server
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright

__all__ = [
    "LOOPBACK",
    "PageRecorder",
    "WebmailServer",
    "chromium_path",
    "launch_chromium",
    "login",
    "new_page",
    "start_webmail_server",
]

LOOPBACK: Final = "127.0.0.1"
DEFAULT_CHROMIUM: Final = "/usr/bin/chromium"
# Chromium's first start on a loaded 2-core CI machine takes a few seconds; a page load
# of ours well under one. The margin is for the load.
TIMEOUT_MS: Final = 15_000
VIEWPORT: Final = {"width": 1280, "height": 800}


def chromium_path() -> str:
    """The Chromium binary to drive; fails the test (never skips) when there is none."""
    path = os.environ.get("RMAIL_CHROMIUM") or DEFAULT_CHROMIUM
    found = shutil.which(path)
    if found is None:
        pytest.fail(
            f"Chromium not found at {path}: install Debian's `chromium` package "
            "(.ci/run does) or point $RMAIL_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    return found


@contextlib.contextmanager
def launch_chromium() -> Iterator[Browser]:
    """A headless Chromium for the duration of the block."""
    executable = chromium_path()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=args, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class WebmailServer:
    """A running ``rmail serve`` (with its store open in the test process) and its URLs."""

    api: ApiServer

    @property
    def http(self) -> str:
        return f"http://{LOOPBACK}:{self.api.server.ports['http']}"

    @property
    def https(self) -> str:
        return f"https://{LOOPBACK}:{self.api.server.ports['https']}"

    def url(self, path: str = "", *, secure: bool = False) -> str:
        """``/webmail`` + ``path`` on the HTTP (or HTTPS) port."""
        return (self.https if secure else self.http) + "/webmail" + path

    def mail_url(self, folder: str, *rest: str, secure: bool = False) -> str:
        parts = [folder, *rest]
        return self.url(
            "/mail/" + "/".join(urllib.parse.quote(p, safe="") for p in parts), secure=secure
        )

    @property
    def store(self) -> Any:
        return self.api.store


@contextlib.contextmanager
def start_webmail_server(
    tmp_path: Path, users: Mapping[str, tuple[str, bool]], **overrides: Any
) -> Iterator[WebmailServer]:
    """``users``: address -> (password, admin). ``overrides``: config sections."""
    with start_api_server(tmp_path, users, **overrides) as api:
        yield WebmailServer(api)


@dataclass
class PageRecorder:
    """What a page did that a test may need to refuse: requests to other hosts (as
    ``"{resource type} {url}"``), dialogs, console messages, navigations of the top frame,
    and pages opened (popups)."""

    remote: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)
    popups: list[str] = field(default_factory=list)


def new_page(
    browser: Browser,
    *,
    color_scheme: Literal["light", "dark", "no-preference"] = "light",
    ignore_https_errors: bool = False,
) -> tuple[BrowserContext, Page, PageRecorder]:
    """A fresh context and page; requests to any host but 127.0.0.1 are recorded and aborted,
    dialogs are recorded and dismissed. The caller closes the context."""
    context = browser.new_context(
        viewport=VIEWPORT,  # type: ignore[arg-type]  # a dict with the ViewportSize keys
        color_scheme=color_scheme,
        ignore_https_errors=ignore_https_errors,
    )
    context.set_default_timeout(TIMEOUT_MS)
    record = PageRecorder()

    def route(r: Route) -> None:
        host = urllib.parse.urlsplit(r.request.url).hostname or ""
        if host != LOOPBACK and not r.request.url.startswith(("data:", "blob:", "about:")):
            record.remote.append(f"{r.request.resource_type} {r.request.url}")
            r.abort()
        else:
            r.continue_()

    context.route("**/*", route)
    page = context.new_page()
    page.on("dialog", lambda d: (record.dialogs.append(f"{d.type}: {d.message}"), d.dismiss()))
    page.on("console", lambda m: record.console.append(f"{m.type}: {m.text}"))
    page.on(
        "framenavigated",
        lambda f: record.navigations.append(f.url) if f == page.main_frame else None,
    )
    context.on("page", lambda p: record.popups.append(p.url))
    return context, page, record


def login(
    page: Page, server: WebmailServer, address: str, password: str, *, secure: bool = False
) -> None:
    """Open the login page, send the form, and wait for the page it leads to."""
    page.goto(server.url("/login", secure=secure))
    page.fill("input[name=username]", address)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
