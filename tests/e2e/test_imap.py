"""IMAP end to end: ``rmail serve`` as a real process on loopback, driven over raw sockets,
imaplib and imapclient.

Every command of RFC 3501 and of the extensions rmail advertises is sent in every state
where it matters, and the replies are compared with the RFC's forms (exactly where the RFC
fixes them: ``* n EXISTS``, ``* OK [UIDVALIDITY n]``, ``[READ-WRITE]``...). Then bad input
and limits, two sessions on one mailbox (what each sees and when), the standard clients,
and CONDSTORE/QRESYNC resynchronisation.

Servers are module-scoped, one per configuration: ``main`` (plaintext login allowed on
loopback), ``strict`` (TLS required, 3 BADs, 5 s login timer) and ``lockout`` (3 failed
logins). On ``main`` each test makes its own account through the store while the server
runs, so tests share nothing but the process.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import email.utils
import imaplib
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from imap_helpers import (
    LOOPBACK,
    TLS_NAME,
    ImapServer,
    RawImap,
    Reply,
    deliver,
    make_message,
    start_imap_server,
)
from imapclient import IMAPClient  # type: ignore[import-untyped]  # ships no types

from rmail import __version__
from rmail.imap import fetch
from rmail.imap.parser.types import FetchAttr
from rmail.imap.responses import Code
from rmail.store.maildir import normalize_crlf

ALICE: Final = "alice@example.test"
PASSWORDS: Final = {ALICE: "alice-Pw-7f3a9c1e"}
APPEND_LIMIT: Final = 20000  # smtp.max_message_size: what APPENDLIMIT advertises
SYSTEM_FLAGS: Final = rb"\Answered \Flagged \Deleted \Seen \Draft"

# A message with every kind of part: multipart/alternative inside multipart/mixed, a
# base64 attachment with NULs, and an attached message/rfc822.
NESTED: Final = (
    b"From: Ann Example <ann@remote.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: nested parts\r\n"
    b"Date: Tue, 01 Mar 2022 10:00:00 +0000\r\n"
    b"Message-ID: <nested@remote.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n"
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: multipart/alternative; boundary=YY\r\n"
    b"\r\n"
    b"--YY\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"plain text\r\n"
    b"--YY\r\n"
    b"Content-Type: text/html; charset=us-ascii\r\n"
    b"\r\n"
    b"<p>0123456789 html</p>\r\n"
    b"--YY--\r\n"
    b"--XX\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQ=\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@remote.test\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--XX--\r\n"
)


def conversation() -> list[bytes]:
    """Five messages for SORT and THREAD: a thread of four around "topic", and "other"."""
    # (subject, Message-ID, References, sender); message n is dated n January 2024.
    specs = [
        ("topic", "<t1@x.test>", "", "zoe@x.test"),
        ("Re: topic", "<t2@x.test>", "<t1@x.test>", "bob@x.test"),
        ("other", "<t3@x.test>", "", "amy@x.test"),
        ("Re: topic", "<t4@x.test>", "<t1@x.test> <t2@x.test>", "cal@x.test"),
        ("RE: Topic", "<t5@x.test>", "<t1@x.test>", "dan@x.test"),
    ]
    out: list[bytes] = []
    for subject, message_id, references, sender in specs:
        date = email.utils.format_datetime(
            datetime.datetime(2024, 1, len(out) + 1, 10, tzinfo=datetime.UTC)
        )
        headers = f"Message-ID: {message_id}\r\n"
        if references:
            headers += f"References: {references}\r\nIn-Reply-To: {references.split()[-1]}\r\n"
        body = "x" * (100 * len(out) + 10) + "\r\n"  # sizes grow with the position
        out.append(make_message(subject, sender=sender, date=date, headers=headers, body=body))
    return out


# ------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapServer]:
    with start_imap_server(
        tmp_path_factory.mktemp("main"),
        PASSWORDS,
        smtp={"max_message_size": APPEND_LIMIT},
    ) as server:
        yield server


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapServer]:
    """TLS required for login, 3 BADs end a connection, 5 s to log in."""
    with start_imap_server(
        tmp_path_factory.mktemp("strict"),
        PASSWORDS,
        plaintext=False,
        imap={"max_bad_commands": 3, "preauth_timeout": 5},
    ) as server:
        yield server


@pytest.fixture(scope="module")
def lockout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapServer]:
    """Its own server: a lockout holds for every login from 127.0.0.1."""
    with start_imap_server(
        tmp_path_factory.mktemp("lockout"), PASSWORDS, auth={"max_failures": 3}
    ) as server:
        yield server


@pytest.fixture
def user(main: ImapServer) -> str:
    """A fresh account on ``main``: its folders and messages belong to this test alone."""
    return main.new_user()


@pytest.fixture
def imap(main: ImapServer, user: str) -> Iterator[RawImap]:
    """A raw session logged in as ``user``."""
    with main.login(user) as client:
        yield client


def fill(main: ImapServer, user: str, count: int, folder: str = "INBOX") -> list[int]:
    """``count`` small messages ``m1``.. in ``folder``; their UIDs."""
    return [
        main.add(user, make_message(f"m{i}", body=f"body {i}\r\n"), folder)
        for i in range(1, count + 1)
    ]


def esearch(reply: Reply, data: bytes) -> bytes:
    """The ESEARCH response expected for ``reply``'s command (RFC 4731 §3.1)."""
    return (b'* ESEARCH (TAG "%s") ' % reply.tag.encode() + data).rstrip()


def lit(data: bytes) -> bytes:
    """``data`` as a synchronizing literal, as the server sends it."""
    return b"{%d}\r\n%s" % (len(data), data)


def uid_of(reply: Reply) -> dict[int, int]:
    """sequence number -> UID from the ``* n FETCH (... UID u ...)`` lines of a reply."""
    out = {}
    for line in reply.lines(b""):
        match = re.match(rb"\* (\d+) FETCH \(.*UID (\d+)", line)
        if match:
            out[int(match[1])] = int(match[2])
    return out


# ================================================================== not authenticated


def test_greeting_and_capability_before_login(main: ImapServer) -> None:
    with main.connect() as client:
        caps = b"IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE STARTTLS AUTH=PLAIN AUTH=LOGIN"
        assert client.greeting == b"* OK [CAPABILITY " + caps + b"] rmail IMAP4rev1 ready"
        reply = client.ok("CAPABILITY")
        assert reply.untagged == [b"* CAPABILITY " + caps]
        assert reply.tagged == b"t1 OK CAPABILITY completed"


def test_capability_after_login_lists_every_extension_and_no_starttls(
    main: ImapServer, user: str
) -> None:
    expected = {
        "IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT",
        "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE", "LIST-EXTENDED",
        "LIST-STATUS", "CONDSTORE", "QRESYNC", "ESEARCH", "SEARCHRES", "SORT", "ESORT",
        "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "QUOTA", "QUOTA=RES-STORAGE",
        "MULTIAPPEND", "BINARY", "STATUS=SIZE", f"APPENDLIMIT={APPEND_LIMIT}",
    }  # fmt: skip
    with main.connect() as client:
        login = client.ok(f"LOGIN {user} {main.passwords[user]}")
        # RFC 3501 §6.2.3 allows the capabilities in the tagged OK of LOGIN.
        assert login.code is not None and login.code.startswith("CAPABILITY ")
        assert set(login.code.split()[1:]) == expected
        for state_command in (None, "SELECT INBOX"):
            if state_command:
                client.ok(state_command)
            caps = client.ok("CAPABILITY").one(b"CAPABILITY")
            assert set(caps.decode().split()[2:]) == expected
            assert b"STARTTLS" not in caps and b"AUTH=" not in caps


def test_noop_and_logout_in_every_state(main: ImapServer, user: str) -> None:
    for login, select in ((False, False), (True, False), (True, True)):
        with main.connect() as client:
            if login:
                client.ok(f"LOGIN {user} {main.passwords[user]}")
            if select:
                client.ok("SELECT INBOX")
            noop = client.ok("NOOP")
            assert noop.untagged == [] and noop.text == "NOOP completed"
            logout = client.ok("LOGOUT")
            assert logout.untagged == [b"* BYE rmail logging out"]
            assert client.closed_within(5)


def test_authenticate_plain_with_initial_response(main: ImapServer, user: str) -> None:
    blob = base64.b64encode(f"\0{user}\0{main.passwords[user]}".encode()).decode()
    with main.connect() as client:
        reply = client.ok(f"AUTHENTICATE PLAIN {blob}")
        assert reply.untagged == [] and reply.text.endswith("logged in")
        client.ok("SELECT INBOX")


def test_authenticate_plain_with_continuation(main: ImapServer, user: str) -> None:
    with main.connect() as client:
        tag = client.start("AUTHENTICATE PLAIN")
        assert client.read_line() == b"+ "  # RFC 3501 §7.5: an empty challenge
        client.send(base64.b64encode(f"{user}\0{user}\0{main.passwords[user]}".encode()) + b"\r\n")
        assert client.collect(tag).status == "OK"


def test_authenticate_login_asks_username_then_password(main: ImapServer, user: str) -> None:
    with main.connect() as client:
        tag = client.start("AUTHENTICATE LOGIN")
        assert client.read_line() == b"+ " + base64.b64encode(b"Username:")
        client.send(base64.b64encode(user.encode()) + b"\r\n")
        assert client.read_line() == b"+ " + base64.b64encode(b"Password:")
        client.send(base64.b64encode(main.passwords[user].encode()) + b"\r\n")
        assert client.collect(tag).status == "OK"
        client.ok('LIST "" INBOX')


def test_authenticate_cancelled_or_unknown_mechanism(main: ImapServer) -> None:
    with main.connect() as client:
        tag = client.start("AUTHENTICATE PLAIN")
        assert client.read_line() == b"+ "
        client.send(b"*\r\n")  # RFC 3501 §6.2.2: the client cancels
        assert client.collect(tag).status == "BAD"
        reply = client.cmd("AUTHENTICATE CRAM-MD5")
        assert reply.status == "NO"
        client.ok("NOOP")  # still not authenticated, still served
        assert client.cmd("SELECT INBOX").status == "BAD"


