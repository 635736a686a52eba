"""The webmail's mail pages in headless Chromium against a running server.

Login (and a wrong password, and the shared limiter's lockout), the list and message pages
through their stable selectors, reply and compose with an attachment (checked in the
recipient's mailbox), bulk actions, paging over more than one page, search, keyboard
shortcuts, and that every link is absolute. Messages are put in place through the store;
what the server did is checked in the store too.
"""

from __future__ import annotations

import datetime
import email
import email.message
import email.policy
import re
import urllib.parse
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from webmail_helpers import (
    PageRecorder,
    WebmailServer,
    launch_chromium,
    login,
    new_page,
    start_webmail_server,
)

from rmail.store.maildir import Folder

ALICE = ("alice@example.test", "alice-pw")
BOB = ("bob@example.test", "bob-pw")
DORA = ("dora@example.test", "dora-pw")  # bulk actions
ERIN = ("erin@example.test", "erin-pw")  # 120 messages: paging and search
FRED = ("fred@example.test", "fred-pw")  # keyboard shortcuts
PAGED = 120
PAGE_SIZE = 50


def _message(
    sender: str,
    to: str,
    subject: str,
    body: str,
    *,
    cc: str | None = None,
    html: str | None = None,
    attachment: tuple[str, bytes] | None = None,
    date: str = "Mon, 2 Nov 2026 10:00:00 +0000",
    message_id: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = message_id or f"<{abs(hash((subject, body)))}@remote.test>"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        name, content = attachment
        msg.add_attachment(content, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as b:
        yield b


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebmailServer]:
    users = {u: (p, False) for u, p in (ALICE, BOB, DORA, ERIN, FRED)}
    with start_webmail_server(
        tmp_path_factory.mktemp("webmail"), users, auth={"max_failures": 1000}
    ) as s:
        inbox = s.store.mailbox(ALICE[0]).folder("INBOX")
        inbox.append(
            _message(
                "Bob Builder <bob@example.test>",
                "Alice <alice@example.test>",
                "Lunch on Friday?",
                "Shall we meet at noon?",
                cc="Carol <carol@remote.test>",
                message_id="<lunch@example.test>",
            ),
            ["\\Flagged"],
        )
        inbox.append(
            _message(
                "Dave <dave@remote.test>",
                "alice@example.test",
                "Quarterly report",
                "The report is attached.",
                html="<p>The <b>report</b> is attached.</p>",
                attachment=("report.pdf", b"%PDF-1.4 quarterly"),
            ),
            ["\\Seen"],
        )
        erin = s.store.mailbox(ERIN[0]).folder("INBOX")
        erin.append_many(
            [
                (
                    _message(
                        f"Sender {i} <s{i}@remote.test>",
                        ERIN[0],
                        f"{'Invoice' if i % 10 == 0 else 'Note'} number {i}",
                        f"Body of message {i}." + (" kumquat" if i % 7 == 0 else ""),
                        message_id=f"<paged-{i}@remote.test>",
                    ),
                    (),
                    1_700_000_000 + i * 60,
                )
                for i in range(1, PAGED + 1)
            ]
        )
        yield s


@pytest.fixture
def tab(browser: Browser) -> Iterator[tuple[Page, PageRecorder]]:
    context, page, record = new_page(browser)
    try:
        yield page, record
    finally:
        context.close()
    assert not record.remote, record.remote
    assert not record.dialogs, record.dialogs


def _other_context(browser: Browser) -> tuple[BrowserContext, Page]:
    context, page, _ = new_page(browser)
    return context, page


def _uids(page: Page) -> list[int]:
    return [
        int(u)
        for u in page.eval_on_selector_all("tr.message-row", "rs => rs.map(r => r.dataset.uid)")
    ]


def _row(page: Page, uid: int) -> str:
    return f"tr.message-row[data-uid='{uid}']"


def _classes(page: Page, selector: str) -> set[str]:
    return set((page.get_attribute(selector, "class") or "").split())


# -- login -------------------------------------------------------------------------------------


def test_wrong_password_answers_401_and_the_right_one_opens_the_inbox(
    server: WebmailServer, tab: tuple[Page, PageRecorder]
) -> None:
    page, _ = tab
    page.goto(server.url("/mail/INBOX"))
    assert page.url.startswith(server.url("/login?next="))
    page.fill("input[name=username]", ALICE[0])
    page.fill("input[name=password]", "not-the-password")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    assert "Wrong address or password" in page.inner_text("p.error")
    assert page.context.cookies() == []
    page.fill("input[name=password]", ALICE[1])
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == server.mail_url("INBOX")
    assert page.inner_text("span.current-user") == ALICE[0]


def test_failed_logins_lock_out_with_429_through_the_shared_limiter(
    tmp_path: Path, browser: Browser
) -> None:
    users = {"locked@example.test": ("right", False)}
    with start_webmail_server(
        tmp_path, users, auth={"max_failures": 3, "lockout_seconds": 60}
    ) as s:
        context, page, _ = new_page(browser)
        try:
            statuses = []
            for password in ("wrong", "wrong", "wrong", "wrong", "right"):
                page.goto(s.url("/login"))
                page.fill("input[name=username]", "locked@example.test")
                page.fill("input[name=password]", password)
                with page.expect_response(lambda r: r.request.method == "POST") as answer:
                    page.click("button[type=submit]")
                statuses.append(answer.value.status)
            assert statuses == [401, 401, 401, 429, 429]
            assert "Too many failed attempts" in page.inner_text("p.error")
            assert context.cookies() == []
        finally:
            context.close()


# -- list and message: stable selectors --------------------------------------------------------


def test_list_page_has_the_stable_selectors(
    server: WebmailServer, tab: tuple[Page, PageRecorder]
) -> None:
    page, _ = tab
    login(page, server, *ALICE)
    assert page.is_visible("aside.sidebar") and page.is_visible("main.content")
    assert page.inner_text("span.current-user") == ALICE[0]
    active = page.query_selector_all("li.folder-item.active")
    assert len(active) == 1
    assert active[0].get_attribute("data-folder") == "INBOX"
    assert active[0].get_attribute("data-total") == "2"
    assert active[0].get_attribute("data-unread") == "1"
    names = page.eval_on_selector_all("li.folder-item", "ls => ls.map(l => l.dataset.folder)")
    assert {"INBOX", "Sent", "Drafts", "Trash"} <= set(names)
    for item in page.query_selector_all("li.folder-item"):
        assert item.get_attribute("data-total") is not None
        assert item.get_attribute("data-unread") is not None
    section = page.query_selector("section.message-list")
    assert section is not None
    assert section.get_attribute("data-folder") == "INBOX"
    assert section.get_attribute("data-total") == "2"
    uids = _uids(page)
    assert len(uids) == 2 and uids == sorted(uids, reverse=True)  # newest first
    lunch, report = uids[1], uids[0]
    row = _row(page, lunch)
    assert page.get_attribute(row, "data-folder") == "INBOX"
    assert {"message-row", "unread", "flagged"} <= _classes(page, row)
    assert page.get_attribute(row, "data-flags") == "\\Flagged"
    assert page.inner_text(f"{row} .message-from") == "Bob Builder"
    assert "Lunch on Friday?" in page.inner_text(f"{row} .message-subject")
    when = page.get_attribute(f"{row} time.message-date", "datetime")
    assert when is not None and datetime.datetime.fromisoformat(when).tzinfo is not None
    assert page.inner_text(f"{row} time.message-date")
    assert page.get_attribute(f"{row} a.message-link", "href") == server.mail_url(
        "INBOX", str(lunch)
    )
    assert not {"unread", "flagged"} & _classes(page, _row(page, report))
    info = page.query_selector("span.page-info")
    assert info is not None
    assert (info.get_attribute("data-total"), info.get_attribute("data-offset")) == ("2", "0")
    assert info.get_attribute("data-limit") == str(PAGE_SIZE)
    assert page.query_selector("nav.pagination .pagination-prev") is None
    assert page.query_selector("nav.pagination .pagination-next") is None
    _assert_links_absolute(page, server)


def test_message_page_has_the_stable_selectors_and_marks_it_read(
    server: WebmailServer, tab: tuple[Page, PageRecorder]
) -> None:
    page, _ = tab
    login(page, server, *ALICE)
    lunch = _uids(page)[1]
    page.click(f"{_row(page, lunch)} a.message-link")
    page.wait_for_selector("article.msg-detail")
    assert page.get_attribute("article.msg-detail", "data-uid") == str(lunch)
    assert page.get_attribute("article.msg-detail", "data-folder") == "INBOX"
    assert page.inner_text(".msg-subject") == "Lunch on Friday?"
    assert page.inner_text(".msg-from") == "Bob Builder <bob@example.test>"
    assert page.inner_text(".msg-to") == "Alice <alice@example.test>"
    assert page.inner_text(".msg-cc") == "Carol <carol@remote.test>"
    assert page.get_attribute("time.msg-date", "datetime")
    assert "Shall we meet at noon?" in page.inner_text(".msg-body")
    for action in (
        ".action-reply",
        ".action-forward",
        ".action-delete",
        ".action-move",
        ".action-toggle-read",
        ".action-toggle-star",
    ):
        assert page.query_selector(action) is not None, action
    assert page.query_selector("section.attachments") is None
    _assert_links_absolute(page, server)
    inbox = server.store.mailbox(ALICE[0]).folder("INBOX")
    assert "\\Seen" in _flags(inbox, lunch)

    page.goto(server.mail_url("INBOX"))
    report = _uids(page)[0]
    page.click(f"{_row(page, report)} a.message-link")
    section = page.wait_for_selector("section.attachments")
    assert section is not None and section.get_attribute("data-count") == "1"
    item = page.query_selector(".attachment-item")
    assert item is not None
    assert (item.get_attribute("data-index"), item.get_attribute("data-filename")) == (
        "0",
        "report.pdf",
    )
    with page.expect_download() as download:
        page.click(".attachment-item a.attachment-link")
    saved = download.value.path()
    assert Path(saved).read_bytes() == b"%PDF-1.4 quarterly"
    frame = page.frame_locator("iframe.html-body")
    assert frame.locator("b").inner_text() == "report"
    _assert_links_absolute(page, server)


def _flags(folder: Folder, uid: int) -> set[str]:
    index = folder.refresh()
    for pos in range(len(index)):
        meta = index.meta_at(pos)
        if meta.uid == uid:
            return set(meta.flags)
    raise AssertionError(f"uid {uid} not in {folder.name}")


def _assert_links_absolute(page: Page, server: WebmailServer) -> None:
    """Every href, src and form action is a full URL on this server's scheme, host and port."""
    urls = page.evaluate(
        """() => [...document.querySelectorAll('[href], [src], form[action]')].map(
            e => e.getAttribute('href') ?? e.getAttribute('src') ?? e.getAttribute('action'))"""
    )
    assert urls
    wrong = [u for u in urls if not u.startswith(server.http + "/")]
    assert not wrong, wrong


# -- reply and compose -------------------------------------------------------------------------


def _inbox_subjects(server: WebmailServer, address: str) -> dict[str, bytes]:
    folder = server.store.mailbox(address).folder("INBOX")
    index = folder.refresh()
    out = {}
    for pos in range(len(index)):
        raw = folder.read(index.meta_at(pos).uid)
        out[str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])] = raw
    return out


