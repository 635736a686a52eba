"""Helpers for the IMAP end-to-end tests: a running ``rmail serve``, a raw IMAP client, mail.

The server comes from ``tests/conftest.py`` (``RunningServer``, ``make_config``); this module
adds what the IMAP tests need on top of it:

- ``start_imap_server``: a data directory with users made through the store, then the real
  process (for module-scoped fixtures: one start serves many tests);
- ``RawImap``: a line-level client on a socket that sends one command and collects every
  response up to its tagged completion, with literals in responses read by count and kept
  inline (``{n}`` CRLF + n bytes), so assertions read like an RFC 3501 transcript;
- ``deliver``: a message into a mailbox through the server's SMTP port (smtplib).

Every network call has a timeout; waits poll with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from conftest import RunningServer, make_config
from line_client import LOOPBACK, TIMEOUT, TLS_NAME, LineClient

from rmail.config import AuthConfig
from rmail.store import Store

__all__ = [
    "CHEAP_AUTH",
    "LOOPBACK",
    "TLS_NAME",
    "ImapServer",
    "RawImap",
    "Reply",
    "deliver",
    "make_message",
    "start_imap_server",
    "tls_context",
    "wait_until",
]

CHEAP_AUTH: Final = AuthConfig(argon2_time_cost=1, argon2_memory_kib=64)
HOSTNAME: Final = "mail.example.test"
# A literal announced at the end of a response line: "{12}" (or "~{12}" for literal8).
_LITERAL_RE: Final = re.compile(rb"~?\{(\d+)\}$")
_user_ids = itertools.count(1)


@dataclass
class ImapServer:
    """A running server, its store (opened by the test process) and a trusting TLS context."""

    server: RunningServer
    store: Store
    context: ssl.SSLContext
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def ports(self) -> dict[str, int]:
        return self.server.ports

    @property
    def root(self) -> Path:
        return self.server.root

    def connect(self, *, tls: bool = False, timeout: float = TIMEOUT) -> RawImap:
        """A raw client on the IMAP port (or the IMAPS port with ``tls``), greeting read."""
        if tls:
            return RawImap(self.ports["imaps"], implicit_tls=self.context, timeout=timeout)
        return RawImap(self.ports["imap"], timeout=timeout)

    def new_user(self, prefix: str = "u") -> str:
        """A fresh account made through the store while the server runs; its address."""
        address = f"{prefix}{next(_user_ids)}@example.test"
        password = f"pw-{address.split('@', maxsplit=1)[0]}-5e1f"
        self.store.create_user(address, password)
        self.passwords[address] = password
        return address

    def add(
        self,
        address: str,
        message: bytes,
        folder: str = "INBOX",
        flags: tuple[str, ...] = (),
        date: int | None = None,
    ) -> int:
        """Store a message through the store API (as delivery would); its UID."""
        return self.store.mailbox(address).folder(folder).append(message, flags, date).uid

    def folder_state(self, address: str, folder: str = "INBOX") -> tuple[int, int, int]:
        """(UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) of a folder as the store has it now."""
        index = self.store.mailbox(address).folder(folder).refresh()
        return index.uidvalidity, index.uidnext, index.highestmodseq

    def login(self, address: str, *, select: str | None = None) -> RawImap:
        """A raw client logged in as ``address`` (plaintext on loopback), optionally SELECTed."""
        client = self.connect()
        client.ok(f"LOGIN {address} {self.passwords[address]}")
        if select is not None:
            client.ok(f"SELECT {select}")
        return client


def tls_context(root: Path) -> ssl.SSLContext:
    """A verifying client context that trusts exactly the server's generated certificate."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(root / "secrets" / "tls" / "cert.pem"))
    return context


@contextlib.contextmanager
def start_imap_server(
    tmp_path: Path,
    users: Mapping[str, str],
    *,
    plaintext: bool = True,
    **overrides: Any,
) -> Iterator[ImapServer]:
    """Make the data directory with ``users`` (address -> password), start ``rmail serve``.

    ``plaintext`` sets ``imap.plaintext_auth_on_loopback``; ``overrides`` are config sections
    for ``make_config`` (``imap={"max_bad_commands": 3}`` keeps the other imap keys).
    """
    imap = {"plaintext_auth_on_loopback": plaintext, **overrides.pop("imap", {})}
    config_path = make_config(tmp_path, imap=imap, **overrides)
    store = Store.open(tmp_path / "data", auth=CHEAP_AUTH, hostname=HOSTNAME)
    for address, password in users.items():
        store.create_user(address, password)
    server = RunningServer(config_path)
    server.start()
    try:
        yield ImapServer(server, store, tls_context(server.root), dict(users))
    finally:
        store.close()
        code = server.stop()
        assert code == 0, f"rmail serve exited {code}:\n{server.stderr_text()}"