def test_login_with_wrong_password_says_authenticationfailed(main: ImapServer, user: str) -> None:
    with main.connect() as client:
        reply = client.cmd(f"LOGIN {user} not-the-password")
        assert reply.status == "NO" and reply.code == Code.AUTHENTICATIONFAILED
        # A failure leaves the session where it was: a good login still works.
        client.ok(f"LOGIN {user} {main.passwords[user]}")


def test_login_with_literals_and_quoted_strings(main: ImapServer, user: str) -> None:
    password = main.passwords[user]
    with main.connect() as client:
        tag = client.start(f"LOGIN {{{len(user)}}}")
        assert client.read_line().startswith(b"+ ")
        client.send(f'{user} "{password}"\r\n'.encode())
        assert client.collect(tag).status == "OK"
    with main.connect() as client:
        # LITERAL+ (RFC 7888): no continuation is waited for.
        client.send(
            f"a1 LOGIN {{{len(user)}+}}\r\n{user} {{{len(password)}+}}\r\n{password}\r\n".encode()
        )
        assert client.collect("a1").status == "OK"


def test_id_is_answered_in_every_state(main: ImapServer, user: str) -> None:
    with main.connect() as client:
        reply = client.ok('ID ("name" "pytest" "version" "1")')
        assert reply.untagged == [b'* ID ("name" "rmail" "version" "%s")' % __version__.encode()]
        client.ok(f"LOGIN {user} {main.passwords[user]}")
        assert client.ok("ID NIL").one(b"ID").startswith(b'* ID ("name" "rmail"')


def test_commands_in_the_wrong_state_are_bad(main: ImapServer, user: str) -> None:
    with main.connect() as client:
        for command in ("SELECT INBOX", 'LIST "" *', "FETCH 1 FLAGS", "IDLE", "NAMESPACE"):
            reply = client.cmd(command)
            assert reply.status == "BAD", command
            assert "not allowed in state not_authenticated" in reply.text
    # Each BAD counts toward imap.max_bad_commands (10): a fresh connection per state.
    with main.login(user) as client:
        wrong = ("LOGIN a b", "AUTHENTICATE PLAIN", "STARTTLS", "FETCH 1 FLAGS",
                 "STORE 1 +FLAGS (\\Seen)", "EXPUNGE", "CLOSE", "UNSELECT", "CHECK")  # fmt: skip
        for command in wrong:
            assert client.cmd(command).status == "BAD", command
    with main.login(user) as client:
        for command in ("SEARCH ALL", "COPY 1 INBOX", "UID FETCH 1 FLAGS", "MOVE 1 INBOX"):
            assert client.cmd(command).status == "BAD", command
        client.ok("SELECT INBOX")
        for command in ("LOGIN a b", "AUTHENTICATE PLAIN", "STARTTLS"):
            assert client.cmd(command).status == "BAD", command


# ------------------------------------------------------------------ TLS and LOGINDISABLED


def test_logindisabled_without_tls(strict: ImapServer) -> None:
    with strict.connect() as client:
        caps = b"IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE STARTTLS LOGINDISABLED"
        assert client.greeting.startswith(b"* OK [CAPABILITY " + caps + b"]")
        assert client.ok("CAPABILITY").untagged == [b"* CAPABILITY " + caps]
        login = client.cmd(f"LOGIN {ALICE} {PASSWORDS[ALICE]}")
        assert login.status == "NO" and login.code == Code.PRIVACYREQUIRED
        blob = base64.b64encode(f"\0{ALICE}\0{PASSWORDS[ALICE]}".encode()).decode()
        auth = client.cmd(f"AUTHENTICATE PLAIN {blob}")
        assert auth.status == "NO" and auth.code == Code.PRIVACYREQUIRED


def test_starttls_then_login_works(strict: ImapServer) -> None:
    with strict.connect() as client:
        assert client.starttls(strict.context).text == "Begin TLS negotiation now"
        caps = client.ok("CAPABILITY").one(b"CAPABILITY").split()
        assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
        assert b"AUTH=PLAIN" in caps
        assert client.cmd("STARTTLS").status == "BAD"  # already TLS
        client.ok(f"LOGIN {ALICE} {PASSWORDS[ALICE]}")
        client.ok("SELECT INBOX")


def test_starttls_discards_commands_pipelined_in_clear(strict: ImapServer) -> None:
    with strict.connect() as client:
        # A man in the middle appends a command after STARTTLS (CVE-2011-0411).
        client.send(b"a1 STARTTLS\r\na2 CAPABILITY\r\n")
        assert client.read_line() == b"a1 OK Begin TLS negotiation now"
        client.sock = strict.context.wrap_socket(client.sock, server_hostname=TLS_NAME)
        assert client.pending(0.5) == b""
        client.ok("NOOP")


