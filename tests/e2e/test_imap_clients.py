"""IMAP with real clients: mbsync syncing a folder tree both ways, and the command flows of
Thunderbird, Apple Mail, mutt and K-9/FairEmail as raw transcripts, and IDLE push.

Every test starts its own ``rmail serve`` (``tests/conftest.py``) on a data directory made
through the store, with one user, ``alice@example.test``. The test process keeps the store
open beside the server: it seeds folders and messages before the start, and afterwards reads
what the server wrote (after a refresh of the index) or changes it as another program would.

- mbsync (Debian ``isync``) is the real client of issue 4: it must be installed (the test
  fails, never skips, without it) and runs in a subprocess with a timeout, in clear text on
  loopback, over implicit TLS and with STARTTLS. Local and server state are compared as
  ``folder -> Subject -> (flags, bytes)``; the bytes are compared after the two rewrites
  mbsync makes between IMAP and a Maildir (LF line ends, an ``X-TUID`` header line).
- The client flows use :class:`RawImap`, a line-level client on a socket that sends exactly
  what the application sends (tags, case and all) and reads responses with their literals.
  Every read has a deadline; a failure shows the whole transcript.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from conftest import RunningServer, StartServer, make_config

from rmail.config import AuthConfig
from rmail.imap import mutf7
from rmail.store import Store
from rmail.store.maildir import Folder

ALICE: Final = "alice@example.test"
PASSWORD: Final = "alice-Imap-4b8e2d91"
REMOTE: Final = "someone@remote.test"
HOSTNAME: Final = "mail.example.test"  # make_config's hostname
LOOPBACK: Final = "127.0.0.1"
CHEAP_AUTH: Final = AuthConfig(argon2_time_cost=1, argon2_memory_kib=64)
TIMEOUT: Final = 10.0  # seconds for any single network read
MBSYNC_TIMEOUT: Final = 60.0
# An internal date for seeded messages (2024-01-02 10:00 UTC) and an old one (2019-06-01).
DATE_2024: Final = 1704189600
DATE_2019: Final = 1559383200
# Maildir info letters as mbsync writes them (isync 1.4), and the IMAP flags they stand for.
MAILDIR_FLAGS: Final = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
_LITERAL: Final = re.compile(rb"~?\{(\d+)\}\r\n$")  # literal, or literal8 (BINARY)
_X_TUID: Final = re.compile(rb"^X-TUID: [^\r\n]*\r?\n", re.MULTILINE)


# -- server ---------------------------------------------------------------------------------


@dataclass
class Rmail:
    """A running server and the store the test process opened on its data directory."""

    server: RunningServer
    store: Store

    @property
    def ports(self) -> dict[str, int]:
        return self.server.ports

    @property
    def cert(self) -> Path:
        return self.server.root / "secrets" / "tls" / "cert.pem"

    def folder(self, name: str) -> Folder:
        """Alice's folder, its index refreshed from disk."""
        folder = self.store.mailbox(ALICE).folder(name)
        folder.refresh()
        return folder

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(self.cert))
        return context


@contextlib.contextmanager
def running(
    tmp_path: Path, start_server: StartServer, *, plaintext_login: bool = True
) -> Iterator[Rmail]:
    """A server with alice's account (INBOX and the special-use folders, nothing in them)."""
    config = make_config(tmp_path, imap={"plaintext_auth_on_loopback": plaintext_login})
    store = Store.open(tmp_path / "data", auth=CHEAP_AUTH, hostname=HOSTNAME)
    try:
        store.create_user(ALICE, PASSWORD)
        yield Rmail(start_server(config), store)
    finally:
        store.close()


@pytest.fixture
def rmail(tmp_path: Path, start_server: StartServer) -> Iterator[Rmail]:
    with running(tmp_path, start_server) as server:
        yield server


def message(
    subject: str,
    *,
    body: str = "Hello.\r\n",
    sender: str = "Bob <bob@example.test>",
    extra: str = "",
) -> bytes:
    """A small CRLF message whose Subject is its identity in these tests."""
    return (
        f"From: {sender}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Date: Tue, 02 Jan 2024 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n"
        f"{extra}\r\n{body}"
    ).encode()


def deliver(rmail: Rmail, subject: str) -> bytes:
    """Send a message to alice through the MX port; the bytes given to smtplib."""
    data = message(subject, sender=REMOTE, body=f"Delivered by SMTP: {subject}.\r\n")
    with smtplib.SMTP(LOOPBACK, rmail.ports["smtp"], timeout=TIMEOUT) as client:
        client.ehlo("client.remote.test")
        assert client.sendmail(REMOTE, [ALICE], data) == {}
    return data


def wait_for_subject(rmail: Rmail, folder: str, subject: str, timeout: float = 5.0) -> int:
    """The UID of the message with ``subject`` once it is in ``folder``."""
    deadline = time.monotonic() + timeout
    while True:
        for uid, (_flags, data) in _server_folder(rmail.folder(folder)).items():
            if _subject(data) == subject:
                return uid
        assert time.monotonic() < deadline, f"{subject!r} not in {folder} after {timeout}s"
        time.sleep(0.02)


# -- a raw IMAP client ----------------------------------------------------------------------