def test_reply_reaches_the_senders_inbox(
    server: WebmailServer, browser: Browser, tab: tuple[Page, PageRecorder]
) -> None:
    page, _ = tab
    login(page, server, *ALICE)
    lunch = _uids(page)[1]
    page.goto(server.mail_url("INBOX", str(lunch)))
    page.click(".action-reply")
    page.wait_for_selector("form.compose")
    assert page.input_value("input[name=to]") == "bob@example.test"
    assert page.input_value("input[name=subject]") == "Re: Lunch on Friday?"
    assert "> Shall we meet at noon?" in page.input_value("textarea[name=body]")
    page.fill("textarea[name=body]", "Noon is fine.\n" + page.input_value("textarea[name=body]"))
    with page.expect_navigation():
        page.click("button[name=save][value=send]")
    assert page.url.startswith(server.mail_url("Sent"))
    assert "Re: Lunch on Friday?" in page.inner_text("section.message-list")

    raw = _inbox_subjects(server, BOB[0])["Re: Lunch on Friday?"]
    reply = email.message_from_bytes(raw, policy=email.policy.default)
    assert reply["In-Reply-To"] == "<lunch@example.test>"
    assert "Noon is fine." in reply.get_body().get_content()  # type: ignore[union-attr]
    assert "\\Answered" in _flags(server.store.mailbox(ALICE[0]).folder("INBOX"), lunch)

    other, bob_page = _other_context(browser)
    try:
        login(bob_page, server, *BOB)
        subjects = bob_page.eval_on_selector_all(
            "tr.message-row .message-subject a.message-link", "as => as.map(a => a.textContent)"
        )
        assert "Re: Lunch on Friday?" in subjects
    finally:
        other.close()