def test_imaps_port_speaks_tls_from_the_start(strict: ImapServer) -> None:
    with strict.connect(tls=True) as client:
        assert client.greeting.startswith(b"* OK [CAPABILITY ")
        assert b"STARTTLS" not in client.greeting and b"AUTH=PLAIN" in client.greeting
        client.ok(f"LOGIN {ALICE} {PASSWORDS[ALICE]}")
        assert client.ok("SELECT INBOX").code == "READ-WRITE"
    # The certificate is checked for the name "localhost".
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(strict.root / "secrets" / "tls" / "cert.pem"))
    with (
        socket.create_connection((LOOPBACK, strict.ports["imaps"]), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="not-the-name.test")


# ================================================================== authenticated


def test_select_answers_every_rfc3501_line_exactly(main: ImapServer, user: str) -> None:
    fill(main, user, 3)
    main.store.mailbox(user).folder("INBOX").change_flags(1, "add", ["\\Seen"])
    uidvalidity, uidnext, modseq = main.folder_state(user)
    with main.login(user) as client:
        reply = client.ok("SELECT INBOX")
        assert reply.untagged == [
            b"* FLAGS (" + SYSTEM_FLAGS + b")",
            b"* OK [PERMANENTFLAGS (" + SYSTEM_FLAGS + b" \\*)] flags permitted",
            b"* 3 EXISTS",
            b"* 3 RECENT",
            b"* OK [UNSEEN 2] first unseen",
            b"* OK [UIDVALIDITY %d] UIDs valid" % uidvalidity,
            b"* OK [UIDNEXT %d] predicted next UID" % uidnext,
            b"* OK [HIGHESTMODSEQ %d] highest" % modseq,
        ]
        assert reply.tagged == b"t2 OK [READ-WRITE] SELECT completed"
        # \Recent belongs to the first session only (RFC 3501 §2.3.2).
    with main.login(user) as client:
        assert b"* 0 RECENT" in client.ok("SELECT INBOX").untagged


def test_examine_is_read_only(main: ImapServer, user: str) -> None:
    fill(main, user, 2)
    with main.login(user) as client:
        reply = client.ok("EXAMINE INBOX")
        assert b"* OK [PERMANENTFLAGS ()] read-only" in reply.untagged
        assert b"* 2 EXISTS" in reply.untagged
        assert reply.tagged == b"t2 OK [READ-ONLY] EXAMINE completed"
        assert client.cmd("STORE 1 +FLAGS (\\Flagged)").status == "NO"
        assert client.cmd("EXPUNGE").status == "NO"
        assert client.cmd("MOVE 1 Trash").status == "NO"
        # BODY[] sets \Seen only where the mailbox is writable (RFC 3501 §6.4.5).
        fetched = client.ok("FETCH 1 (BODY[] FLAGS)")
        assert b"\\Seen" not in fetched.one(b"1 FETCH")
        client.ok("COPY 1 Trash")  # reading is allowed
        client.ok("CLOSE")
    assert main.store.mailbox(user).folder("INBOX").index.unseen == 2


def test_select_missing_mailbox_leaves_authenticated_state(main: ImapServer, user: str) -> None:
    with main.login(user, select="INBOX") as client:
        reply = client.cmd("SELECT Nowhere")
        # RFC 7162 §3.2.11: the old mailbox is closed first, and says so.
        assert reply.untagged == [b"* OK [CLOSED] previous mailbox closed"]
        assert reply.status == "NO" and reply.code == Code.NONEXISTENT
        assert client.cmd("FETCH 1 FLAGS").status == "BAD"  # no longer selected
        client.ok('LIST "" INBOX')


def test_create_makes_parents_and_refuses_existing(imap: RawImap) -> None:
    imap.ok("CREATE Projects/2024/Q1")
    imap.ok("CREATE Trailing/")  # RFC 3501 §6.3.3: a trailing delimiter is allowed
    again = imap.cmd("CREATE Projects/2024")
    assert again.status == "NO" and again.code == Code.ALREADYEXISTS
    assert imap.cmd("CREATE INBOX").code == Code.ALREADYEXISTS
    listed = imap.ok('LIST "" Projects*').untagged
    assert listed == [
        b'* LIST (\\HasChildren) "/" Projects',
        b'* LIST (\\HasChildren) "/" Projects/2024',
        b'* LIST (\\HasNoChildren) "/" Projects/2024/Q1',
    ]
    assert imap.ok('LIST "" Trailing').untagged == [b'* LIST (\\HasNoChildren) "/" Trailing']


def test_create_special_use(imap: RawImap) -> None:
    imap.ok("CREATE Old (USE (\\Archive))")
    assert imap.ok('LIST "" Old').untagged == [b'* LIST (\\HasNoChildren \\Archive) "/" Old']
    assert imap.cmd("CREATE Odd (USE (\\Nonsense))").status == "NO"


def test_mailbox_names_travel_in_modified_utf7(imap: RawImap) -> None:
    imap.ok('CREATE "Entw&APw-rfe"')  # "Entwürfe"
    imap.ok('CREATE "&ZeVnLIqe-"')  # "日本語"
    listed = imap.ok('LIST "" *').untagged
    assert b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe' in listed
    assert b'* LIST (\\HasNoChildren) "/" &ZeVnLIqe-' in listed
    assert imap.ok('SELECT "Entw&APw-rfe"').code == "READ-WRITE"
    bad = imap.cmd('CREATE "&Jjo"')  # unterminated base64 shift
    assert bad.status == "BAD"


def test_delete(main: ImapServer, imap: RawImap) -> None:
    inbox = imap.cmd("DELETE INBOX")
    assert inbox.status == "NO"
    missing = imap.cmd("DELETE Nowhere")
    assert missing.status == "NO" and missing.code == Code.NONEXISTENT
    imap.ok("CREATE Parent/Child")
    # RFC 3501 §6.3.4: DELETE must not remove inferior names.
    parent = imap.cmd("DELETE Parent")
    assert parent.status == "NO" and parent.code == Code.HASCHILDREN
    imap.ok("DELETE Parent/Child")
    imap.ok("DELETE Parent")
    assert imap.ok('LIST "" Parent*').untagged == []


def test_mailbox_made_again_does_not_show_the_old_messages(imap: RawImap) -> None:
    imap.ok("CREATE Again")
    imap.append("Again", make_message("first life"))
    imap.ok("SELECT Again")
    assert b"first life" in imap.ok("FETCH 1 BODY.PEEK[HEADER]").one(b"1 FETCH")
    imap.ok("UNSELECT")
    imap.ok("DELETE Again")
    imap.ok("CREATE Again")  # a new UIDVALIDITY; UIDs start again at 1
    imap.append("Again", make_message("second life"))
    imap.ok("SELECT Again")
    assert b"second life" in imap.ok("FETCH 1 BODY.PEEK[HEADER]").one(b"1 FETCH")
    assert imap.ok("SEARCH SUBJECT second").untagged == [b"* SEARCH 1"]


def test_rename_moves_children_and_keeps_messages(main: ImapServer, user: str) -> None:
    fill(main, user, 2, folder="Archive")
    with main.login(user) as client:
        client.ok("CREATE Archive/2023")
        client.ok("RENAME Archive Attic/Old")
        listed = client.ok('LIST "" *').untagged
        assert b'* LIST (\\HasChildren \\Archive) "/" Attic/Old' in listed
        assert b'* LIST (\\HasNoChildren) "/" Attic/Old/2023' in listed
        assert not [line for line in listed if line.endswith(b'"/" Archive')]
        assert client.ok("STATUS Attic/Old (MESSAGES)").untagged == [
            b"* STATUS Attic/Old (MESSAGES 2)"
        ]
        missing = client.cmd("RENAME Nowhere Somewhere")
        assert missing.status == "NO" and missing.code == Code.NONEXISTENT
        taken = client.cmd("RENAME Sent Drafts")
        assert taken.status == "NO" and taken.code == Code.ALREADYEXISTS


def test_rename_inbox_moves_its_messages_and_leaves_it_empty(main: ImapServer, user: str) -> None:
    fill(main, user, 3)
    _, uidnext, _ = main.folder_state(user)
    with main.login(user) as client:
        client.ok("RENAME INBOX Before")
        # RFC 3501 §6.3.5: INBOX stays, empty, and keeps its UID sequence.
        assert client.ok("STATUS INBOX (MESSAGES UIDNEXT)").untagged == [
            b"* STATUS INBOX (MESSAGES 0 UIDNEXT %d)" % uidnext
        ]
        assert client.ok("STATUS Before (MESSAGES)").untagged == [b"* STATUS Before (MESSAGES 3)"]


def test_subscribe_unsubscribe_and_lsub(imap: RawImap) -> None:
    imap.ok("CREATE Lists/Python")
    imap.ok("SUBSCRIBE Lists/Python")
    imap.ok("SUBSCRIBE Ghost")  # RFC 3501 §6.3.6: a name that does not exist is allowed
    assert imap.ok('LSUB "" Lists/*').untagged == [b'* LSUB () "/" Lists/Python']
    assert imap.ok('LSUB "" Ghost').untagged == [b'* LSUB (\\Noselect) "/" Ghost']
    # RFC 3501 §6.3.9: "Lists" is not subscribed, but "%" must still answer it, \Noselect.
    top = imap.ok('LSUB "" %').untagged
    assert b'* LSUB (\\Noselect) "/" Lists' in top
    assert b'* LSUB () "/" INBOX' in top
    assert not [line for line in top if b"Lists/Python" in line]
    imap.ok("UNSUBSCRIBE Lists/Python")
    assert imap.ok('LSUB "" Lists*').untagged == []
    again = imap.cmd("UNSUBSCRIBE Lists/Python")
    assert again.status == "NO"


def test_list_patterns_and_reference(imap: RawImap) -> None:
    imap.ok("CREATE Work/Reports/Daily")
    # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the root.
    assert imap.ok('LIST "" ""').untagged == [b'* LIST (\\Noselect) "/" ""']
    assert imap.ok('LIST Work/Reports ""').untagged == [b'* LIST (\\Noselect) "/" Work/']
    star = imap.ok('LIST "" *').untagged
    assert star[0] == b'* LIST (\\HasNoChildren) "/" INBOX'
    assert b'* LIST (\\HasNoChildren) "/" Work/Reports/Daily' in star
    percent = imap.ok('LIST "" %').untagged
    assert b'* LIST (\\HasChildren) "/" Work' in percent
    assert not [line for line in percent if b"Work/" in line]
    assert imap.ok("LIST Work/ %").untagged == [b'* LIST (\\HasChildren) "/" Work/Reports']
    assert imap.ok('LIST "" Work/%/Daily').untagged == [
        b'* LIST (\\HasNoChildren) "/" Work/Reports/Daily'
    ]
    # INBOX is case-insensitive (RFC 3501 §5.1), other names are not.
    assert imap.ok('LIST "" inbox').untagged == [b'* LIST (\\HasNoChildren) "/" INBOX']
    assert imap.ok('LIST "" work').untagged == []
    special = imap.ok('LIST "" Sent').untagged
    assert special == [b'* LIST (\\HasNoChildren \\Sent) "/" Sent']


def test_list_extended_selection_and_return_options(imap: RawImap) -> None:
    imap.ok("CREATE Food/Fruit")
    imap.ok("CREATE Food/Veg")
    imap.ok("SUBSCRIBE Food/Fruit")
    imap.ok("SUBSCRIBE Gone/Child")
    subscribed = imap.ok('LIST (SUBSCRIBED) "" Food*').untagged
    assert subscribed == [b'* LIST (\\HasNoChildren \\Subscribed) "/" Food/Fruit']
    ghost = imap.ok('LIST (SUBSCRIBED) "" Gone*').untagged
    assert ghost == [b'* LIST (\\Subscribed \\NonExistent) "/" Gone/Child']
    # RFC 5258 §3.5: parents of subscribed mailboxes, with CHILDINFO.
    recursive = imap.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" %').untagged
    assert b'* LIST (\\HasChildren) "/" Food ("CHILDINFO" ("SUBSCRIBED"))' in recursive
    assert b'* LIST (\\NonExistent) "/" Gone ("CHILDINFO" ("SUBSCRIBED"))' in recursive
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX' in recursive
    assert imap.cmd('LIST (RECURSIVEMATCH) "" %').status == "BAD"
    special = imap.ok('LIST (SPECIAL-USE) "" *').untagged
    assert len(special) == 5 and all(b"\\HasNoChildren \\" in line for line in special)
    several = imap.ok('LIST "" (INBOX Food) RETURN (SUBSCRIBED CHILDREN)').untagged
    assert several == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
        b'* LIST (\\HasChildren) "/" Food',
    ]
    returned = imap.ok('LIST "" Sent RETURN (SPECIAL-USE)').untagged
    assert returned == [b'* LIST (\\HasNoChildren \\Sent) "/" Sent']
    assert imap.cmd('LIST (BOGUS) "" *').status == "BAD"


def test_list_status_follows_each_list_response(main: ImapServer, user: str) -> None:
    fill(main, user, 2)
    with main.login(user) as client:
        reply = client.ok('LIST "" (INBOX Sent) RETURN (STATUS (MESSAGES UNSEEN))')
        assert reply.untagged == [
            b'* LIST (\\HasNoChildren) "/" INBOX',
            b"* STATUS INBOX (MESSAGES 2 UNSEEN 2)",
            b'* LIST (\\HasNoChildren) "/" Sent',
            b"* STATUS Sent (MESSAGES 0 UNSEEN 0)",
        ]


def test_status_reports_every_item(main: ImapServer, user: str) -> None:
    first = make_message("status one")
    second = make_message("status two", body="longer body\r\n")
    main.add(user, first)
    main.add(user, second, flags=("\\Seen",))
    uidvalidity, uidnext, modseq = main.folder_state(user)
    with main.login(user) as client:
        reply = client.ok(
            "STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE "
            "APPENDLIMIT)"
        )
        assert reply.untagged == [
            b"* STATUS INBOX (MESSAGES 2 RECENT 2 UIDNEXT %d UIDVALIDITY %d UNSEEN 1 "
            b"HIGHESTMODSEQ %d SIZE %d APPENDLIMIT %d)"
            % (uidnext, uidvalidity, modseq, len(first) + len(second), APPEND_LIMIT)
        ]
        missing = client.cmd("STATUS Nowhere (MESSAGES)")
        assert missing.status == "NO" and missing.code == Code.NONEXISTENT
        assert client.cmd("STATUS INBOX (BOGUS)").status == "BAD"


def test_append_with_flags_and_date_answers_appenduid(main: ImapServer, user: str) -> None:
    message = make_message("appended")
    uidvalidity, uidnext, _ = main.folder_state(user)
    with main.login(user) as client:
        reply = client.append("INBOX", message, '(\\Flagged $Work) "14-Jul-2021 09:30:15 +0200"')
        assert reply.status == "OK"
        assert reply.code == f"APPENDUID {uidvalidity} {uidnext}"
        client.ok("SELECT INBOX")
        fetched = client.ok("FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        assert fetched.untagged == [
            b'* 1 FETCH (FLAGS (\\Flagged $Work \\Recent) INTERNALDATE "14-Jul-2021 07:30:15 +0000"'
            b" RFC822.SIZE %d BODY[] {%d}\r\n%s)" % (len(message), len(message), message)
        ]