class RawImap:
    """One IMAP connection driven line by line, as a transcript.

    ``command("7 UID fetch 1:* (FLAGS)")`` sends the line as given and returns every
    response up to and including the tagged one; a response that carries literals comes
    back as one ``bytes`` with the literals inline, exactly as on the wire.
    """

    def __init__(self, port: int, *, context: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection((LOOPBACK, port), timeout=TIMEOUT)
        self.sock: socket.socket = (
            context.wrap_socket(sock, server_hostname=LOOPBACK) if context else sock
        )
        self.buffer = bytearray()
        self.log: list[str] = []
        self.greeting = self.read_response()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def transcript(self) -> str:
        return "\n".join(self.log)

    # -- wire --------------------------------------------------------------------------------

    def send_line(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.log.append("C: " + data.decode("utf-8", "replace"))
        self.sock.sendall(data + b"\r\n")

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete response in time; transcript:\n{self.transcript()}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError(
                f"no complete response in time; transcript:\n{self.transcript()}"
            ) from None
        if not chunk:
            raise ConnectionError(f"server closed the connection; transcript:\n{self.transcript()}")
        self.buffer += chunk

    def _line(self, deadline: float) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0:
            self._fill(deadline)
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def _exactly(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            self._fill(deadline)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_response(self, timeout: float = TIMEOUT) -> bytes:
        """One response (a line, and the literals it announces with the rest of the line)."""
        deadline = time.monotonic() + timeout
        out = b""
        while True:
            line = self._line(deadline)
            out += line
            found = _LITERAL.search(line)
            if found is None:
                break
            out += self._exactly(int(found[1]), deadline)
        self.log.append("S: " + out.decode("utf-8", "replace").rstrip("\r\n"))
        return out

    # -- commands ----------------------------------------------------------------------------

    def read_until_tagged(self, tag: str, timeout: float = TIMEOUT) -> list[bytes]:
        out: list[bytes] = []
        while True:
            response = self.read_response(timeout)
            out.append(response)
            if response.startswith(tag.encode() + b" "):
                return out

    def command(self, line: str, timeout: float = TIMEOUT) -> list[bytes]:
        """Send ``line`` (its first word is the tag); the responses up to the tagged one."""
        tag = line.split(" ", 1)[0]
        self.send_line(line)
        return self.read_until_tagged(tag, timeout)

    def ok(self, line: str, timeout: float = TIMEOUT) -> list[bytes]:
        """:meth:`command`, which must end in a tagged OK; the untagged responses."""
        responses = self.command(line, timeout)
        tag = line.split(" ", 1)[0]
        assert responses[-1].startswith(f"{tag} OK".encode()), self.transcript()
        return responses[:-1]

    def wait_for(self, pattern: bytes, timeout: float) -> tuple[bytes, float]:
        """The first response matching ``pattern`` and the seconds it took to come."""
        start = time.monotonic()
        compiled = re.compile(pattern)
        while True:
            remaining = timeout - (time.monotonic() - start)
            try:
                response = self.read_response(max(remaining, 0.0))
            except TimeoutError:
                raise AssertionError(
                    f"nothing matching {pattern!r} within {timeout}s:\n{self.transcript()}"
                ) from None
            if compiled.search(response):
                return response, time.monotonic() - start

    def login_plain(self, tag: str) -> list[bytes]:
        """AUTHENTICATE PLAIN without an initial response, as Thunderbird does it."""
        self.send_line(f"{tag} authenticate PLAIN")
        challenge = self.read_response()
        assert challenge.startswith(b"+"), self.transcript()
        self.send_line(base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()))
        responses = self.read_until_tagged(tag)
        assert responses[-1].startswith(f"{tag} OK".encode()), self.transcript()
        return responses


@contextlib.contextmanager
def imap(port: int, *, context: ssl.SSLContext | None = None) -> Iterator[RawImap]:
    client = RawImap(port, context=context)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def logged_in(rmail: Rmail) -> Iterator[RawImap]:
    """A clear-text session after ``LOGIN`` (the server allows it on loopback here)."""
    with imap(rmail.ports["imap"]) as client:
        client.ok(f'a0 LOGIN {ALICE} "{PASSWORD}"')
        yield client


def literal(response: bytes, item: bytes) -> bytes:
    """The literal value of ``item`` (``BODY[]``, ``BODY[1.MIME]``) in a FETCH response."""
    start = response.find(item + b" {")
    assert start >= 0, f"no {item!r} literal in {response!r}"
    open_brace = start + len(item) + 1
    close = response.index(b"}\r\n", open_brace)
    size = int(response[open_brace + 1 : close])
    return response[close + 3 : close + 3 + size]


def untagged(responses: list[bytes], pattern: bytes) -> list[bytes]:
    """The responses matching ``pattern`` (a regex), trailing CRLF removed."""
    compiled = re.compile(pattern)
    lines = [r.rstrip(b"\r\n") for r in responses]
    return [line for line in lines if compiled.search(line)]


def fetch_uids(responses: list[bytes]) -> list[int]:
    out = []
    for response in responses:
        found = re.match(rb"\* \d+ FETCH \(.*?\bUID (\d+)", response, re.DOTALL)
        if found:
            out.append(int(found[1]))
    return out


def flags_in(response: bytes) -> set[bytes]:
    """The flags of the FLAGS item of a FETCH response."""
    found = re.search(rb"FLAGS \(([^)]*)\)", response)
    assert found is not None, f"no FLAGS in {response!r}"
    return set(found[1].split())


def code_value(responses: list[bytes], code: bytes) -> int:
    """The number of ``* OK [CODE n]`` (HIGHESTMODSEQ, UIDVALIDITY, UIDNEXT)."""
    for response in responses:
        found = re.match(rb"\* OK \[" + code + rb" (\d+)\]", response)
        if found:
            return int(found[1])
    raise AssertionError(f"no [{code!r}] in {responses!r}")


# -- mbsync ---------------------------------------------------------------------------------

Snapshot = dict[str, dict[str, tuple[frozenset[str], bytes]]]


def _subject(data: bytes) -> str:
    found = re.search(rb"^Subject: ([^\r\n]*)", data, re.MULTILINE)
    assert found is not None, f"message without Subject: {data!r}"
    return found[1].decode()


def _canonical(data: bytes) -> bytes:
    """A message as mbsync copies it between IMAP and a Maildir: LF, no X-TUID line."""
    return _X_TUID.sub(b"", data.replace(b"\r\n", b"\n"), count=1)


def _server_folder(folder: Folder) -> dict[int, tuple[frozenset[str], bytes]]:
    return {
        meta.uid: (frozenset(meta.flags), folder.read(meta.uid)) for meta in folder.index.messages()
    }


def server_snapshot(rmail: Rmail) -> Snapshot:
    """Every folder of alice on the server: Subject -> (flags, canonical bytes)."""
    out: Snapshot = {}
    for name in rmail.store.mailbox(ALICE).folder_names():
        messages = _server_folder(rmail.folder(name)).values()
        out[name] = {_subject(d): (flags, _canonical(d)) for flags, d in messages}
    return out


def _maildir_flags(path: Path) -> frozenset[str]:
    if path.parent.name == "new" or ":2," not in path.name:
        return frozenset()
    return frozenset(MAILDIR_FLAGS[ch] for ch in path.name.split(":2,", 1)[1] if ch.isupper())


def local_snapshot(local: Path) -> Snapshot:
    """The Maildir tree of mbsync (SubFolders Verbatim): same shape as the server's."""
    out: Snapshot = {}
    for cur in sorted(local.rglob("cur")):
        folder = cur.parent
        name = folder.relative_to(local).as_posix()
        entries: dict[str, tuple[frozenset[str], bytes]] = {}
        for sub in ("new", "cur"):
            for path in sorted((folder / sub).iterdir()):
                data = path.read_bytes()
                subject = _subject(data)
                assert subject not in entries, f"{subject!r} twice in local {name}"
                entries[subject] = (_maildir_flags(path), _canonical(data))
        out[name] = entries
    return out


def server_dates(rmail: Rmail) -> dict[tuple[str, str], int]:
    """(folder, Subject) -> internal date of every message of alice."""
    out = {}
    for name in rmail.store.mailbox(ALICE).folder_names():
        folder = rmail.folder(name)
        for meta in folder.index.messages():
            out[name, _subject(folder.read(meta.uid))] = meta.date
    return out


def local_dates(local: Path) -> dict[tuple[str, str], int]:
    """(folder, Subject) -> file time of every local message (mbsync's CopyArrivalDate)."""
    out = {}
    for cur in local.rglob("cur"):
        name = cur.parent.relative_to(local).as_posix()
        for sub in ("new", "cur"):
            for path in (cur.parent / sub).iterdir():
                out[name, _subject(path.read_bytes())] = int(path.stat().st_mtime)
    return out


def local_file(local: Path, folder: str, subject: str) -> Path:
    """The file of the message with ``subject`` in a local folder."""
    for sub in ("new", "cur"):
        for path in (local / folder / sub).iterdir():
            if _subject(path.read_bytes()) == subject:
                return path
    raise AssertionError(f"{subject!r} not in local {folder}")


def set_local_flags(path: Path, letters: str) -> None:
    """What a Maildir client does to change flags: move to cur/ with a new info part."""
    base = path.name.split(":2,", 1)[0]
    path.rename(path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(letters))}")


def write_local_message(
    folder: Path, name: str, data: bytes, letters: str = "", date: int | None = None
) -> None:
    """A message a local client saved: written in tmp/, then moved to cur/ (no UID in name).

    ``date``, the file time, is what mbsync sends as the internal date (CopyArrivalDate).
    """
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp" / name
    tmp.write_bytes(data)
    if date is not None:
        os.utime(tmp, (date, date))
    tmp.rename(folder / "cur" / f"{name}:2,{letters}")


def mbsyncrc(tmp_path: Path, rmail: Rmail, transport: str) -> tuple[Path, Path]:
    """An .mbsyncrc for alice's whole mailbox and the local Maildir root it syncs into."""
    local = tmp_path / "local"
    local.mkdir()
    if transport == "plain":
        port, tls = rmail.ports["imap"], "SSLType None\nAuthMechs LOGIN\n"
    else:
        name = "imaps" if transport == "imaps" else "imap"
        ssl_type = "IMAPS" if transport == "imaps" else "STARTTLS"
        port = rmail.ports[name]
        tls = f"SSLType {ssl_type}\nCertificateFile {rmail.cert}\nAuthMechs PLAIN\n"
    rc = tmp_path / "mbsyncrc"
    # mbsync matches the certificate's DNS names only (not its IP address): "localhost".
    host = LOOPBACK if transport == "plain" else "localhost"
    rc.write_text(
        f"IMAPAccount rmail\nHost {host}\nPort {port}\nUser {ALICE}\n"
        f'Pass "{PASSWORD}"\n{tls}Timeout 20\n\n'
        "IMAPStore remote\nAccount rmail\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
        "Channel everything\nFar :remote:\nNear :local:\nPatterns *\n"
        "Create Both\nExpunge Both\nSyncState *\nCopyArrivalDate yes\n"
    )
    return rc, local


def run_mbsync(rc: Path) -> str:
    """``mbsync -a``; must exit 0. Returns its output (with the IMAP transcript, -Dn)."""
    mbsync = shutil.which("mbsync")
    assert mbsync, "mbsync missing: apt-get install isync"
    done = subprocess.run(
        [mbsync, "-c", str(rc), "-Dn", "-a"],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=MBSYNC_TIMEOUT,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"mbsync exited {done.returncode}:\n{output[-12000:]}"
    return output


# Subject -> (flags, internal date) of the folder tree mbsync syncs; bodies vary by kind.
TREE: Final[dict[str, dict[str, tuple[tuple[str, ...], str]]]] = {
    "INBOX": {
        "inbox-1": ((), "plain"),
        "inbox-2": ((), "utf8"),
        "inbox-3": (("\\Seen",), "multipart"),
    },
    "Work": {
        "work-1": ((), "plain"),
        "work-2": (("\\Seen", "\\Flagged"), "fromline"),
    },
    "Work/Projects": {
        "projects-1": ((), "plain"),
        "projects-2": (("\\Answered", "\\Seen"), "plain"),
    },
    "Archive": {
        "archive-1": (("\\Seen",), "plain"),
        "archive-2": (("\\Seen",), "utf8"),
    },
}


def tree_message(subject: str, kind: str) -> bytes:
    if kind == "utf8":
        return message(
            subject,
            extra="MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n",
            body="Grüße aus Köln — 8-bit text.\r\n",
        )
    if kind == "multipart":
        return message(
            subject,
            extra='MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="zz"\r\n',
            body="--zz\r\nContent-Type: text/plain\r\n\r\nPart one.\r\n"
            "--zz\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--zz--\r\n",
        )
    if kind == "fromline":
        return message(subject, body="Line one.\r\nFrom the start of a line.\r\n.\r\nEnd.\r\n")
    return message(subject, body=f"Body of {subject}.\r\n")


def seed_tree(rmail: Rmail) -> None:
    mailbox = rmail.store.mailbox(ALICE)
    for name, messages in TREE.items():
        if not mailbox.exists(name):
            mailbox.create_folder(name)
        folder = mailbox.folder(name)
        for subject, (flags, kind) in messages.items():
            folder.append(tree_message(subject, kind), flags, DATE_2024)


def flags_of(snapshot: Snapshot, folder: str) -> dict[str, frozenset[str]]:
    return {subject: flags for subject, (flags, _data) in snapshot[folder].items()}


@pytest.mark.parametrize("transport", ["plain", "imaps", "starttls"])
def test_mbsync_syncs_a_folder_tree_both_ways(
    tmp_path: Path, start_server: StartServer, transport: str
) -> None:
    # Over TLS the server refuses clear-text login even on loopback: mbsync must use TLS.
    with running(tmp_path, start_server, plaintext_login=transport == "plain") as rmail:
        seed_tree(rmail)
        rc, local = mbsyncrc(tmp_path, rmail, transport)

        # (a) Pull: every folder and message arrives, flags included, bytes intact.
        run_mbsync(rc)
        server = server_snapshot(rmail)
        assert {"INBOX", "Work", "Work/Projects", "Archive", "Trash"} <= set(server)
        assert local_snapshot(local) == server
        assert local_dates(local) == server_dates(rmail)  # CopyArrivalDate
        for name, messages in TREE.items():
            assert flags_of(server, name) == {s: frozenset(f) for s, (f, _k) in messages.items()}

        # (b) Change the Maildir as a local client would, then push.
        set_local_flags(local_file(local, "INBOX", "inbox-1"), "S")
        set_local_flags(local_file(local, "INBOX", "inbox-2"), "FS")
        set_local_flags(local_file(local, "Work", "work-1"), "RS")
        set_local_flags(local_file(local, "Archive", "archive-1"), "")  # \Seen removed
        local_file(local, "Work/Projects", "projects-1").unlink()
        write_local_message(
            local / "INBOX", "1704189600.M1P1.laptop", message("local-new"), "S", DATE_2019
        )
        write_local_message(local / "Work" / "Notes", "1704189601.M2P1.laptop", message("notes-1"))
        run_mbsync(rc)
        server = server_snapshot(rmail)
        assert flags_of(server, "INBOX") == {
            "inbox-1": {"\\Seen"},
            "inbox-2": {"\\Flagged", "\\Seen"},
            "inbox-3": {"\\Seen"},
            "local-new": {"\\Seen"},
        }
        assert flags_of(server, "Work")["work-1"] == {"\\Answered", "\\Seen"}
        assert flags_of(server, "Archive")["archive-1"] == frozenset()
        assert set(server["Work/Projects"]) == {"projects-2"}
        assert set(server["Work/Notes"]) == {"notes-1"}
        assert server_dates(rmail)["INBOX", "local-new"] == DATE_2019
        assert server["Work/Notes"]["notes-1"][1] == _canonical(message("notes-1"))
        assert local_snapshot(local) == server
        assert local_dates(local) == server_dates(rmail)  # CopyArrivalDate

        # (c) Change the server (another client, and new mail by SMTP), then pull.
        inbox = rmail.folder("INBOX")
        uids = {_subject(d): u for u, (_f, d) in _server_folder(inbox).items()}
        inbox.change_flags(uids["inbox-1"], "remove", ["\\Seen"])
        inbox.change_flags(uids["inbox-3"], "add", ["\\Flagged"])
        work = rmail.folder("Work")
        work_uids = {_subject(d): u for u, (_f, d) in _server_folder(work).items()}
        work.change_flags(work_uids["work-2"], "add", ["\\Deleted"])
        work.expunge()
        delivered = deliver(rmail, "smtp-1")
        wait_for_subject(rmail, "INBOX", "smtp-1")
        run_mbsync(rc)
        server = server_snapshot(rmail)
        assert flags_of(server, "INBOX")["inbox-1"] == frozenset()
        assert flags_of(server, "INBOX")["inbox-3"] == {"\\Flagged", "\\Seen"}
        assert "work-2" not in server["Work"]
        assert server["INBOX"]["smtp-1"][1].endswith(_canonical(delivered).split(b"\n\n", 1)[1])
        assert local_snapshot(local) == server
        assert local_dates(local) == server_dates(rmail)  # CopyArrivalDate

        # A sync with nothing to do changes nothing on either side.
        run_mbsync(rc)
        assert server_snapshot(rmail) == server
        assert local_snapshot(local) == server
        assert local_dates(local) == server_dates(rmail)  # CopyArrivalDate


def test_mbsync_folder_names_with_space_dot_ampersand_and_non_ascii(
    tmp_path: Path, start_server: StartServer
) -> None:
    names = ["Reports 2024", "v1.2", "Überblick", "Work/Straße & Co"]
    with running(tmp_path, start_server) as rmail:
        mailbox = rmail.store.mailbox(ALICE)
        for number, name in enumerate(names):
            mailbox.create_folder(name)
            mailbox.folder(name).append(message(f"named-{number}"), (), DATE_2024)
        rc, local = mbsyncrc(tmp_path, rmail, "plain")
        run_mbsync(rc)
        # isync 1.4 names local folders by the wire name (modified UTF-7, RFC 3501 §5.1.3).
        server = {mutf7.encode(name): v for name, v in server_snapshot(rmail).items()}
        assert {mutf7.encode(n) for n in names} <= set(server)
        assert local_snapshot(local) == server

        write_local_message(local / "Ideas v2.0", "1704189602.M3P1.laptop", message("idea"), "S")
        run_mbsync(rc)
        server = {mutf7.encode(name): v for name, v in server_snapshot(rmail).items()}
        assert flags_of(server, "Ideas v2.0") == {"idea": {"\\Seen"}}
        assert local_snapshot(local) == server


def test_mbsync_push_reaches_a_client_in_idle(tmp_path: Path, start_server: StartServer) -> None:
    with running(tmp_path, start_server) as rmail:
        seed_tree(rmail)
        rc, local = mbsyncrc(tmp_path, rmail, "plain")
        run_mbsync(rc)
        with logged_in(rmail) as idler:
            idler.ok("i0 ENABLE CONDSTORE")
            idler.ok("i1 SELECT INBOX")  # inbox-1, inbox-2, inbox-3 as 1, 2, 3
            idler.send_line("i2 IDLE")
            assert idler.read_response().startswith(b"+ "), idler.transcript()
            set_local_flags(local_file(local, "INBOX", "inbox-1"), "FS")
            local_file(local, "INBOX", "inbox-2").unlink()
            write_local_message(local / "INBOX", "1704189603.M4P1.laptop", message("pushed"))
            run_mbsync(rc)
            flagged, _elapsed = idler.wait_for(rb"^\* 1 FETCH ", 5.0)
            assert flags_in(flagged) == {b"\\Seen", b"\\Flagged"}, flagged
            assert re.search(rb"MODSEQ \(\d+\)", flagged), flagged  # CONDSTORE is on
            idler.wait_for(rb"^\* 4 EXISTS\r\n$", 5.0)
            idler.wait_for(rb"^\* 2 EXPUNGE\r\n$", 5.0)
            idler.send_line("DONE")
            assert idler.read_until_tagged("i2")[-1].startswith(b"i2 OK"), idler.transcript()
            listing = idler.ok("i3 UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)])")
            subjects = [literal(r, b")]") for r in listing]
            assert subjects == [
                b"Subject: %s\r\n\r\n" % s for s in (b"inbox-1", b"inbox-3", b"pushed")
            ], idler.transcript()


# -- Thunderbird ----------------------------------------------------------------------------

TB_HEADERS: Final = (
    "From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups "
    "In-Reply-To Content-Type Reply-To"
)
# Header fields Thunderbird does not ask for come first, between and last.
TB_MESSAGE: Final = (
    b"Received: from mx.remote.test by mail.example.test; Tue, 02 Jan 2024 10:00:00 +0000\r\n"
    b"From: Bob <bob@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Cc: carol@example.test\r\n"
    b"Subject: A subject folded\r\n"
    b" over two lines\r\n"
    b"X-Mailer: something\r\n"
    b"Date: Tue, 02 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <tb-2@example.test>\r\n"
    b"In-Reply-To: <tb-1@example.test>\r\n"
    b"References: <tb-0@example.test>\r\n"
    b" <tb-1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Reply body.\r\n"
)
TB_EXPECTED_HEADERS: Final = (
    b"From: Bob <bob@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Cc: carol@example.test\r\n"
    b"Subject: A subject folded\r\n"
    b" over two lines\r\n"
    b"Date: Tue, 02 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <tb-2@example.test>\r\n"
    b"In-Reply-To: <tb-1@example.test>\r\n"
    b"References: <tb-0@example.test>\r\n"
    b" <tb-1@example.test>\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
)


def seed_inbox(rmail: Rmail, count: int) -> list[bytes]:
    """``count`` messages in INBOX (UIDs 1..count); the second is TB_MESSAGE."""
    inbox = rmail.folder("INBOX")
    data = [TB_MESSAGE if i == 2 else message(f"tb-{i}") for i in range(1, count + 1)]
    for item in data:
        inbox.append(item, (), DATE_2024)
    return data


def test_thunderbird_session_condstore_idle_then_qresync_resync(rmail: Rmail) -> None:
    data = seed_inbox(rmail, 5)
    with imap(rmail.ports["imap"]) as tb:
        caps = tb.ok("1 capability")
        assert untagged(caps, rb"^\* CAPABILITY ")
        cap_words = caps[0].split()
        for word in (b"IMAP4rev1", b"STARTTLS", b"AUTH=PLAIN", b"ID", b"IDLE", b"SASL-IR"):
            assert word in cap_words, caps
        assert b"LOGINDISABLED" not in cap_words
        ids = tb.ok('2 ID ("name" "Thunderbird" "version" "128.0")')
        assert untagged(ids, rb'^\* ID \("name" "rmail" "version" "[^"]+"\)$'), ids
        done = tb.login_plain("3")
        assert re.match(rb"3 OK \[CAPABILITY [^\]]*\bQRESYNC\b", done[-1]), done
        assert untagged(tb.ok("4 ENABLE QRESYNC"), rb"^\* ENABLED .*\bQRESYNC\b")

        subscribed = tb.ok('5 list (subscribed) "" "*" return (special-use)')
        lines = {r.decode() for r in untagged(subscribed, rb"^\* LIST ")}
        # RFC 5258 §3.1: SUBSCRIBED selection implies \Subscribed on each name returned.
        assert any(line.endswith('"/" INBOX') or line.endswith('"/" "INBOX"') for line in lines)
        trash = [line for line in lines if line.endswith('"Trash"') or line.endswith(" Trash")]
        assert len(trash) == 1 and "\\Trash" in trash[0] and "\\Subscribed" in trash[0], lines
        for text in lines:
            assert "\\Subscribed" in text, text
        everything = tb.ok('6 list "" "*" return (children special-use subscribed)')
        listed = untagged(everything, rb"^\* LIST ")
        assert len(listed) == 6, listed  # INBOX, Drafts, Sent, Trash, Junk, Archive
        for item in listed:
            assert re.search(rb"\\Has(No)?Children", item), item
            assert b"\\Subscribed" in item, item
        sent = [line for line in listed if line.endswith((b' "Sent"', b" Sent"))]
        assert len(sent) == 1 and b"\\Sent" in sent[0], listed

        selected = tb.ok('7 select "INBOX" (CONDSTORE)')
        assert untagged(selected, rb"^\* 5 EXISTS$")
        uidvalidity = code_value(selected, b"UIDVALIDITY")
        modseq = code_value(selected, b"HIGHESTMODSEQ")
        assert code_value(selected, b"UIDNEXT") == 6
        changed = tb.ok(f"8 UID fetch 1:* (FLAGS) (CHANGEDSINCE {modseq - 1})")
        # Only what changed after modseq - 1: the last append, with its MODSEQ (RFC 7162).
        assert len(changed) == 1 and changed[0].startswith(b"* 5 FETCH ("), tb.transcript()
        assert fetch_uids(changed) == [5] and flags_in(changed[0]) == {b"\\Recent"}, changed
        assert b"MODSEQ (%d)" % modseq in changed[0], changed
        assert tb.ok(f"9 UID fetch 1:* (FLAGS) (CHANGEDSINCE {modseq})") == []

        headers = tb.ok(
            f"10 UID fetch 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS ({TB_HEADERS})])"
        )
        assert fetch_uids(headers) == [1, 2, 3, 4, 5]
        for response, original in zip(headers, data, strict=True):
            assert b"RFC822.SIZE %d" % len(original) in response, response
            assert b"FLAGS (\\Recent)" in response, response
            assert re.search(rb"BODY\[HEADER\.FIELDS \([^)]*\)\] \{", response, re.I), response
        assert literal(headers[1], b")]") == TB_EXPECTED_HEADERS, headers[1]

        # IDLE; new mail over SMTP is pushed as EXISTS.
        tb.send_line("11 IDLE")
        assert tb.read_response().startswith(b"+ "), tb.transcript()
        deliver(rmail, "tb-6")
        tb.wait_for(rb"^\* 6 EXISTS\r\n", 5.0)
        tb.send_line("DONE")
        assert tb.read_until_tagged("11")[-1].startswith(b"11 OK"), tb.transcript()
        tb.ok("12 logout")

    # Meanwhile another client changes flags and expunges.
    with logged_in(rmail) as other:
        other.ok("b1 SELECT INBOX")
        other.ok("b2 STORE 1 +FLAGS (\\Seen)")
        other.ok("b3 UID STORE 3 +FLAGS (\\Deleted)")
        expunged = other.ok("b4 EXPUNGE")
        assert untagged(expunged, rb"^\* 3 EXPUNGE$"), expunged
        other.ok("b5 LOGOUT")

    # Thunderbird reconnects and resynchronises with what it knew (RFC 7162 §3.2.5).
    with imap(rmail.ports["imap"]) as tb:
        tb.ok("1 capability")
        tb.login_plain("2")
        assert untagged(tb.ok("3 ENABLE QRESYNC"), rb"^\* ENABLED .*\bQRESYNC\b")
        resync = tb.ok(f'4 select "INBOX" (QRESYNC ({uidvalidity} {modseq} 1:5))')
        assert untagged(resync, rb"^\* 5 EXISTS$"), resync  # 6 minus the expunged one
        assert untagged(resync, rb"^\* VANISHED \(EARLIER\) 3$"), resync
        fetches = untagged(resync, rb"^\* \d+ FETCH ")
        # What changed after `modseq`: UID 1's flags and UID 6, new since then.
        assert sorted(fetch_uids(fetches)) == [1, 6], resync
        for fetched in fetches:
            assert re.search(rb"MODSEQ \(\d+\)", fetched), fetched
        one = next(line for line in fetches if re.search(rb"\bUID 1\b", line))
        assert re.match(rb"^\* 1 FETCH \(", one), one
        assert b"\\Seen" in one, one
        six = next(line for line in fetches if re.search(rb"\bUID 6\b", line))
        assert re.match(rb"^\* 5 FETCH \(", six), six
        new_modseq = code_value(resync, b"HIGHESTMODSEQ")
        assert new_modseq > modseq

        # Another change while selected; UID FETCH ... (CHANGEDSINCE VANISHED) reports it.
        with logged_in(rmail) as other:
            other.ok("b1 SELECT INBOX")
            other.ok("b2 UID STORE 4 +FLAGS (\\Deleted)")
            other.ok("b3 EXPUNGE")
            other.ok("b4 UID STORE 2 +FLAGS (\\Flagged)")
        vanished = tb.ok(f"5 UID fetch 1:* (FLAGS) (CHANGEDSINCE {new_modseq} VANISHED)")
        # RFC 7162 §3.2.6: UID 4 is reported gone. Still in this session's view, it may come
        # as VANISHED (EARLIER) (no change of sequence numbers, §3.2.10) or directly as the
        # expunge itself, a plain VANISHED (allowed during a UID command, RFC 3501 §7.4.1).
        gone = untagged(vanished, rb"^\* VANISHED (\(EARLIER\) )?4$")
        assert gone, vanished
        assert set(fetch_uids(untagged(vanished, rb"^\* \d+ FETCH "))) == {2}, vanished
        listing = tb.ok("6 UID fetch 1:* (UID)")
        # By now the expunge itself was reported (a plain VANISHED) and numbers moved up.
        assert b"* VANISHED 4" in [r.rstrip(b"\r\n") for r in vanished + listing], tb.transcript()
        assert [r for r in listing if b"FETCH" in r] == [
            b"* %d FETCH (UID %d)\r\n" % p for p in ((1, 1), (2, 2), (3, 5), (4, 6))
        ], tb.transcript()
        tb.ok("7 logout")


# -- Apple Mail -----------------------------------------------------------------------------


def test_apple_mail_fetches_whole_bodies_and_moves_to_trash(rmail: Rmail) -> None:
    data = seed_inbox(rmail, 3)
    with logged_in(rmail) as mail:
        mail.ok("2 ID NIL")
        mail.ok("3 ENABLE QRESYNC")
        mail.ok('4 SELECT "INBOX"')
        bodies = mail.ok("5 UID FETCH 2 (BODY.PEEK[])")
        assert len(bodies) == 1 and bodies[0].startswith(b"* 2 FETCH ("), bodies
        assert literal(bodies[0], b"BODY[]") == data[1]
        # PEEK leaves \Seen alone (RFC 3501 §6.4.5).
        flags = mail.ok("6 UID FETCH 2 (FLAGS)")
        assert b"\\Seen" not in flags[0], flags
        partial = mail.ok("7 UID FETCH 2 (BODY.PEEK[]<0.10>)")
        assert literal(partial[0], b"BODY[]<0>") == data[1][:10], partial

        moved = mail.command('8 UID MOVE 2 "Trash"')
        assert moved[-1].startswith(b"8 OK"), mail.transcript()
        trash = rmail.folder("Trash")
        uidvalidity = trash.index.uidvalidity
        new_uid = trash.index.uids[-1]
        # RFC 6851 §4.3: COPYUID in an untagged OK before the expunge; QRESYNC -> VANISHED.
        copyuid = rb"^\* OK \[COPYUID %d 2 %d\] " % (uidvalidity, new_uid)
        assert re.match(copyuid, moved[0]), moved
        assert untagged(moved, rb"^\* VANISHED 2$"), moved
        assert trash.read(new_uid) == data[1]
        assert list(rmail.folder("INBOX").index.uids) == [1, 3]

        mail.send_line(f'9 APPEND "Sent" (\\Seen) {{{len(data[0])}}}')
        assert mail.read_response().startswith(b"+"), mail.transcript()
        mail.sock.sendall(data[0] + b"\r\n")
        result = mail.read_until_tagged("9")
        sent = rmail.folder("Sent")
        assert re.match(
            rb"9 OK \[APPENDUID %d %d\]" % (sent.index.uidvalidity, sent.index.uids[-1]),
            result[-1],
        ), result
        assert sent.read(sent.index.uids[-1]) == data[0]
        mail.ok("10 LOGOUT")


# -- mutt -----------------------------------------------------------------------------------

MUTT_HEADERS: Final = (
    "DATE FROM SENDER SUBJECT TO CC MESSAGE-ID REFERENCES CONTENT-TYPE "
    "CONTENT-DESCRIPTION IN-REPLY-TO REPLY-TO LINES LIST-POST X-LABEL"
)


def test_mutt_fetches_headers_deletes_and_expunges(rmail: Rmail) -> None:
    data = seed_inbox(rmail, 4)
    with logged_in(rmail) as mutt:
        selected = mutt.ok('a0001 SELECT "INBOX"')
        assert untagged(selected, rb"^\* 4 EXISTS$"), selected
        assert untagged(selected, rb"^\* OK \[UNSEEN 1\]"), selected
        index = mutt.ok(
            "a0002 FETCH 1:4 (UID FLAGS INTERNALDATE RFC822.SIZE "
            f"BODY.PEEK[HEADER.FIELDS ({MUTT_HEADERS})])"
        )
        assert fetch_uids(index) == [1, 2, 3, 4], index
        for seq, response in enumerate(index, start=1):
            assert response.startswith(b"* %d FETCH (" % seq), response
            assert b'INTERNALDATE "02-Jan-2024 ' in response, response
            assert b"RFC822.SIZE %d" % len(data[seq - 1]) in response, response
        # RFC 3501 §6.4.5: the subset in the message's order, with the blank line after it.
        assert literal(index[1], b")]") == TB_EXPECTED_HEADERS, index[1]
        # .SILENT: no FETCH back (RFC 3501 §6.4.6).
        assert mutt.ok("a0003 STORE 2 +FLAGS.SILENT (\\Deleted)") == []
        stored = mutt.ok("a0004 STORE 3 +FLAGS (\\Seen)")
        assert len(stored) == 1 and stored[0].startswith(b"* 3 FETCH (FLAGS ("), stored
        assert flags_in(stored[0]) == {b"\\Seen", b"\\Recent"}, stored
        expunged = mutt.ok("a0005 EXPUNGE")
        assert [r.rstrip(b"\r\n") for r in expunged] == [b"* 2 EXPUNGE"], expunged
        assert list(rmail.folder("INBOX").index.uids) == [1, 3, 4]
        after = mutt.ok("a0006 FETCH 1:* (UID FLAGS)")
        assert [r.rstrip(b"\r\n") for r in after] == [
            b"* 1 FETCH (UID 1 FLAGS (\\Recent))",
            b"* 2 FETCH (UID 3 FLAGS (\\Seen \\Recent))",
            b"* 3 FETCH (UID 4 FLAGS (\\Recent))",
        ], mutt.transcript()
        mutt.ok("a0007 LOGOUT")


# -- K-9 Mail / FairEmail -------------------------------------------------------------------

K9_MESSAGE: Final = (
    b"From: Carol <carol@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: Report\r\n"
    b"Date: Tue, 02 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <report@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"This is a multi-part message in MIME format.\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Hello\r\n"
    b"World\r\n"
    b"\r\n"
    b"--b1\r\n"
    b'Content-Type: application/pdf; name="r.pdf"\r\n'
    b'Content-Disposition: attachment; filename="r.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--b1--\r\n"
)
# RFC 3501 §7.4.2: part 1 is "Hello\r\nWorld\r\n" (14 octets, 2 lines: the CRLF before a
# boundary belongs to the boundary), part 2 is "JVBERi0xLjQK" (12 octets).
K9_BODYSTRUCTURE: Final = (
    b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 14 2 NIL NIL NIL NIL)'
    b'("APPLICATION" "PDF" ("NAME" "r.pdf") NIL NIL "BASE64" 12 NIL'
    b' ("ATTACHMENT" ("FILENAME" "r.pdf")) NIL NIL)'
    b' "MIXED" ("BOUNDARY" "b1") NIL NIL NIL)'
)


def test_k9_fairemail_search_since_bodystructure_and_mime_parts(rmail: Rmail) -> None:
    inbox = rmail.folder("INBOX")
    inbox.append(message("k9-1"), (), DATE_2024)  # UID 1
    inbox.append(message("k9-2"), ("\\Deleted",), DATE_2024)  # UID 2: deleted
    inbox.append(K9_MESSAGE, ("\\Seen",), DATE_2024)  # UID 3
    inbox.append(message("k9-old"), (), DATE_2019)  # UID 4: before 2020
    with logged_in(rmail) as k9:
        k9.ok('2 SELECT "INBOX"')
        found = k9.ok("3 UID SEARCH UNDELETED SINCE 1-Jan-2020")
        assert [r.rstrip(b"\r\n") for r in found] == [b"* SEARCH 1 3"], k9.transcript()
        found = k9.ok("4 UID SEARCH 1:* NOT DELETED SINCE 1-Jan-2020")
        assert [r.rstrip(b"\r\n") for r in found] == [b"* SEARCH 1 3"], k9.transcript()
        found = k9.ok("5 UID SEARCH BEFORE 1-Jan-2020")
        assert [r.rstrip(b"\r\n") for r in found] == [b"* SEARCH 4"], k9.transcript()

        structure = k9.ok("6 UID FETCH 3 (UID RFC822.SIZE FLAGS BODYSTRUCTURE)")
        assert len(structure) == 1, structure
        found_bs = re.search(rb"BODYSTRUCTURE (\(.*\))\)\r\n$", structure[0])
        assert found_bs is not None, structure
        assert found_bs[1].upper() == K9_BODYSTRUCTURE.upper(), structure[0]
        assert b"RFC822.SIZE %d" % len(K9_MESSAGE) in structure[0]

        mime = k9.ok("7 UID FETCH 3 (UID BODY.PEEK[1.MIME] BODY.PEEK[1])")
        assert literal(mime[0], b"BODY[1.MIME]") == (
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        ), mime
        assert literal(mime[0], b"BODY[1]") == b"Hello\r\nWorld\r\n", mime
        attachment = k9.ok("8 UID FETCH 3 (BODY.PEEK[2.MIME] BODY.PEEK[2])")
        assert literal(attachment[0], b"BODY[2]") == b"JVBERi0xLjQK", attachment
        assert literal(attachment[0], b"BODY[2.MIME]").startswith(
            b'Content-Type: application/pdf; name="r.pdf"\r\n'
        ), attachment
        # Read in the app: FairEmail sets \Seen explicitly, K-9 too.
        seen = k9.ok("9 UID STORE 1 +FLAGS (\\Seen)")
        # RFC 3501 §6.4.8: the FETCH of a UID STORE carries the UID.
        assert len(seen) == 1 and seen[0].startswith(b"* 1 FETCH ("), seen
        assert fetch_uids(seen) == [1] and flags_in(seen[0]) == {b"\\Seen", b"\\Recent"}, seen
        k9.ok("10 LOGOUT")


# -- IDLE push ------------------------------------------------------------------------------


def test_idle_pushes_new_mail_flag_changes_and_expunges(rmail: Rmail) -> None:
    seed_inbox(rmail, 3)
    with logged_in(rmail) as idler, logged_in(rmail) as other:
        idler.ok("i1 SELECT INBOX")
        other.ok("o1 SELECT INBOX")
        idler.send_line("i2 IDLE")
        assert idler.read_response().startswith(b"+ "), idler.transcript()

        # Measured from the start of the SMTP session: an upper bound of the push latency.
        start = time.monotonic()
        deliver(rmail, "idle-1")
        accepted = time.monotonic() - start
        idler.wait_for(rb"^\* 4 EXISTS\r\n$", 5.0)
        elapsed = time.monotonic() - start
        print(f"IDLE: EXISTS {elapsed:.3f}s after the SMTP session began ({accepted:.3f}s in it)")
        assert elapsed < 2.0, f"EXISTS came {elapsed:.3f}s after the delivery began"

        other.ok("o2 STORE 2 +FLAGS (\\Flagged)")
        fetched, elapsed = idler.wait_for(rb"^\* 2 FETCH ", 5.0)
        assert b"\\Flagged" in fetched, fetched
        assert elapsed < 2.0, f"FETCH came {elapsed:.3f}s after the STORE"

        other.ok("o3 STORE 1 +FLAGS.SILENT (\\Deleted)")
        idler.wait_for(rb"^\* 1 FETCH \(FLAGS \(.*\\Deleted", 5.0)
        other.ok("o4 EXPUNGE")
        _line, elapsed = idler.wait_for(rb"^\* 1 EXPUNGE\r\n$", 5.0)
        assert elapsed < 2.0, f"EXPUNGE came {elapsed:.3f}s after the other EXPUNGE"

        idler.send_line("DONE")
        assert idler.read_until_tagged("i2")[-1].startswith(b"i2 OK"), idler.transcript()
        after = idler.ok("i3 UID FETCH 1:* (UID FLAGS)")
        assert fetch_uids(after) == [2, 3, 4], idler.transcript()


def test_idle_with_qresync_pushes_vanished_with_uid_and_modseq(rmail: Rmail) -> None:
    seed_inbox(rmail, 3)
    with logged_in(rmail) as idler, logged_in(rmail) as other:
        idler.ok("i0 ENABLE QRESYNC")
        idler.ok("i1 SELECT INBOX")
        other.ok("o1 SELECT INBOX")
        idler.send_line("i2 IDLE")
        assert idler.read_response().startswith(b"+ "), idler.transcript()

        # RFC 7162 §3.2.4: with QRESYNC, unsolicited FETCH carries UID and MODSEQ.
        other.ok("o2 UID STORE 2 +FLAGS (\\Flagged)")
        fetched, _elapsed = idler.wait_for(rb"^\* 2 FETCH ", 5.0)
        assert fetch_uids([fetched]) == [2] and b"\\Flagged" in flags_in(fetched), fetched
        assert re.search(rb"MODSEQ \(\d+\)", fetched), fetched
        # RFC 7162 §3.2.10: VANISHED instead of EXPUNGE once QRESYNC is enabled.
        other.ok('o3 UID MOVE 1 "Archive"')
        gone, _elapsed = idler.wait_for(rb"^\* (VANISHED|\d+ EXPUNGE)", 5.0)
        assert gone == b"* VANISHED 1\r\n", idler.transcript()
        # Mail for another folder is no news for this one.
        note = message("elsewhere")
        other.ok(f'o4 APPEND "Archive" {{{len(note)}+}}\r\n{note.decode()}')
        idler.send_line("DONE")
        rest = idler.read_until_tagged("i2")
        assert len(rest) == 1 and rest[0].startswith(b"i2 OK"), idler.transcript()
        after = idler.ok("i3 UID FETCH 1:* (UID)")
        assert fetch_uids(after) == [2, 3], idler.transcript()


# -- STARTTLS -------------------------------------------------------------------------------


def test_starttls_does_not_run_plaintext_pipelined_behind_it(rmail: Rmail) -> None:
    """Bytes a man in the middle adds after STARTTLS must not run inside TLS.

    The STARTTLS command injection of CVE-2011-0411 (Postfix) and CVE-2011-1926 (Cyrus
    IMAP): a client never pipelines after STARTTLS (RFC 3501 §6.2.1), so whatever is
    buffered in clear text when TLS starts is an attacker's and is discarded (or, read as a
    TLS handshake, ends the connection).
    """
    with imap(rmail.ports["imap"]) as client:
        # One segment: the client's STARTTLS and a command added in clear behind it.
        client.log.append("C: 1 STARTTLS\\r\\n2 CAPABILITY (one segment)")
        client.sock.sendall(b"1 STARTTLS\r\n2 CAPABILITY\r\n")
        assert client.read_response().startswith(b"1 OK"), client.transcript()
        assert client.buffer == b"", client.transcript()
        try:
            client.sock = rmail.tls_context().wrap_socket(client.sock, server_hostname="localhost")
            client.send_line("3 NOOP")
            responses = client.read_until_tagged("3")
        except (ConnectionError, ssl.SSLError):
            return  # the server hung up on the pipelined bytes: safe
        assert responses == [b"3 OK NOOP completed\r\n"], client.transcript()