def test_compose_with_an_attachment_delivers_it(
    server: WebmailServer, browser: Browser, tab: tuple[Page, PageRecorder]
) -> None:
    page, _ = tab
    login(page, server, *ALICE)
    page.click("a.compose")
    page.wait_for_selector("form.compose")
    page.fill("input[name=to]", BOB[0])
    page.fill("input[name=subject]", "Photos from the trip")
    page.fill("textarea[name=body]", "Two files attached.")
    content = bytes(range(256)) * 40
    page.set_input_files(
        "input[name=attachment]",
        [
            {"name": "trip.bin", "mimeType": "application/octet-stream", "buffer": content},
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"day one\n"},
        ],
    )
    with page.expect_navigation():
        page.click("button[name=save][value=send]")
    assert page.url.startswith(server.mail_url("Sent"))

    raw = _inbox_subjects(server, BOB[0])["Photos from the trip"]
    delivered = email.message_from_bytes(raw, policy=email.policy.default)
    files = {p.get_filename(): p.get_payload(decode=True) for p in delivered.iter_attachments()}  # type: ignore[attr-defined]
    assert files == {"trip.bin": content, "notes.txt": b"day one\n"}

    other, bob_page = _other_context(browser)
    try:
        login(bob_page, server, *BOB)
        bob_page.click("tr.message-row a.message-link:has-text('Photos from the trip')")
        section = bob_page.wait_for_selector("section.attachments")
        assert section is not None and section.get_attribute("data-count") == "2"
        names = bob_page.eval_on_selector_all(
            ".attachment-item", "is => is.map(i => i.dataset.filename)"
        )
        assert sorted(names) == ["notes.txt", "trip.bin"]
        with bob_page.expect_download() as download:
            bob_page.click(".attachment-item[data-filename='trip.bin'] a.attachment-link")
        assert download.value.suggested_filename == "trip.bin"
        assert Path(download.value.path()).read_bytes() == content
    finally:
        other.close()