def test_multiappend_stores_all_or_nothing(main: ImapServer, user: str) -> None:
    uidvalidity, uidnext, _ = main.folder_state(user)
    one, two = make_message("first of two"), make_message("second of two")
    with main.login(user) as client:
        tag = client.start(f"APPEND INBOX (\\Seen) {{{len(one)}}}")
        assert client.read_line().startswith(b"+ ")
        client.send(one + f' "01-Jan-2020 00:00:00 +0000" {{{len(two)}}}\r\n'.encode())
        assert client.read_line().startswith(b"+ ")
        client.send(two + b"\r\n")
        reply = client.collect(tag)
        assert reply.code == f"APPENDUID {uidvalidity} {uidnext}:{uidnext + 1}"
        # One message over the limit refuses the whole command.
        big = b"Subject: big\r\n\r\n" + b"x" * APPEND_LIMIT
        tag = client.start(f"APPEND INBOX {{{len(one)}}}")
        assert client.read_line().startswith(b"+ ")
        client.send(one + f" {{{len(big)}}}\r\n".encode())
        refused = client.collect(tag)
        assert refused.status == "NO" and refused.code == Code.TOOBIG
        assert client.ok("STATUS INBOX (MESSAGES)").untagged == [b"* STATUS INBOX (MESSAGES 2)"]


def test_append_to_missing_mailbox_says_trycreate(imap: RawImap) -> None:
    reply = imap.append("Nowhere", make_message("lost"))
    assert reply.status == "NO" and reply.code == Code.TRYCREATE


def test_append_over_appendlimit_is_refused_before_the_literal(imap: RawImap) -> None:
    size = APPEND_LIMIT + 1
    imap.send(f"big APPEND INBOX {{{size}}}\r\n".encode())
    # RFC 7889 §2: NO [TOOBIG] instead of the "+" continuation: the client never sends it.
    line = imap.read_line()
    assert line == b"big NO [TOOBIG] literal too big"
    assert imap.pending(0.3) == b""
    imap.ok("NOOP")


def test_non_synchronizing_literal_over_the_limit_ends_the_connection(
    main: ImapServer, user: str
) -> None:
    with main.login(user) as client:
        client.send(f"big APPEND INBOX {{{APPEND_LIMIT + 1}+}}\r\n".encode())
        # RFC 7888 §4: the bytes are already on their way; BYE is the only safe answer.
        assert client.read_line() == b"* BYE [TOOBIG] literal larger than %d bytes" % APPEND_LIMIT
        assert client.closed_within(5)
    with main.login(user) as client:
        client.ok("NOOP")


def test_append_to_the_selected_mailbox_reports_exists(main: ImapServer, user: str) -> None:
    with main.login(user, select="INBOX") as client:
        reply = client.append("INBOX", make_message("while selected"))
        assert reply.untagged == [b"* 1 EXISTS", b"* 1 RECENT"]


def test_namespace_enable_and_quota(main: ImapServer, user: str) -> None:
    main.add(user, b"Subject: q\r\n\r\n" + b"x" * 3000)
    with main.login(user) as client:
        assert client.ok("NAMESPACE").untagged == [b'* NAMESPACE (("" "/")) NIL NIL']
        assert client.ok("ENABLE CONDSTORE X-UNKNOWN").untagged == [b"* ENABLED CONDSTORE"]
        assert client.ok("ENABLE CONDSTORE").untagged == [b"* ENABLED"]  # nothing new
        root = client.ok("GETQUOTAROOT INBOX")
        assert root.untagged == [b'* QUOTAROOT INBOX ""', b'* QUOTA "" (STORAGE 3 1048576)']
        assert client.ok('GETQUOTA ""').untagged == [b'* QUOTA "" (STORAGE 3 1048576)']
        assert client.cmd("GETQUOTA other").code == Code.NONEXISTENT
        assert client.cmd("GETQUOTAROOT Nowhere").code == Code.NONEXISTENT


# ================================================================== selected


def test_check_noop_and_unselect_keep_deleted_messages(main: ImapServer, user: str) -> None:
    fill(main, user, 2)
    with main.login(user, select="INBOX") as client:
        assert client.ok("CHECK").untagged == []
        client.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        assert client.ok("UNSELECT").untagged == []  # RFC 3691: no expunge
        assert client.cmd("FETCH 1 FLAGS").status == "BAD"
        assert client.ok("STATUS INBOX (MESSAGES)").untagged == [b"* STATUS INBOX (MESSAGES 2)"]


def test_close_expunges_deleted_messages_silently(main: ImapServer, user: str) -> None:
    fill(main, user, 3)
    with main.login(user, select="INBOX") as client:
        client.ok("STORE 1,3 +FLAGS.SILENT (\\Deleted)")
        assert client.ok("CLOSE").untagged == []  # RFC 3501 §6.4.2: no EXPUNGE responses
        assert client.ok("STATUS INBOX (MESSAGES)").untagged == [b"* STATUS INBOX (MESSAGES 1)"]
        client.ok("EXAMINE INBOX")
        client.ok("CLOSE")  # read-only: nothing is removed


def test_expunge_reports_each_message(main: ImapServer, user: str) -> None:
    fill(main, user, 5)
    with main.login(user, select="INBOX") as client:
        client.ok("STORE 2,4,5 +FLAGS.SILENT (\\Deleted)")
        reply = client.ok("EXPUNGE")
        # Each EXPUNGE renumbers the rest at once (RFC 3501 §7.4.1): highest first here.
        assert reply.untagged == [b"* 5 EXPUNGE", b"* 4 EXPUNGE", b"* 2 EXPUNGE"]
        assert uid_of(client.ok("FETCH 1:* UID")) == {1: 1, 2: 3}