@dataclass
class Reply:
    """The responses to one command: untagged and continuation lines, then the tagged one.

    Each line is the bytes without its final CRLF; a literal stays inline after its ``{n}``
    and CRLF.
    """

    tag: str
    untagged: list[bytes]
    tagged: bytes

    @property
    def status(self) -> str:
        """``OK``, ``NO`` or ``BAD``."""
        return self.tagged.split(b" ", 2)[1].decode()

    @property
    def text(self) -> str:
        """The tagged line after the tag and status, e.g. ``[READ-WRITE] SELECT completed``."""
        parts = self.tagged.split(b" ", 2)
        return parts[2].decode("utf-8", "replace") if len(parts) > 2 else ""

    @property
    def code(self) -> str | None:
        """The response code of the tagged line without brackets (``TRYCREATE``), or None."""
        match = re.match(r"\[([^\]]*)\]", self.text)
        return match[1] if match else None

    def lines(self, prefix: bytes) -> list[bytes]:
        """Untagged lines starting with ``* `` + ``prefix`` (``b"3 FETCH"``, ``b"LIST"``)."""
        return [line for line in self.untagged if line.startswith(b"* " + prefix)]

    def one(self, prefix: bytes) -> bytes:
        found = self.lines(prefix)
        assert len(found) == 1, f"expected one {prefix!r} line, got {self.untagged!r}"
        return found[0]

    def kinds(self) -> list[bytes]:
        """The response kind of each untagged line: ``EXISTS``, ``FETCH``, ``OK``, ``LIST``."""
        out = []
        for line in self.untagged:
            words = line.split(b" ")
            if len(words) < 2:
                continue
            out.append(words[2] if words[1].isdigit() and len(words) > 2 else words[1])
        return out


class RawImap(LineClient):
    """A line-level IMAP client on a socket; tags are ``t1``, ``t2``, ..."""

    def __init__(
        self,
        port: int,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        super().__init__(port, implicit_tls=implicit_tls, timeout=timeout)
        self._tags = itertools.count(1)
        self.greeting = self.read_response()

    def next_tag(self) -> str:
        return f"t{next(self._tags)}"

    def read_response(self) -> bytes:
        """One whole response: a line, and each literal it announces with the line after it."""
        line = self.read_line()
        while (match := _LITERAL_RE.search(line)) is not None:
            line += b"\r\n" + self.read_exactly(int(match[1])) + self.read_line()
        return line

    def pending(self, timeout: float = 0.3) -> bytes:
        """Whatever the server sends within ``timeout`` (to prove it sent nothing)."""
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                self.sock.settimeout(remaining)
                self._fill()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self.sock.settimeout(self.timeout)
        data, self._buf = self._buf, b""
        return data

    def closed_within(self, timeout: float) -> bool:
        """True once the server closes the connection (EOF or reset) within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self._buf += chunk
        except TimeoutError:
            return False
        except (ConnectionError, ssl.SSLError):
            return True
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(self.timeout)
        return False

    # -- commands ------------------------------------------------------------------------

    def collect(self, tag: str) -> Reply:
        """Responses up to the tagged completion of ``tag``."""
        untagged: list[bytes] = []
        while True:
            line = self.read_response()
            if line.startswith(tag.encode() + b" "):
                return Reply(tag, untagged, line)
            untagged.append(line)

    def cmd(self, command: str | bytes) -> Reply:
        """Send ``tag command`` CRLF and collect the reply."""
        tag = self.next_tag()
        data = command.encode() if isinstance(command, str) else command
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.collect(tag)

    def ok(self, command: str | bytes) -> Reply:
        """:meth:`cmd` that must answer OK."""
        reply = self.cmd(command)
        assert reply.status == "OK", f"{command!r} -> {reply.untagged!r} {reply.tagged!r}"
        return reply

    def start(self, command: str | bytes) -> str:
        """Send a command without reading anything; returns its tag."""
        tag = self.next_tag()
        data = command.encode() if isinstance(command, str) else command
        self.send(tag.encode() + b" " + data + b"\r\n")
        return tag

    def append(
        self, mailbox: str, message: bytes, options: str = "", *, non_sync: bool = False
    ) -> Reply:
        """APPEND with a (synchronizing, unless ``non_sync``) literal."""
        tag = self.next_tag()
        opts = f" {options}" if options else ""
        plus = "+" if non_sync else ""
        self.send(f"{tag} APPEND {mailbox}{opts} {{{len(message)}{plus}}}\r\n".encode())
        if not non_sync:
            line = self.read_line()
            if not line.startswith(b"+"):
                # Refused before the literal: this is the tagged reply.
                assert line.startswith(tag.encode()), line
                return Reply(tag, [], line)
        self.send(message + b"\r\n")
        return self.collect(tag)

    def starttls(self, context: ssl.SSLContext) -> Reply:
        reply = self.ok("STARTTLS")
        assert not self._buf, f"data after the STARTTLS reply: {self._buf!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname=TLS_NAME)
        return reply


def make_message(
    subject: str,
    *,
    sender: str = "Sender <sender@remote.test>",
    to: str = "alice@example.test",
    body: str = "Hello.\r\n",
    headers: str = "",
    date: str = "Mon, 07 Feb 1994 21:52:25 -0800",
) -> bytes:
    """A small CRLF message."""
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n{headers}"
    return (head + "\r\n" + body).encode()


def deliver(port: int, recipient: str, message: bytes) -> None:
    """Send ``message`` to ``recipient`` through the MX port (smtplib)."""
    with smtplib.SMTP(LOOPBACK, port, timeout=TIMEOUT) as client:
        assert client.sendmail("sender@remote.test", [recipient], message) == {}


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)