# -- bulk actions ------------------------------------------------------------------------------


def test_bulk_actions_mark_star_move_and_delete(
    server: WebmailServer, tab: tuple[Page, PageRecorder]
) -> None:
    box = server.store.mailbox(DORA[0])
    box.create_folder("Projects")
    inbox = box.folder("INBOX")
    metas = [
        inbox.append(_message("x@remote.test", DORA[0], f"Bulk {i}", f"body {i}")) for i in range(5)
    ]
    uids = [m.uid for m in metas]
    page, _ = tab
    login(page, server, *DORA)

    def act(action: str, chosen: list[int], target: str | None = None) -> None:
        for uid in chosen:
            page.check(f"{_row(page, uid)} input[name=uid]")
        if target is not None:
            page.select_option("form.bulk select[name=target]", target)
        with page.expect_navigation():
            page.click(f"form.bulk button[name=action][value={action}]")

    act("read", uids[:2])
    assert all("unread" not in _classes(page, _row(page, u)) for u in uids[:2])
    assert all("unread" in _classes(page, _row(page, u)) for u in uids[2:])
    assert page.get_attribute("li.folder-item[data-folder=INBOX]", "data-unread") == "3"
    act("unread", uids[:1])
    assert "unread" in _classes(page, _row(page, uids[0]))
    act("star", uids[1:3])
    assert [("flagged" in _classes(page, _row(page, u))) for u in uids] == [
        False,
        True,
        True,
        False,
        False,
    ]
    assert "\\Flagged" in page.get_attribute(_row(page, uids[1]), "data-flags")  # type: ignore[operator]
    act("unstar", uids[2:3])
    assert "flagged" not in _classes(page, _row(page, uids[2]))

    act("move", uids[3:4], target="Projects")
    assert uids[3] not in _uids(page)
    assert len(box.folder("Projects").refresh()) == 1

    act("delete", uids[:2])
    assert set(_uids(page)) == {uids[2], uids[4]}
    assert page.get_attribute("section.message-list", "data-total") == "2"
    trash = box.folder("Trash")
    assert len(trash.refresh()) == 2
    page.goto(server.mail_url("Trash"))
    assert page.get_attribute("li.folder-item.active", "data-folder") == "Trash"
    trashed = _uids(page)
    assert len(trashed) == 2
    act("delete", trashed)
    assert _uids(page) == []
    assert len(trash.refresh()) == 0