def test_uid_expunge_removes_only_the_given_deleted_messages(main: ImapServer, user: str) -> None:
    fill(main, user, 4)
    with main.login(user, select="INBOX") as client:
        client.ok("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
        reply = client.ok("UID EXPUNGE 2:4")  # 4 is not \Deleted
        assert reply.untagged == [b"* 3 EXPUNGE", b"* 2 EXPUNGE"]
        assert uid_of(client.ok("FETCH 1:* UID")) == {1: 1, 2: 4}


def test_search_keys(main: ImapServer, user: str) -> None:
    day = int(datetime.datetime(2023, 5, 17, 12, tzinfo=datetime.UTC).timestamp())
    main.add(user, make_message("alpha", body="the quick fox\r\n"), flags=("\\Seen",), date=day)
    main.add(user, make_message("beta", sender="Bob <bob@b.test>", headers="Cc: c@c.test\r\n"))
    main.add(user, make_message("gamma", body="x" * 2000 + "\r\n"), flags=("\\Flagged", "$Todo"))
    main.add(user, make_message("Grüße", date="Fri, 01 Jan 2021 08:00:00 +0100"))
    with main.login(user, select="INBOX") as client:
        client.ok("STORE 2 +FLAGS (\\Answered \\Draft)")
        cases = {
            "ALL": "1 2 3 4",
            "SEEN": "1",
            "UNSEEN": "2 3 4",
            "FLAGGED": "3",
            "UNFLAGGED": "1 2 4",
            "ANSWERED": "2",
            "UNANSWERED": "1 3 4",
            "DRAFT": "2",
            "UNDRAFT": "1 3 4",
            "DELETED": "",
            "UNDELETED": "1 2 3 4",
            "KEYWORD $Todo": "3",
            "UNKEYWORD $Todo": "1 2 4",
            "RECENT": "1 2 3 4",
            "NEW": "2 3 4",
            "OLD": "",
            "FROM bob": "2",
            "TO alice": "1 2 3 4",
            "CC c.test": "2",
            "BCC anyone": "",
            "SUBJECT ALPHA": "1",
            'BODY "quick fox"': "1",
            "TEXT gamma": "3",
            "HEADER Cc c@c": "2",
            'HEADER Cc ""': "2",
            "LARGER 1000": "3",
            "SMALLER 1000": "1 2 4",
            "ON 17-May-2023": "1",
            "BEFORE 18-May-2023": "1",
            "SINCE 18-May-2023": "2 3 4",
            "SENTON 1-Jan-2021": "4",
            "SENTBEFORE 1-Jan-2021": "1 2 3",
            "SENTSINCE 1-Jan-2021": "4",
            "2:3": "2 3",
            "*": "4",
            "UID 1,4": "1 4",
            "NOT SEEN": "2 3 4",
            "OR SEEN FLAGGED": "1 3",
            "OR (SEEN SUBJECT alpha) (FLAGGED NOT KEYWORD $Todo)": "1",
            "UNSEEN NOT (FROM bob OR LARGER 1000 SUBJECT beta)": "3 4",
            "UNSEEN NOT (OR FROM bob LARGER 1000)": "4",
        }
        for key, expected in cases.items():
            reply = client.ok(f"SEARCH {key}")
            assert reply.untagged == [f"* SEARCH {expected}".rstrip().encode()], key
        uid = client.ok("UID SEARCH FLAGGED")
        assert uid.untagged == [b"* SEARCH 3"]
        utf8 = client.ok(b"SEARCH CHARSET UTF-8 SUBJECT {7+}\r\nGr\xc3\xbc\xc3\x9fe")
        assert utf8.untagged == [b"* SEARCH 4"]
        bad = client.cmd("SEARCH CHARSET KOI8-R SUBJECT x")
        assert bad.status == "NO" and bad.code == "BADCHARSET (UTF-8 US-ASCII)"
        assert client.cmd("SEARCH BOGUS").status == "BAD"
        assert client.cmd("SEARCH ON 31-Feb-2023").status == "BAD"


def test_esearch_return_options_and_saved_result(main: ImapServer, user: str) -> None:
    fill(main, user, 6)
    with main.login(user, select="INBOX") as client:
        client.ok("STORE 2,3,5 +FLAGS.SILENT (\\Flagged)")
        reply = client.ok("SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED")
        assert reply.untagged == [esearch(reply, b"MIN 2 MAX 5 ALL 2:3,5 COUNT 3")]
        uid = client.ok("UID SEARCH RETURN (COUNT) FLAGGED")
        assert uid.untagged == [esearch(uid, b"UID COUNT 3")]
        empty = client.ok("SEARCH RETURN (MIN MAX ALL) DELETED")
        assert empty.untagged == [esearch(empty, b"")]  # RFC 4731 §3.1: nothing to say
        everything = client.ok("SEARCH RETURN () 1:*")  # "()" is ALL
        assert everything.untagged == [esearch(everything, b"ALL 1:6")]
        # RFC 5182: SAVE keeps the result for "$", and answers nothing else.
        assert client.ok("UID SEARCH RETURN (SAVE) FLAGGED").untagged == []
        assert uid_of(client.ok("FETCH $ UID")) == {2: 2, 3: 3, 5: 5}
        assert client.ok("SEARCH $ SEEN").untagged == [b"* SEARCH"]
        client.ok("STORE $ -FLAGS.SILENT (\\Flagged)")
        assert client.ok("SEARCH FLAGGED").untagged == [b"* SEARCH"]
        # RFC 5182 §2.4: SAVE with only MIN/MAX saves just those messages.
        minimum = client.ok("SEARCH RETURN (SAVE MIN) 3:5")
        assert minimum.untagged == [esearch(minimum, b"MIN 3")]
        assert uid_of(client.ok("FETCH $ UID")) == {3: 3}
        client.ok("SEARCH RETURN (SAVE MIN MAX) 2:4")
        assert uid_of(client.ok("FETCH $ UID")) == {2: 2, 4: 4}
        client.ok("SEARCH RETURN (SAVE MAX COUNT) 2:4")
        assert uid_of(client.ok("FETCH $ UID")) == {2: 2, 3: 3, 4: 4}


def test_fetch_index_items(main: ImapServer, user: str) -> None:
    message = make_message("fetch me", sender='"Doe, Jane" <jane@d.test>')
    date = int(datetime.datetime(2022, 2, 3, 4, 5, 6, tzinfo=datetime.UTC).timestamp())
    uid = main.add(user, message, date=date, flags=("\\Answered",))
    with main.login(user, select="INBOX") as client:
        reply = client.ok("FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
        assert reply.untagged == [
            b'* 1 FETCH (UID %d FLAGS (\\Answered \\Recent) INTERNALDATE "03-Feb-2022 04:05:06 '
            b'+0000" RFC822.SIZE %d ENVELOPE ("Mon, 07 Feb 1994 21:52:25 -0800" "fetch me" '
            b'(("Doe, Jane" NIL "jane" "d.test")) (("Doe, Jane" NIL "jane" "d.test")) '
            b'(("Doe, Jane" NIL "jane" "d.test")) ((NIL NIL "alice" "example.test")) '
            b"NIL NIL NIL NIL))" % (uid, len(message))
        ]
        fast = client.ok("FETCH 1 FAST").one(b"1 FETCH")
        assert fast.startswith(b"* 1 FETCH (FLAGS (\\Answered \\Recent) INTERNALDATE ")
        full = client.ok("FETCH 1 FULL").one(b"1 FETCH")
        assert b" ENVELOPE (" in full and full.endswith(
            b'BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1))'
        )
        assert b"BODY[" not in client.ok("FETCH 1 ALL").one(b"1 FETCH")


def test_fetch_body_sections(main: ImapServer, user: str) -> None:
    main.add(user, NESTED)
    with main.login(user, select="INBOX") as client:
        reply = client.ok(
            "FETCH 1 (BODY.PEEK[1.2]<0.10> BODY.PEEK[1.2]<5.100> BODY.PEEK[1.1.MIME] "
            "BODY.PEEK[HEADER.FIELDS (Subject From)] BODY.PEEK[HEADER.FIELDS.NOT (To From Date "
            "Message-ID MIME-Version Content-Type)] BODY.PEEK[3.HEADER] BODY.PEEK[3.TEXT] "
            "BODY.PEEK[TEXT]<0.4>)"
        )
        # RFC 3501 §6.4.5: <origin> only in the answer; the header fields in message order.
        assert reply.untagged == [
            b"* 1 FETCH (BODY[1.2]<0> " + lit(b"<p>0123456")
            + b" BODY[1.2]<5> " + lit(b"23456789 html</p>")
            + b" BODY[1.1.MIME] " + lit(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n")
            + b" BODY[HEADER.FIELDS (Subject From)] "
            + lit(b"From: Ann Example <ann@remote.test>\r\nSubject: nested parts\r\n\r\n")
            + b" BODY[HEADER.FIELDS.NOT (To From Date Message-ID MIME-Version Content-Type)] "
            + lit(b"Subject: nested parts\r\n\r\n")
            + b" BODY[3.HEADER] " + lit(b"From: inner@remote.test\r\nSubject: inner\r\n\r\n")
            + b" BODY[3.TEXT] " + lit(b"inner body")
            + b" BODY[TEXT]<0> " + lit(b"--XX") + b")"
        ]  # fmt: skip
        # RFC 3516: BINARY decodes the transfer encoding; NULs need literal8 (~{n}).
        binary = client.ok("FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2] BODY.PEEK[2])")
        assert binary.untagged == [
            b"* 1 FETCH (BINARY[2] ~{5}\r\n\x00\x01\x02\x03\x04 BINARY.SIZE[2] 5"
            b" BODY[2] {8}\r\nAAECAwQ=)"
        ]
        whole = client.ok("FETCH 1 BINARY.PEEK[]").one(b"1 FETCH")
        assert whole.endswith(NESTED + b")")
        structure = client.ok("FETCH 1 BODYSTRUCTURE").one(b"1 FETCH")
        assert structure.startswith(
            b'* 1 FETCH (BODYSTRUCTURE ((("text" "plain" ("charset" "us-ascii")'
        )
        assert (
            b'"alternative" ("boundary" "YY") NIL NIL NIL)("application" "octet-stream"'
            in structure
        )
        inner = b"From: inner@remote.test\r\nSubject: inner\r\n\r\ninner body"
        assert b'("message" "rfc822" NIL NIL NIL "7bit" %d (NIL "inner"' % len(inner) in structure
        assert b'NIL NIL "7bit" 10 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL) "mixed"' in structure
        assert structure.endswith(b' "mixed" ("boundary" "XX") NIL NIL NIL))')
        assert b"\\Seen" not in client.ok("FETCH 1 FLAGS").one(b"1 FETCH")


def test_fetch_sets_seen_except_peek(main: ImapServer, user: str) -> None:
    fill(main, user, 4)
    with main.login(user, select="INBOX") as client:
        peek = client.ok("FETCH 1 (BODY.PEEK[] BINARY.PEEK[1] RFC822.HEADER RFC822.SIZE)")
        assert b"FLAGS" not in peek.one(b"1 FETCH")
        # RFC 3501 §6.4.5: RFC822 and BODY[...] set \Seen, and the FLAGS change is reported.
        for seq, item in ((1, "RFC822"), (2, "BODY[TEXT]"), (3, "RFC822.TEXT"), (4, "BINARY[1]")):
            line = client.ok(f"FETCH {seq} {item}").one(b"%d FETCH" % seq)
            assert line.endswith(b" FLAGS (\\Seen \\Recent))"), line
        assert client.ok("FETCH 1 RFC822").one(b"1 FETCH").count(b"FLAGS") == 0


def test_fetch_beyond_exists_is_bad_and_uid_fetch_is_not(main: ImapServer, user: str) -> None:
    fill(main, user, 2)
    with main.login(user, select="INBOX") as client:
        reply = client.cmd("FETCH 3 FLAGS")
        assert reply.status == "BAD"
        assert client.cmd("STORE 1:5 +FLAGS (\\Seen)").status == "BAD"
        assert client.cmd("COPY 7 Trash").status == "BAD"
        assert client.ok("UID FETCH 99 FLAGS").untagged == []  # UIDs need not exist
        assert client.ok("UID FETCH 2:* UID").untagged == [b"* 2 FETCH (UID 2)"]
        assert client.ok("UID FETCH 99:* UID").untagged == [b"* 2 FETCH (UID 2)"]  # "*" = 2


def test_store_add_remove_replace_and_silent(main: ImapServer, user: str) -> None:
    fill(main, user, 3)
    with main.login(user, select="INBOX") as client:
        assert client.ok("STORE 1 +FLAGS (\\Flagged \\Seen)").untagged == [
            b"* 1 FETCH (FLAGS (\\Seen \\Flagged \\Recent))"
        ]
        assert client.ok("STORE 1 -FLAGS (\\Seen)").untagged == [
            b"* 1 FETCH (FLAGS (\\Flagged \\Recent))"
        ]
        assert client.ok("STORE 1:2 FLAGS (\\Draft)").untagged == [
            b"* 1 FETCH (FLAGS (\\Draft \\Recent))",
            b"* 2 FETCH (FLAGS (\\Draft \\Recent))",
        ]
        assert client.ok("STORE 3 +FLAGS.SILENT \\Answered").untagged == []
        uid = client.ok("UID STORE 3 -FLAGS (\\Answered)")
        assert uid.untagged == [b"* 3 FETCH (FLAGS (\\Recent) UID 3)"]
        # \Recent is the server's to set (RFC 3501 §2.3.2).
        assert client.ok("STORE 3 +FLAGS (\\Recent)").untagged == [b"* 3 FETCH (FLAGS (\\Recent))"]
        # RFC 3501 §2.3.2: "\\" flags other than the system flags are reserved.
        assert client.cmd("STORE 1 +FLAGS (\\Bogus)").status == "BAD"
        assert client.cmd("STORE 1 +FLAGS (\\seen)").status == "OK"  # case-insensitive


def test_store_new_keyword_is_announced_before_it_is_used(main: ImapServer, user: str) -> None:
    fill(main, user, 1)
    with main.login(user, select="INBOX") as client:
        reply = client.ok("STORE 1 +FLAGS ($Important)")
        assert reply.untagged == [
            b"* FLAGS (" + SYSTEM_FLAGS + b" $Important)",
            b"* 1 FETCH (FLAGS ($Important \\Recent))",
        ]


def test_copy_and_move_answer_copyuid(main: ImapServer, user: str) -> None:
    fill(main, user, 4)
    trash_validity, trash_next, _ = main.folder_state(user, "Trash")
    with main.login(user, select="INBOX") as client:
        client.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
        copy = client.ok("COPY 2:3 Trash")
        assert copy.untagged == []
        assert copy.code == f"COPYUID {trash_validity} 2:3 {trash_next}:{trash_next + 1}"
        missing = client.cmd("COPY 1 Nowhere")
        assert missing.status == "NO" and missing.code == Code.TRYCREATE
        # RFC 6851 §4.3: COPYUID in an untagged OK, before the EXPUNGEs.
        move = client.ok("MOVE 1,4 Trash")
        assert move.untagged == [
            b"* OK [COPYUID %d 1,4 %d:%d] moved" % (trash_validity, trash_next + 2, trash_next + 3),
            b"* 4 EXPUNGE",
            b"* 1 EXPUNGE",
        ]
        uid_move = client.ok("UID MOVE 3 Trash")
        assert uid_move.untagged == [
            b"* OK [COPYUID %d 3 %d] moved" % (trash_validity, trash_next + 4),
            b"* 2 EXPUNGE",
        ]
        uid_copy = client.ok("UID COPY 2 Trash")
        assert uid_copy.code == f"COPYUID {trash_validity} 2 {trash_next + 5}"
        assert client.cmd("MOVE 1 Nowhere").code == Code.TRYCREATE
        client.ok("SELECT Trash")
        flags = client.ok("FETCH 1:* (UID FLAGS)").untagged
        assert b"* 1 FETCH (UID %d FLAGS (\\Flagged \\Recent))" % trash_next in flags
        assert len(flags) == 6


def test_sort_and_esort(main: ImapServer, user: str) -> None:
    for message in conversation():
        main.add(user, message)
    with main.login(user, select="INBOX") as client:
        cases = {
            "(SUBJECT) UTF-8 ALL": "3 1 2 4 5",
            "(REVERSE DATE) UTF-8 ALL": "5 4 3 2 1",
            "(FROM) US-ASCII ALL": "3 2 4 5 1",
            "(SIZE) UTF-8 ALL": "1 2 3 4 5",
            "(REVERSE SIZE) UTF-8 SUBJECT topic": "5 4 2 1",
            "(ARRIVAL) UTF-8 ALL": "1 2 3 4 5",
            "(TO SUBJECT) UTF-8 NOT 1": "3 2 4 5",
        }
        for criteria, expected in cases.items():
            assert client.ok(f"SORT {criteria}").untagged == [f"* SORT {expected}".encode()]
        assert client.ok("UID SORT (REVERSE DATE) UTF-8 2:3").untagged == [b"* SORT 3 2"]
        esort = client.ok("SORT RETURN (COUNT ALL) (REVERSE DATE) UTF-8 ALL")
        tag = esort.tag
        assert esort.untagged == [f'* ESEARCH (TAG "{tag}") ALL 5,4,3,2,1 COUNT 5'.encode()]
        bad = client.cmd("SORT (SUBJECT) KOI8-R ALL")
        assert bad.status == "NO" and bad.code == "BADCHARSET (UTF-8 US-ASCII)"
        assert client.cmd("SORT (BOGUS) UTF-8 ALL").status == "BAD"


def test_thread_references_and_orderedsubject(main: ImapServer, user: str) -> None:
    for message in conversation():
        main.add(user, message)
    with main.login(user, select="INBOX") as client:
        references = client.ok("THREAD REFERENCES UTF-8 ALL")
        assert references.untagged == [b"* THREAD (1 (2 4)(5))(3)"]
        ordered = client.ok("THREAD ORDEREDSUBJECT UTF-8 ALL")
        assert ordered.untagged == [b"* THREAD (1 (2)(4)(5))(3)"]
        uid = client.ok("UID THREAD REFERENCES UTF-8 NOT 2")
        assert uid.untagged == [b"* THREAD (1 (4)(5))(3)"]
        assert client.ok("THREAD REFERENCES UTF-8 DELETED").untagged == [b"* THREAD"]
        assert client.cmd("THREAD BOGUS UTF-8 ALL").status == "BAD"


def test_idle_reports_new_mail_and_ends_with_done(main: ImapServer, user: str) -> None:
    with main.login(user, select="INBOX") as client:
        tag = client.start("IDLE")
        assert client.read_line() == b"+ idling"
        deliver(main.ports["smtp"], user, make_message("during idle"))
        assert client.read_line() == b"* 1 EXISTS"
        assert client.read_line() == b"* 1 RECENT"
        client.send(b"DONE\r\n")
        assert client.collect(tag).tagged == tag.encode() + b" OK IDLE terminated"
        client.ok("NOOP")


# ================================================================== bad input


def test_syntax_errors_are_bad_and_the_session_goes_on(main: ImapServer, user: str) -> None:
    with main.login(user, select="INBOX") as client:
        unknown = client.cmd("FROBNICATE")
        assert unknown.tagged == b"t3 BAD unknown command FROBNICATE"
        assert client.cmd("SELECT").tagged == b"t4 BAD missing mailbox name"
        assert client.cmd("FETCH 1").status == "BAD"
        assert client.cmd("FETCH 1 (FLAGS").status == "BAD"
        assert client.cmd('LIST "unterminated').status == "BAD"
        assert client.cmd("FETCH 0 FLAGS").status == "BAD"
        client.send(b"\x00\x01\xff\xfe garbage\r\n")
        assert client.read_response().startswith(b"* BAD")
        client.send(b"(nonsense\r\n")
        assert client.read_response().startswith(b"* BAD")
        client.ok("NOOP")


def test_overlong_line_is_bad_and_the_connection_keeps_working(main: ImapServer, user: str) -> None:
    with main.login(user) as client:
        client.send(b"long NOOP " + b"x" * 70000 + b"\r\n")  # imap.max_line_length 65536
        assert client.read_response() == b"* BAD line too long"
        client.ok("NOOP")
        client.ok('LIST "" INBOX')


def test_disconnect_during_idle_is_not_a_server_bug(main: ImapServer, user: str) -> None:
    mark = main.server.stderr_mark()
    with main.login(user, select="INBOX") as client:
        client.start("IDLE")
        assert client.read_line() == b"+ idling"
    main.server.wait_stderr("connection closed by peer", after=mark)
    log = main.server.stderr_text().splitlines()[mark:]
    assert not [line for line in log if "Traceback" in line or "command failed" in line]


def test_too_many_bad_commands_end_with_bye(strict: ImapServer) -> None:
    with strict.connect() as client:
        client.cmd("FOO")
        client.cmd("SELECT INBOX")  # wrong state counts as well
        client.send(b"t9 BAR\r\n")
        assert client.read_line() == b"t9 BAD unknown command BAR"
        assert client.read_line() == b"* BYE too many bad commands"
        assert client.closed_within(5)
    with strict.connect() as other:
        other.ok("NOOP")


def test_login_timer_ends_silent_busy_and_half_authenticated_clients(
    strict: ImapServer,
) -> None:
    bye = b"* BYE autologout; idle for too long"
    started = time.monotonic()
    with (
        strict.connect(timeout=15) as silent,
        strict.connect(tls=True, timeout=15) as halfway,
        strict.connect(timeout=15) as busy,
    ):
        tag = halfway.start("AUTHENTICATE PLAIN")
        assert halfway.read_line() == b"+ "
        # The timer (imap.preauth_timeout, 5 s) counts from the greeting: NOOPs do not reset it.
        while not (said := busy.pending(0.5)):  # pacing, and whatever the server says
            assert time.monotonic() - started < 7, "NOOPs kept the connection unauthenticated"
            with contextlib.suppress(ConnectionError):  # the BYE may cross the NOOP
                tag_noop = busy.start("NOOP")
                if (line := busy.read_line()) == bye:
                    said = line + b"\r\n"
                    break
                assert line == tag_noop.encode() + b" OK NOOP completed"
        assert said == bye + b"\r\n"
        for client in (silent, halfway):
            assert client.read_line() == bye
            assert client.closed_within(5)
        assert tag not in halfway.pending(0.1).decode()
    assert 4.5 <= time.monotonic() - started < 9


def test_login_lockout_after_failures_and_others_still_served(lockout: ImapServer) -> None:
    with lockout.login(ALICE) as logged_in:
        with lockout.connect() as client:
            for _ in range(3):  # auth.max_failures
                reply = client.cmd(f"LOGIN {ALICE} wrong-password")
                assert reply.code == Code.AUTHENTICATIONFAILED
            locked = client.cmd(f"LOGIN {ALICE} {PASSWORDS[ALICE]}")
            assert locked.status == "NO" and locked.code == Code.UNAVAILABLE
            client.ok("CAPABILITY")
        # A session logged in before goes on, and new connections are served.
        logged_in.ok("SELECT INBOX")
        with lockout.connect() as other:
            other.ok("NOOP")
            assert other.cmd(f"LOGIN {ALICE} {PASSWORDS[ALICE]}").code == Code.UNAVAILABLE


def test_shutdown_does_not_wait_for_idling_clients(tmp_path: Path) -> None:
    with start_imap_server(tmp_path, PASSWORDS) as server:
        with server.login(ALICE, select="INBOX") as idler, server.login(ALICE) as quiet:
            idler.start("IDLE")
            assert idler.read_line() == b"+ idling"
            started = time.monotonic()
            assert server.server.stop() == 0
            # IDLE only waits for the client: no grace period is spent on it.
            assert time.monotonic() - started < 5
            for client in (idler, quiet):
                assert client.read_line() == b"* BYE server shutting down"
        assert "Traceback" not in server.server.stderr_text()


# ================================================================== two sessions


def test_other_sessions_store_arrives_as_fetch_on_noop(main: ImapServer, user: str) -> None:
    fill(main, user, 3)
    with main.login(user, select="INBOX") as a, main.login(user, select="INBOX") as b:
        a.ok("STORE 2 +FLAGS (\\Flagged)")
        assert b.ok("NOOP").untagged == [b"* 2 FETCH (FLAGS (\\Flagged))"]
        assert b.ok("NOOP").untagged == []  # said once
        a.ok("STORE 2 FLAGS ($Later)")
        assert b.ok("NOOP").untagged == [
            b"* FLAGS (" + SYSTEM_FLAGS + b" $Later)",
            b"* 2 FETCH (FLAGS ($Later))",
        ]


def test_expunge_waits_for_a_command_that_may_report_it(main: ImapServer, user: str) -> None:
    fill(main, user, 5)
    with main.login(user, select="INBOX") as a, main.login(user, select="INBOX") as b:
        a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
        assert a.ok("EXPUNGE").untagged == [b"* 2 EXPUNGE"]
        a.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
        # RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH. Message 2
        # keeps its number meanwhile; its data is gone.
        fetch = b.ok("FETCH 2 (UID FLAGS)")
        assert fetch.untagged == [b"* 1 FETCH (FLAGS (\\Seen))"]
        assert fetch.code == Code.EXPUNGEISSUED
        assert uid_of(b.ok("FETCH 3 UID")) == {3: 3}
        store = b.ok("STORE 4 +FLAGS (\\Answered)")
        assert store.untagged == [b"* 4 FETCH (FLAGS (\\Answered))"]
        assert b.ok("SEARCH ALL").untagged == [b"* SEARCH 1 3 4 5"]
        assert not [k for k in b.ok("SEARCH ALL").kinds() if k == b"EXPUNGE"]
        # NOOP may: now the numbers shift.
        assert b.ok("NOOP").untagged == [b"* 2 EXPUNGE"]
        assert uid_of(b.ok("FETCH 2:4 UID")) == {2: 3, 3: 4, 4: 5}


def test_uid_commands_may_report_expunges(main: ImapServer, user: str) -> None:
    fill(main, user, 3)
    with main.login(user, select="INBOX") as a, main.login(user, select="INBOX") as b:
        a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        a.ok("EXPUNGE")
        reply = b.ok("UID FETCH 1:* UID")
        assert reply.untagged == [b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)", b"* 1 EXPUNGE"]


def test_new_mail_by_smtp_shows_up_as_exists(main: ImapServer, user: str) -> None:
    fill(main, user, 2)
    with main.login(user, select="INBOX") as a, main.login(user, select="INBOX") as b:
        deliver(main.ports["smtp"], user, make_message("by smtp"))
        # The first session to hear of it gets it as \Recent (RFC 3501 §2.3.2).
        assert a.ok("NOOP").untagged == [b"* 3 EXISTS", b"* 3 RECENT"]
        assert b.ok("NOOP").untagged == [b"* 3 EXISTS", b"* 0 RECENT"]
        # During FETCH an EXISTS may come (RFC 3501 §7.3.1); the new message is usable.
        main.add(user, make_message("by store"))
        reply = b.ok("FETCH 1 UID")
        assert reply.untagged == [b"* 1 FETCH (UID 1)", b"* 4 EXISTS", b"* 1 RECENT"]
        assert a.ok("NOOP").untagged == [b"* 4 EXISTS", b"* 3 RECENT"]
        assert (
            a.ok("FETCH 4 (BODY[HEADER.FIELDS (SUBJECT)])")
            .one(b"4 FETCH")
            .endswith(b"Subject: by store\r\n\r\n FLAGS (\\Seen))")
        )


def test_idle_pushes_other_sessions_changes(main: ImapServer, user: str) -> None:
    fill(main, user, 2)
    with main.login(user, select="INBOX") as idler, main.login(user, select="INBOX") as other:
        tag = idler.start("IDLE")
        assert idler.read_line() == b"+ idling"
        other.ok("STORE 2 +FLAGS (\\Flagged)")
        assert idler.read_line() == b"* 2 FETCH (FLAGS (\\Flagged \\Recent))"
        other.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        assert idler.read_line() == b"* 1 FETCH (FLAGS (\\Deleted \\Recent))"
        other.ok("EXPUNGE")
        assert idler.read_line() == b"* 1 EXPUNGE"  # IDLE is a moment that allows it
        idler.send(b"DONE\r\n")
        assert idler.collect(tag).status == "OK"
        assert uid_of(idler.ok("FETCH 1 UID")) == {1: 2}


def test_deleting_the_mailbox_another_session_selected(main: ImapServer, user: str) -> None:
    with main.login(user) as a, main.login(user) as b:
        a.ok("CREATE Doomed")
        b.ok("SELECT Doomed")
        a.ok("DELETE Doomed")
        reply = b.cmd("NOOP")
        assert reply.untagged == [b"* BYE the selected mailbox was deleted"]
        assert b.closed_within(5)


# ================================================================== standard clients


def test_imaplib_end_to_end(main: ImapServer, user: str) -> None:
    fill(main, user, 3)
    with imaplib.IMAP4(LOOPBACK, main.ports["imap"], timeout=10) as client:
        client.login(user, main.passwords[user])
        typ, boxes = client.list()
        assert typ == "OK" and b'(\\HasNoChildren) "/" INBOX' in boxes
        assert client.select("INBOX") == ("OK", [b"3"])
        typ, fetched = client.fetch("1", "(ENVELOPE BODYSTRUCTURE)")
        head = fetched[0]
        assert typ == "OK" and isinstance(head, bytes)
        assert head.startswith(b'1 (ENVELOPE ("Mon, 07 Feb 1994 21:52:25 -0800" "m1" ')
        assert head.endswith(b' BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL '
                             b'"7bit" 8 1 NIL NIL NIL NIL))')  # fmt: skip
        assert client.search(None, "SUBJECT", "m2") == ("OK", [b"2"])
        typ, stored = client.store("1:2", "+FLAGS", "(\\Flagged)")
        assert typ == "OK" and len(stored) == 2
        assert client.copy("1", "Archive")[0] == "OK"
        assert client.uid("MOVE", "2", "Trash")[0] == "OK"
        when = imaplib.Time2Internaldate(time.time())
        typ, appended = client.append("INBOX", "(\\Seen)", when, make_message("from imaplib"))
        assert typ == "OK" and str(appended[0]).startswith("b'[APPENDUID ")
        assert client.uid("SEARCH", "ALL") == ("OK", [b"1 3 4"])
        typ, whole = client.fetch("3", "(RFC822)")
        part = whole[0]
        assert typ == "OK" and isinstance(part, tuple)
        assert b"Subject: from imaplib\r\n" in part[1]
        client.close()


def test_imapclient_end_to_end(main: ImapServer, user: str) -> None:
    fill(main, user, 2)
    main.add(user, NESTED)
    with IMAPClient(LOOPBACK, port=main.ports["imap"], ssl=False, timeout=10) as client:
        client.login(user, main.passwords[user])
        assert "MOVE" in {c.decode() for c in client.capabilities()}
        folders = {name for _flags, _delim, name in client.list_folders()}
        assert {"INBOX", "Sent", "Trash", "Archive"} <= folders
        info = client.select_folder("INBOX")
        assert info[b"EXISTS"] == 3 and info[b"UIDNEXT"] == 4
        data = client.fetch([3], ["ENVELOPE", "BODYSTRUCTURE", "FLAGS"])
        envelope = data[3][b"ENVELOPE"]
        assert envelope.subject == b"nested parts"
        assert envelope.from_[0].mailbox == b"ann" and envelope.from_[0].host == b"remote.test"
        structure = data[3][b"BODYSTRUCTURE"]
        assert structure.is_multipart and structure[1] == b"mixed"
        assert client.search(["SUBJECT", "m1"]) == [1]
        client.add_flags([1], [b"$Done"])
        assert client.get_flags([1])[1] == (b"$Done", b"\\Recent")
        client.copy([1], "Archive")
        client.move([2], "Trash")
        assert client.search("ALL") == [1, 3]
        appended = client.append("INBOX", make_message("from imapclient"), flags=[b"\\Seen"])
        assert appended.startswith(b"[APPENDUID ")
        client.select_folder("Archive", readonly=True)
        assert client.search("ALL") == [1]
        client.logout()


def test_imapclient_idle_sees_smtp_delivery_within_a_second(main: ImapServer, user: str) -> None:
    with IMAPClient(LOOPBACK, port=main.ports["imap"], ssl=False, timeout=10) as client:
        client.login(user, main.passwords[user])
        client.select_folder("INBOX")
        client.idle()
        deliver(main.ports["smtp"], user, make_message("push me"))
        accepted = time.monotonic()  # the SMTP transaction is over: the mail is stored
        responses = client.idle_check(timeout=5)
        assert (1, b"EXISTS") in responses
        # Pushed by the event bus, not found by a poll.
        assert time.monotonic() - accepted < 1.0
        client.idle_done()
        assert client.search("ALL") == [1]


# ================================================================== CONDSTORE / QRESYNC


def test_condstore_select_fetch_and_search(main: ImapServer, user: str) -> None:
    fill(main, user, 4)
    _, _, modseq = main.folder_state(user)
    with main.login(user) as client:
        reply = client.ok("SELECT INBOX (CONDSTORE)")
        assert b"* OK [HIGHESTMODSEQ %d] highest" % modseq in reply.untagged
        stored = client.ok("STORE 2 +FLAGS (\\Seen)")
        changed = modseq + 1
        # Once CONDSTORE is on, FETCH answers carry MODSEQ (RFC 7162 §3.1.4).
        assert stored.untagged == [b"* 2 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (%d))" % changed]
        since = client.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
        assert since.untagged == [b"* 2 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (%d))" % changed]
        uid_since = client.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
        assert uid_since.untagged == [
            b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (%d))" % changed
        ]
        assert client.ok(f"SEARCH MODSEQ {changed}").untagged == [
            b"* SEARCH 2 (MODSEQ %d)" % changed
        ]
        assert client.ok("FETCH 2 (MODSEQ)").untagged == [b"* 2 FETCH (MODSEQ (%d))" % changed]
        status = client.ok("STATUS INBOX (HIGHESTMODSEQ)")
        assert status.untagged == [b"* STATUS INBOX (HIGHESTMODSEQ %d)" % changed]


def test_store_unchangedsince_reports_modified(main: ImapServer, user: str) -> None:
    fill(main, user, 3)
    _, _, modseq = main.folder_state(user)
    with main.login(user) as a, main.login(user) as b:
        a.ok("SELECT INBOX (CONDSTORE)")
        b.ok("SELECT INBOX (CONDSTORE)")
        b.ok("STORE 2 +FLAGS (\\Flagged)")  # someone else changes message 2 first
        reply = a.ok(f"STORE 1:3 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Seen)")
        # RFC 7162 §3.1.3: messages changed since are left alone and listed in MODIFIED.
        assert reply.code == "MODIFIED 2"
        assert b"* 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (%d))" % (modseq + 2) in reply.untagged
        assert b"* 3 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (%d))" % (modseq + 3) in reply.untagged
        flags = a.ok("FETCH 2 FLAGS").untagged
        assert b"\\Seen" not in b"".join(flags)


def test_qresync_select_reports_vanished_and_changed_flags(main: ImapServer, user: str) -> None:
    fill(main, user, 5)
    uidvalidity, _, modseq = main.folder_state(user)
    with main.login(user, select="INBOX") as other:
        other.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
        other.ok("STORE 4 +FLAGS.SILENT (\\Deleted)")
        other.ok("EXPUNGE")
    _, _, now = main.folder_state(user)
    with main.login(user) as client:
        assert client.cmd(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))").status == "BAD"
        assert client.ok("ENABLE QRESYNC").untagged == [b"* ENABLED QRESYNC"]
        reply = client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:5))")
        assert reply.untagged[-2:] == [
            b"* VANISHED (EARLIER) 4",
            b"* 2 FETCH (FLAGS (\\Flagged) UID 2 MODSEQ (%d))" % (modseq + 1),
        ]
        assert b"* OK [HIGHESTMODSEQ %d] highest" % now in reply.untagged
        assert b"* 4 EXISTS" in reply.untagged
        # A wrong UIDVALIDITY means a full resync: nothing but the plain SELECT lines.
        stale = client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity + 1} {modseq}))")
        assert not [line for line in stale.untagged if b"VANISHED" in line or b"FETCH" in line]


