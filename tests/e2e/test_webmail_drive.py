"""The webmail's drive, settings and admin pages in a real browser (Playwright + Chromium)
against ``rmail serve``, plus the CSRF and cross-user checks with aiohttp."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from api_helpers import ApiServer, start_api_server

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
ALICE = ("alice@example.test", "alice-pw")
BOB = ("bob@example.test", "bob-pw")
CAROL = ("carol@example.test", "carol-pw")
ROOT = ("root@example.test", "root-pw")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    users = {
        ALICE[0]: (ALICE[1], False),
        BOB[0]: (BOB[1], False),
        CAROL[0]: (CAROL[1], False),
        ROOT[0]: (ROOT[1], True),
    }
    with start_api_server(tmp_path_factory.mktemp("webmail-drive"), users) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context()
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


def _login(context: Any, server: ApiServer, who: tuple[str, str], start: str = "/drive/") -> Any:
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{server.base}/webmail/login?next=/webmail{start}")
    page.fill("input[name=username]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(f"/webmail{start}")))
    return page


def _grid(page: Any) -> dict[str, str]:
    grid = page.locator("section.drive-grid")
    return {
        key: grid.get_attribute(f"data-{key}")
        for key in ("path", "total-files", "total-dirs", "total-bytes")
    }


def _tile(page: Any, path: str) -> Any:
    return page.locator(f'.tile-wrap[data-path="{path}"]')


def _menu(page: Any, path: str) -> Any:
    tile = _tile(page, path)
    tile.locator(".tile-menu > summary").click()
    return tile


def test_folder_upload_shows_tiles_and_stats_then_mkdir_rename_move_bulk_delete(
    server: ApiServer, context: Any, tmp_path: Path
) -> None:
    local = tmp_path / "photos"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_bytes(b"alpha")
    (local / "sub" / "b.txt").write_bytes(b"bravo!")
    page = _login(context, server, ALICE)

    page.set_input_files("input[data-upload-folder]", str(local))
    page.click("form.drive-upload-folder button[type=submit]")
    page.wait_for_url(re.compile(r"uploaded=2"))
    folder = _tile(page, "/photos")
    assert folder.get_attribute("data-type") == "dir"
    assert folder.locator(".tile-dir .tile-name").inner_text() == "photos"
    assert _grid(page) == {
        "path": "/",
        "total-files": "2",
        "total-dirs": "2",
        "total-bytes": "11",
    }
    assert "2 files" in page.locator(".drive-stats").inner_text()

    folder.locator("a.tile-dir").click()
    page.wait_for_url(re.compile(r"/webmail/drive/photos/$"))
    assert page.locator(".drive-breadcrumb .crumb").all_inner_texts() == ["Drive", "photos"]
    assert _tile(page, "/photos/a.txt").locator(".tile-meta").inner_text().startswith("5 B")

    page.fill("form.drive-mkdir input[name=name]", "archive")
    page.click("form.drive-mkdir button[type=submit]")
    page.wait_for_selector('.tile-wrap[data-path="/photos/archive"][data-type="dir"]')

    tile = _menu(page, "/photos/a.txt")
    tile.locator("form.tile-rename input[name=name]").fill("c.txt")
    tile.locator("form.tile-rename button[type=submit]").click()
    page.wait_for_selector('.tile-wrap[data-path="/photos/c.txt"] .tile-file')
    assert _tile(page, "/photos/a.txt").count() == 0

    tile = _menu(page, "/photos/c.txt")
    tile.locator("form.tile-move select[name=target]").select_option("/photos/archive")
    tile.locator("form.tile-move button[type=submit]").click()
    page.wait_for_load_state()
    assert _tile(page, "/photos/c.txt").count() == 0
    page.locator('.tile-wrap[data-path="/photos/archive"] a.tile-dir').click()
    page.wait_for_selector('.tile-wrap[data-path="/photos/archive/c.txt"]')
    page.locator(".drive-breadcrumb .crumb", has_text="photos").click()
    page.wait_for_url(re.compile(r"/webmail/drive/photos/$"))

    for path in ("/photos/sub", "/photos/archive"):
        _tile(page, path).locator("input.tile-select").check()
    page.click("form.drive-bulk button[value=delete]")
    page.wait_for_selector(".tiles .empty")
    assert _grid(page)["total-files"] == "0"
    assert _grid(page)["total-dirs"] == "0"


def test_upload_several_files_and_by_drag_and_drop(server: ApiServer, context: Any) -> None:
    page = _login(context, server, ALICE)
    files = [
        {"name": "one.txt", "mimeType": "text/plain", "buffer": b"1"},
        {"name": "two.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-22"},
    ]
    page.set_input_files("input[data-upload-files]", files)
    page.click("form.drive-upload button[type=submit]")
    page.wait_for_selector('.tile-wrap[data-path="/two.pdf"] .tile-icon[data-kind="pdf"]')
    assert _tile(page, "/one.txt").get_attribute("data-type") == "file"

    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["dropped!"], "dropped.txt", {type: "text/plain"}));
            const grid = document.querySelector("section.drive-grid");
            grid.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true,
                                                      cancelable: true}));
        }"""
    )
    page.wait_for_selector('.tile-wrap[data-path="/dropped.txt"]')
    assert "8 B" in _tile(page, "/dropped.txt").locator(".tile-meta").inner_text()


