"""Helpers for the SMTP end-to-end tests: clients for a running ``rmail serve``, mailbox reads.

The server itself comes from ``tests/conftest.py`` (``RunningServer``, ``make_config``); this
module adds what the SMTP tests need on top of it:

- ``start_smtp_server``: a data directory with users and aliases made through the store,
  then the real process (for module-scoped fixtures: one start serves many tests);
- ``connect``: an ``smtplib`` client on the loopback address that verifies the server's
  self-signed certificate for the name ``localhost`` (STARTTLS or implicit TLS);
- ``RawSmtp``: a line-level client on a plain socket, for what ``smtplib`` hides (a reply
  after the one it reads, a 421 banner, a half-sent message, a silent client);
- ``reply``: an ``smtplib`` ``(code, message)`` pair as the one-line text of ``replies.py``.

Every network call has a timeout; waits poll with a deadline.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from conftest import RunningServer, make_config
from line_client import LOOPBACK, TIMEOUT, TLS_NAME, LineClient

from rmail.config import AuthConfig
from rmail.smtp import replies
from rmail.store import Store
from rmail.store.maildir import INBOX

__all__ = [
    "CHEAP_AUTH",
    "HOSTNAME",
    "TLS_NAME",
    "RawSmtp",
    "SmtpServer",
    "connect",
    "messages",
    "reply",
    "start_smtp_server",
    "wait_until",
]

CHEAP_AUTH: Final = AuthConfig(argon2_time_cost=1, argon2_memory_kib=64)
HOSTNAME: Final = "mail.example.test"  # make_config's hostname: the one in 421 replies


@dataclass
class SmtpServer:
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


def tls_context(root: Path) -> ssl.SSLContext:
    """A verifying client context that trusts exactly the server's generated certificate."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(root / "secrets" / "tls" / "cert.pem"))
    return context


@contextlib.contextmanager
def start_smtp_server(
    tmp_path: Path,
    users: Mapping[str, str],
    *,
    quotas: Mapping[str, int] | None = None,
    aliases: Sequence[tuple[str, str, str]] = (),
    folders: Sequence[tuple[str, str]] = (),
    extra_domains: Sequence[str] = (),
    **overrides: Any,
) -> Iterator[SmtpServer]:
    """Make the data directory (users, aliases, folders), start ``rmail serve``, stop it.

    Args:
        users: address -> password.
        quotas: address -> quota in MiB (others get the default).
        aliases: (domain, pattern, target) rules, added in order.
        folders: (address, folder) pairs to create.
        extra_domains: hosted besides example.test (in the config and in the store).
        overrides: config sections for ``make_config`` (``smtp={"max_recipients": 3}``).
    """
    domains = ["example.test", *extra_domains]
    config_path = make_config(tmp_path, domains=domains, **overrides)
    store = Store.open(tmp_path / "data", auth=CHEAP_AUTH, hostname=HOSTNAME)
    for domain in domains:
        if not store.accounts.has_domain(domain):
            store.accounts.add_domain(domain)
    for address, password in users.items():
        store.create_user(address, password, quota_mb=(quotas or {}).get(address, 1024))
    for domain, pattern, target in aliases:
        store.accounts.add_alias(domain, pattern, target)
    for address, folder in folders:
        store.mailbox(address).create_folder(folder)
    server = RunningServer(config_path)
    server.start()
    try:
        yield SmtpServer(server, store, tls_context(server.root), dict(users))
    finally:
        store.close()
        code = server.stop()
        assert code == 0, f"rmail serve exited {code}:\n{server.stderr_text()}"


class _SMTP(smtplib.SMTP):
    """smtplib on the loopback address, checking the certificate for ``TLS_NAME``."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._host = TLS_NAME  # what starttls() passes as server_hostname


class _SMTP_SSL(smtplib.SMTP_SSL):
    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(context=context, timeout=timeout)
        self._host = TLS_NAME  # what _get_socket() passes as server_hostname


def connect(
    port: int,
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    login: tuple[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> smtplib.SMTP:
    """An smtplib client after EHLO (and STARTTLS, and AUTH PLAIN when asked)."""
    client: smtplib.SMTP = (
        _SMTP_SSL(implicit_tls, timeout) if implicit_tls is not None else _SMTP(timeout)
    )
    code, banner = client.connect(LOOPBACK, port)
    if code != 220:
        client.close()
        raise smtplib.SMTPConnectError(code, banner)
    try:
        client.ehlo()
        if starttls is not None:
            client.starttls(context=starttls)
            client.ehlo()
        if login is not None:
            client.user, client.password = login
            client.auth("PLAIN", client.auth_plain)
    except BaseException:
        client.close()
        raise
    return client


def reply(code: int, message: bytes | str) -> str:
    """``(250, b"2.1.0 Sender OK")`` -> ``"250 2.1.0 Sender OK"``, as in ``replies.py``."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {text}"


def quit_quietly(client: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPException, OSError):
        client.quit()
    client.close()


class RawSmtp(LineClient):
    """A line-level SMTP client on a socket (CRLF lines, multi-line replies joined by LF)."""

    def __init__(
        self,
        port: int,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        super().__init__(port, implicit_tls=implicit_tls, timeout=timeout)
        self.banner = self.read_reply()

    def _line(self) -> bytes:
        return self.read_line()

    def read_reply(self) -> str:
        """One whole reply; a multi-line reply's lines joined by LF."""
        lines = [self._line().decode("utf-8", "replace")]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self._line().decode("utf-8", "replace"))
        return "\n".join(lines)

    def cmd(self, line: str) -> str:
        self.send(line.encode("utf-8") + b"\r\n")
        return self.read_reply()

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
        return False


def raw_with_retry(port: int, timeout: float = TIMEOUT, **kwargs: Any) -> RawSmtp:
    """A connection with a 220 banner; retried while the connection limit is still held by
    connections the server has not yet seen closed (their FIN is in flight)."""
    refused = replies.R421_TOO_MANY_CONNECTIONS.format(host=HOSTNAME)
    deadline = time.monotonic() + timeout
    while True:
        raw = RawSmtp(port, **kwargs)
        if raw.banner != refused:
            return raw
        raw.close()
        assert time.monotonic() < deadline, "the connection limit was never released"
        time.sleep(0.05)


def messages(store: Store, address: str, folder: str = INBOX) -> list[bytes]:
    """Every message of a folder, as stored (the index is re-read from disk first)."""
    box = store.mailbox(address).folder(folder)
    return [box.read(meta.uid) for meta in box.index.messages()]


def with_marker(store: Store, address: str, marker: str, folder: str = INBOX) -> list[bytes]:
    """The messages of a folder that contain ``marker``."""
    needle = marker.encode()
    return [m for m in messages(store, address, folder) if needle in m]


def count(store: Store, address: str, folder: str = INBOX) -> int:
    return len(store.mailbox(address).folder(folder).index)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


def stays(check: Callable[[], bool], duration: float) -> bool:
    """Whether ``check`` holds on every poll for ``duration`` seconds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not check():
            return False
        time.sleep(0.02)
    return check()