def test_qresync_expunges_are_reported_as_vanished(main: ImapServer, user: str) -> None:
    fill(main, user, 4)
    _, _, modseq = main.folder_state(user)
    with main.login(user) as a, main.login(user, select="INBOX") as b:
        a.ok("ENABLE QRESYNC")
        a.ok("SELECT INBOX")
        b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        b.ok("EXPUNGE")
        assert a.ok("NOOP").untagged == [b"* VANISHED 1"]
        a.ok("STORE 2:3 +FLAGS.SILENT (\\Deleted)")
        assert a.ok("EXPUNGE").untagged == [b"* VANISHED 3:4"]
        # MOVE too reports VANISHED once QRESYNC is on (RFC 7162 §3.2.10).
        moved = a.ok("MOVE 1 Trash")
        assert moved.untagged[1:] == [b"* VANISHED 2"]
        main.add(user, make_message("back"))
        _, _, latest = main.folder_state(user)
        a.ok("NOOP")
        # "*" stands for every UID handed out: the newest were expunged too.
        vanished = a.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
        assert vanished.untagged[0] == b"* VANISHED (EARLIER) 1:4"
        assert vanished.untagged[1:] == [b"* 1 FETCH (UID 5 FLAGS (\\Recent) MODSEQ (%d))" % latest]
        assert a.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)").status == "BAD"
        assert uid_of(a.ok("FETCH 1:* UID")) == {1: 5}