def test_shared_file_downloads_without_login_until_revoked(
    server: ApiServer, context: Any, browser: Any
) -> None:
    page = _login(context, server, ALICE)
    page.set_input_files(
        "input[data-upload-files]",
        [{"name": "report.txt", "mimeType": "text/plain", "buffer": b"quarterly numbers"}],
    )
    page.click("form.drive-upload button[type=submit]")
    download = _tile(page, "/report.txt").locator("a.tile-file").get_attribute("href")
    assert download is not None and download.startswith(server.base + "/webmail/drive-file/")
    response = page.request.get(download)
    assert response.status == 200
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["x-content-type-options"] == "nosniff"

    _menu(page, "/report.txt").locator("a.tile-share").click()
    page.wait_for_selector("section.share-dialog")
    page.check("form.share-create input[name=perm_U]")
    page.click("form.share-create button[type=submit]")
    link = page.locator(".share-item input.share-url").input_value()
    assert link.startswith(server.base + "/drive/")
    assert page.locator(".share-item").get_attribute("data-permissions") == "RU"

    stranger = browser.new_context()
    try:
        answer = stranger.request.get(link)
        assert answer.status == 200
        assert answer.body() == b"quarterly numbers"
        page.click("form.share-revoke button[type=submit]")
        page.wait_for_selector(".shares .empty")
        assert stranger.request.get(link).status == 404
    finally:
        stranger.close()