# -- paging and search -------------------------------------------------------------------------


def _page_info(page: Page) -> tuple[int, int, int]:
    info = page.query_selector("span.page-info")
    assert info is not None
    return (
        int(info.get_attribute("data-total") or -1),
        int(info.get_attribute("data-offset") or -1),
        int(info.get_attribute("data-limit") or -1),
    )


def test_pagination_over_more_than_one_page(
    server: WebmailServer, tab: tuple[Page, PageRecorder]
) -> None:
    page, _ = tab
    login(page, server, *ERIN)
    assert _page_info(page) == (PAGED, 0, PAGE_SIZE)
    first = _uids(page)
    assert len(first) == PAGE_SIZE and first == sorted(first, reverse=True)
    assert page.query_selector("nav.pagination .pagination-prev") is None
    seen = list(first)
    for offset in (50, 100):
        with page.expect_navigation():
            page.click("nav.pagination .pagination-next")
        assert _page_info(page) == (PAGED, offset, PAGE_SIZE)
        assert urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)["offset"] == [
            str(offset)
        ]
        seen += _uids(page)
    assert len(_uids(page)) == PAGED - 100
    assert page.query_selector("nav.pagination .pagination-next") is None
    assert "101\u2013120 of 120" in page.inner_text("span.page-info")  # en dash
    assert seen == sorted(set(seen), reverse=True) and len(seen) == PAGED
    with page.expect_navigation():
        page.click("nav.pagination .pagination-prev")
    assert _page_info(page) == (PAGED, 50, PAGE_SIZE)
    _assert_links_absolute(page, server)