def _mime(headers: bytes, body: bytes) -> bytes:
    return b"From: a@example.test\r\nSubject: s\r\n" + headers + b"\r\n" + body


def _mixed(text: bytes, attachment: bytes) -> bytes:
    return _mime(
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"--b\r\nContent-Type: text/plain\r\n\r\n" + text + b"\r\n--b\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(attachment)
        + b"\r\n--b--\r\n",
    )


def test_search_text_answers_the_same_on_every_repeat_session_and_after_expunge(
    main: ImapServer, user: str
) -> None:
    """SEARCH TEXT/BODY remember which messages read as stored; no answer may change."""
    word = b"xylophone"
    kinds = {
        "plain hit": _mime(b"", b"a " + word + b" here\r\n"),
        "plain miss": _mime(b"", b"nothing\r\n"),
        "base64 text hit": _mime(
            b"Content-Transfer-Encoding: base64\r\n", base64.b64encode(b"my " + word) + b"\r\n"
        ),
        "attachment only": _mixed(b"nothing", b"a " + word),
        "text beside attachment": _mixed(b"the " + word.upper(), b"nothing"),
        "quoted-printable hit": _mime(
            b"Content-Transfer-Encoding: quoted-printable\r\n", b"xylo=\r\nphone\r\n"
        ),
        "encoded subject": b"Subject: =?utf-8?q?" + word + b"?=\r\n\r\nnothing\r\n",
        # base64 encoded words: the bytes do not show the word (nor "marimba" below)
        "b-encoded subject": b"Subject: =?utf-8?b?eHlsb3Bob25l?=\r\n\r\nnothing\r\n",
        "b-encoded subject, marimba body": b"Subject: =?utf-8?b?eHlsb3Bob25l?=\r\n\r\nmarimba\r\n",
        "b-encoded marimba subject": b"Subject: =?utf-8?b?bWFyaW1iYQ==?=\r\n\r\n" + word + b"\r\n",
        "utf-16 miss": _mime(
            b"Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n",
            base64.b64encode("nothing".encode("utf-16")) + b"\r\n",
        ),
    }
    uids = {name: main.add(user, data) for name, data in kinds.items()}
    body_hits = ["plain hit", "base64 text hit", "text beside attachment", "quoted-printable hit"]
    body_hits.append("b-encoded marimba subject")
    text_hits = [*body_hits, "encoded subject", "b-encoded subject"]
    text_hits.append("b-encoded subject, marimba body")
    # TEXT xylophone BODY marimba: the word in the header, the other in the body.
    both_hits = ["b-encoded subject, marimba body"]

    def expect(names: list[str], gone: set[str]) -> list[bytes]:
        return [b" ".join(b"%d" % uids[n] for n in sorted(names, key=uids.get) if n not in gone)]

    def ask(client: imaplib.IMAP4, key: str) -> list[bytes]:
        typ, data = client.uid("SEARCH", key, "xylophone")
        assert typ == "OK"
        return [d for d in data if isinstance(d, bytes)]

    with (
        imaplib.IMAP4(LOOPBACK, main.ports["imap"], timeout=10) as one,
        imaplib.IMAP4(LOOPBACK, main.ports["imap"], timeout=10) as two,
    ):
        for client in (one, two):
            client.login(user, main.passwords[user])
            client.select("INBOX")
        for client in (one, one, two):
            assert ask(client, "TEXT") == expect(text_hits, set())
            assert ask(client, "BODY") == expect(body_hits, set())
            typ, data = client.uid("SEARCH", "TEXT", "xylophone", "BODY", "marimba")
            assert (typ, data) == ("OK", expect(both_hits, set()))
            typ, data = client.uid("SEARCH", "TEXT", "marimba", "BODY", "xylophone")
            assert (typ, data) == ("OK", expect(["b-encoded marimba subject"], set()))
        gone = {"plain hit", "attachment only"}
        for name in gone:
            one.uid("STORE", str(uids[name]), "+FLAGS.SILENT", "(\\Deleted)")
        one.expunge()
        later = main.add(user, _mime(b"Content-Transfer-Encoding: base64\r\n", b"eHlsb3Bob25l\r\n"))
        uids["later"] = later
        text_hits.append("later")
        body_hits.append("later")
        for client in (two, one):
            client.noop()
            assert ask(client, "TEXT") == expect(text_hits, gone)
            assert ask(client, "BODY") == expect(body_hits, gone)