def _api(
    server: ApiServer, method: str, path: str, body: Any = None, token: str = ""
) -> tuple[int, Any]:
    """A JSON API call with urllib: (status, decoded body)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.base + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_password_change_keeps_the_session_and_revokes_old_password_and_tokens(
    server: ApiServer, context: Any, browser: Any
) -> None:
    status, answer = _api(
        server, "POST", "/auth/login", {"username": CAROL[0], "password": CAROL[1]}
    )
    assert status == 200
    token = answer["token"]
    assert _api(server, "GET", "/folders", token=token)[0] == 200
    other = browser.new_context()
    elsewhere = _login(other, server, CAROL)
    page = _login(context, server, CAROL, "/settings")
    assert page.locator("meter.quota-bar").get_attribute("data-quota") == str(1024 * 1024 * 1024)

    page.fill("form.settings-profile input[name=display_name]", "Carol Example")
    page.fill("form.settings-profile textarea[name=signature]", "Carol\nexample.test")
    page.click("form.settings-profile button[type=submit]")
    page.wait_for_url(re.compile(r"saved=profile"))
    page.goto(f"{server.base}/webmail/compose")
    assert page.locator("textarea[name=body]").input_value().endswith("-- \nCarol\nexample.test")
    page.fill("input[name=to]", CAROL[0])
    page.fill("input[name=subject]", "signed")
    page.click("button[name=save][value=send]")
    page.wait_for_url(re.compile(r"sent=1"))
    inbox = server.store.mailbox(CAROL[0]).folder("INBOX")
    sent = inbox.read(inbox.index.meta_at(len(inbox.index) - 1).uid)
    assert b"From: Carol Example <carol@example.test>" in sent

    page.goto(f"{server.base}/webmail/settings")
    page.fill("form.settings-password input[name=current]", "wrong")
    page.fill("form.settings-password input[name=new]", "carol-new")
    page.fill("form.settings-password input[name=confirm]", "carol-new")
    page.click("form.settings-password button[type=submit]")
    assert "current password is wrong" in page.locator(".error").inner_text()

    page.fill("form.settings-password input[name=current]", CAROL[1])
    page.fill("form.settings-password input[name=new]", "carol-new")
    page.fill("form.settings-password input[name=confirm]", "carol-new")
    page.click("form.settings-password button[type=submit]")
    page.wait_for_url(re.compile(r"saved=password"))
    page.goto(f"{server.base}/webmail/drive/")
    assert page.locator("section.drive-grid").count() == 1  # still logged in
    elsewhere.goto(f"{server.base}/webmail/drive/")
    assert "/webmail/login" in elsewhere.url  # the other session has ended
    other.close()

    assert _api(server, "GET", "/folders", token=token)[0] == 401
    old = {"username": CAROL[0], "password": CAROL[1]}
    assert _api(server, "POST", "/auth/login", old)[0] == 401
    fresh = browser.new_context()
    try:
        login = fresh.new_page()
        login.goto(f"{server.base}/webmail/login")
        login.fill("input[name=username]", CAROL[0])
        login.fill("input[name=password]", CAROL[1])
        login.click("button[type=submit]")
        assert "Wrong address or password" in login.locator(".error").inner_text()
    finally:
        fresh.close()


def test_admin_creates_and_disables_a_user_who_then_cannot_log_in(
    server: ApiServer, context: Any, browser: Any
) -> None:
    page = _login(context, server, ROOT, "/admin")
    page.fill("form.user-create input[name=username]", "dave")
    page.fill("form.user-create input[name=password]", "dave-pw")
    page.fill("form.user-create input[name=quota_mb]", "50")
    page.click("form.user-create button[type=submit]")
    page.wait_for_url(re.compile(r"done=created"))
    row = page.locator('tr.user-row[data-user="dave@example.test"]')
    assert row.get_attribute("data-quota") == "50"
    assert row.get_attribute("data-enabled") == "true"

    row.locator("form.user-toggle button[value=disable]").click()
    page.wait_for_url(re.compile(r"done=disabled"))
    assert row.get_attribute("data-enabled") == "false"

    fresh = browser.new_context()
    try:
        login = fresh.new_page()
        login.goto(f"{server.base}/webmail/login")
        login.fill("input[name=username]", "dave@example.test")
        login.fill("input[name=password]", "dave-pw")
        login.click("button[type=submit]")
        assert "Wrong address or password" in login.locator(".error").inner_text()
    finally:
        fresh.close()

    page.fill("form.alias-add input[name=pattern]", "sales@example.test")
    page.fill("form.alias-add input[name=target]", ALICE[0])
    page.click("form.alias-add button[type=submit]")
    page.wait_for_selector('tr.alias-row[data-pattern="sales@example.test"]')


def test_non_admin_gets_403_on_admin(server: ApiServer, context: Any) -> None:
    page = _login(context, server, BOB)
    assert page.locator(".areas a", has_text="Admin").count() == 0
    response = page.goto(f"{server.base}/webmail/admin")
    assert response is not None and response.status == 403


# -- aiohttp: CSRF and other users' things -----------------------------------------------------
# The sync Playwright of the module's browser fixture runs an event loop in this thread, so
# the aiohttp checks run on a loop of their own in a worker thread.


def _run(check: Callable[[aiohttp.ClientSession], Awaitable[None]]) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await check(http)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, main()).result(timeout=60)


async def _session(http: aiohttp.ClientSession, server: ApiServer, who: tuple[str, str]) -> str:
    """Log in; returns the session's CSRF token (read from a form)."""
    async with http.post(
        server.base + "/webmail/login",
        data={"username": who[0], "password": who[1]},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
    async with http.get(server.base + "/webmail/drive/") as response:
        page = await response.text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def test_posts_without_the_csrf_token_are_refused(server: ApiServer) -> None:
    _run(lambda http: _no_csrf(http, server))


async def _no_csrf(http: aiohttp.ClientSession, server: ApiServer) -> None:
    csrf = await _session(http, server, BOB)
    url = server.base + "/webmail/drive/"
    async with http.post(url, data={"action": "mkdir", "name": "nope"}) as response:
        assert response.status == 403
    upload = aiohttp.FormData()
    upload.add_field("file", b"x", filename="nope.txt")
    async with http.post(url, data=upload) as response:
        assert response.status == 403
    for path in ("/webmail/settings", "/webmail/drive-shares", "/webmail/admin"):
        async with http.post(server.base + path, data={"action": "profile"}) as response:
            assert response.status == 403, path
    async with http.post(url, data={"action": "mkdir", "name": "yes", "csrf": csrf}) as response:
        assert response.status == 200
        assert 'data-path="/yes"' in await response.text()
    async with http.get(url) as response:
        assert "nope" not in await response.text()


def test_another_users_files_and_shares_are_not_found(server: ApiServer) -> None:
    _run(lambda http: _cross_user(http, server))


async def _cross_user(http: aiohttp.ClientSession, server: ApiServer) -> None:
    owner = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with owner:
        csrf = await _session(owner, server, ALICE)
        upload = aiohttp.FormData(quote_fields=False)
        upload.add_field("csrf", csrf)
        upload.add_field("file", b"private", filename="secret/plan.txt")
        async with owner.post(server.base + "/webmail/drive/", data=upload) as response:
            assert response.status == 200
        async with owner.post(
            server.base + "/webmail/drive-shares",
            data={"csrf": csrf, "action": "create", "path": "/secret/plan.txt"},
        ) as response:
            page = await response.text()
        uid = re.search(r'data-uid="([^"]+)"', page)
        assert uid is not None
    mine = await _session(http, server, BOB)
    for path in (
        "/webmail/drive-file/secret/plan.txt",
        "/webmail/drive/secret/",
        "/webmail/drive-shares?path=/secret/plan.txt",
    ):
        async with http.get(server.base + path) as response:
            assert response.status == 404, path
    for action in ("revoke", "update"):
        async with http.post(
            server.base + "/webmail/drive-shares",
            data={"csrf": mine, "action": action, "uid": uid.group(1)},
        ) as response:
            assert response.status == 404, action
    async with http.get(f"{server.base}/drive/{uid.group(1)}/plan.txt") as response:
        assert await response.read() == b"private"  # the link still works for anyone


def test_without_javascript_delete_asks_on_a_confirmation_page(
    server: ApiServer, browser: Any
) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = _login(context, server, BOB)
        page.set_input_files(
            "input[data-upload-files]",
            [
                {"name": "x.txt", "mimeType": "text/plain", "buffer": b"x"},
                {"name": "y.txt", "mimeType": "text/plain", "buffer": b"y"},
            ],
        )
        page.click("form.drive-upload button[type=submit]")
        page.wait_for_selector('.tile-wrap[data-path="/y.txt"]')
        for path in ("/x.txt", "/y.txt"):
            _tile(page, path).locator("input.tile-select").check()
        page.click("form.drive-bulk button[value=delete]")
        page.wait_for_selector("section.drive-confirm")
        assert page.locator(".confirm-items li").all_inner_texts() == ["/x.txt", "/y.txt"]
        assert _tile(page, "/x.txt").count() == 0
        page.click("section.drive-confirm button[type=submit]")
        page.wait_for_selector("section.drive-grid")
        assert _tile(page, "/x.txt").count() == 0
        assert _tile(page, "/y.txt").count() == 0
    finally:
        context.close()