def test_search_by_text_and_by_subject_keeps_the_query_when_paging(
    server: WebmailServer, tab: tuple[Page, PageRecorder]
) -> None:
    page, _ = tab
    login(page, server, *ERIN)
    page.fill("input#q", "kumquat")
    with page.expect_navigation():
        page.press("input#q", "Enter")
    expected = [i for i in range(1, PAGED + 1) if i % 7 == 0]
    assert _page_info(page) == (len(expected), 0, PAGE_SIZE)
    assert page.get_attribute("section.message-list", "data-total") == str(len(expected))
    subjects = page.eval_on_selector_all("a.message-link", "as => as.map(a => a.textContent)")
    assert sorted(int(s.rsplit(" ", 1)[1]) for s in subjects) == expected
    assert page.input_value("input#q") == "kumquat"

    page.goto(server.mail_url("INBOX") + "?subject=Note")
    notes = [i for i in range(1, PAGED + 1) if i % 10]
    assert _page_info(page) == (len(notes), 0, PAGE_SIZE)
    with page.expect_navigation():
        page.click("nav.pagination .pagination-next")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
    assert query["subject"] == ["Note"] and query["offset"] == ["50"]
    assert _page_info(page) == (len(notes), 50, PAGE_SIZE)
    assert all("Note" in s for s in page.eval_on_selector_all(
        "a.message-link", "as => as.map(a => a.textContent)"
    ))  # fmt: skip

    page.goto(server.mail_url("INBOX") + "?text=no-such-word-anywhere")
    assert _page_info(page) == (0, 0, PAGE_SIZE)
    assert page.inner_text("span.page-info") == "0 of 0"


# -- keyboard shortcuts ------------------------------------------------------------------------


def test_keyboard_shortcuts_move_star_mark_and_delete(
    server: WebmailServer, tab: tuple[Page, PageRecorder]
) -> None:
    inbox = server.store.mailbox(FRED[0]).folder("INBOX")
    uids = [
        inbox.append(_message("k@remote.test", FRED[0], f"Key {i}", f"body {i}")).uid
        for i in range(3)
    ]
    newest = sorted(uids, reverse=True)
    page, _ = tab
    login(page, server, *FRED)

    def selected() -> list[int]:
        return [int(u) for u in page.eval_on_selector_all(
            "tr.message-row.selected", "rs => rs.map(r => r.dataset.uid)"
        )]  # fmt: skip

    page.keyboard.press("j")
    assert selected() == [newest[0]]
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("j")  # stays on the last row
    assert selected() == [newest[2]]
    page.keyboard.press("k")
    assert selected() == [newest[1]]

    with page.expect_navigation():
        page.keyboard.press("s")
    assert "flagged" in _classes(page, _row(page, newest[1]))
    assert "\\Flagged" in _flags(inbox, newest[1])
    page.keyboard.press("j")
    page.keyboard.press("j")
    with page.expect_navigation():
        page.keyboard.press("s")  # on a starred row: unstar
    assert "flagged" not in _classes(page, _row(page, newest[1]))

    page.keyboard.press("j")
    with page.expect_navigation():
        page.keyboard.press("u")  # unread row: mark read
    assert "unread" not in _classes(page, _row(page, newest[0]))
    assert "\\Seen" in _flags(inbox, newest[0])
    page.keyboard.press("j")
    with page.expect_navigation():
        page.keyboard.press("u")  # read row: mark unread
    assert "unread" in _classes(page, _row(page, newest[0]))

    page.keyboard.press("j")
    with page.expect_navigation():
        page.keyboard.press("#")
    assert _uids(page) == newest[1:]
    assert len(server.store.mailbox(FRED[0]).folder("Trash").refresh()) == 1

    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.press("Escape")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("?")
    assert page.is_visible("dialog#shortcuts")
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.get_attribute("article.msg-detail", "data-uid") == str(newest[1])

    # On a message: u marks it unread and goes back to the list (not to the message, which
    # would mark it read again); # deletes it and goes back to the list.
    with page.expect_navigation():
        page.keyboard.press("u")
    assert page.url.startswith(server.mail_url("INBOX"))
    assert "\\Seen" not in _flags(inbox, newest[1])
    page.goto(server.mail_url("INBOX", str(newest[1])))
    with page.expect_navigation():
        page.keyboard.press("#")
    assert page.url.startswith(server.mail_url("INBOX"))
    assert _uids(page) == newest[2:]
    page.keyboard.press("c")
    page.wait_for_url(re.compile(r".*/webmail/compose$"))