def test_envelope_and_header_search_are_byte_identical_with_and_without_the_header_cache(
    main: ImapServer, user: str
) -> None:
    """INBOX gets header-cache records when the messages are stored; "Plain" holds the same
    messages with its cache file removed, so the server reads their files (and makes the
    records again as it goes). Both must answer what the message bytes say."""
    data_dir = Path(__file__).parent.parent / "data"
    raws = [p.read_bytes() for p in sorted(data_dir.glob("*.eml"))]
    raws.append(b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\nSubject: caf\xe9\r\n\r\nx\r\n")
    main.store.mailbox(user).create_folder("Plain")
    for raw in raws:
        main.add(user, raw)
        main.add(user, raw, "Plain")
    plain_dir = main.store.mailbox(user).folder("Plain").dir
    (plain_dir / "headers.cache").unlink()
    parsed = [fetch.ParsedMessage.parse(normalize_crlf(raw)) for raw in raws]

    def having(name: str, value: str) -> set[int]:
        needle = value.casefold()
        return {
            uid
            for uid, msg in enumerate(parsed, start=1)
            if any(needle in v.casefold() for v in fetch.header_value(msg, name))
            and (needle or fetch.header_value(msg, name))
        }

    everyone = set(range(1, len(raws) + 1))
    searches = {
        "FROM example": having("from", "example"),
        "TO example": having("to", "example"),
        "CC example": having("cc", "example"),
        "SUBJECT message": having("subject", "message"),
        "HEADER Message-ID @": having("message-id", "@"),
        'HEADER Reply-To ""': {
            uid for uid, msg in enumerate(parsed, 1) if fetch.header_value(msg, "reply-to")
        },
        "FROM J SUBJECT caf": having("from", "j") & having("subject", "caf"),
        "OR FROM a SUBJECT b": having("from", "a") | having("subject", "b"),
        "NOT BCC x": everyone - having("bcc", "x"),
    }
    envelope = FetchAttr("ENVELOPE")
    fetched = [
        b"* %d FETCH (UID %d %s)" % (uid, uid, fetch.render_item(envelope, msg))
        for uid, msg in enumerate(parsed, start=1)
    ]
    assert any(found for found in searches.values())
    with main.login(user) as client:
        for folder in ("INBOX", "Plain"):
            client.ok(f"SELECT {folder}")
            for criteria, expected in searches.items():
                line = client.ok(f"UID SEARCH {criteria}").one(b"SEARCH")
                assert sorted(int(n) for n in line.split()[2:]) == sorted(expected), criteria
            assert client.ok("FETCH 1:* (UID ENVELOPE)").lines(b"") == fetched
    assert len((plain_dir / "headers.cache").read_bytes().splitlines()) == len(raws)
