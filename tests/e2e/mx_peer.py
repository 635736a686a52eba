"""A remote MX for tests: an aiosmtpd server on 127.0.0.1 that keeps what it accepts.

It stands in for another organisation's mail server. Replies can be scripted per recipient
(``refuse["bad@remote.test"] = "550 5.1.1 No such user"``), for the next few transactions
(``defer_next = 1`` answers the next RCPT with 451) or for every connection
(``stall = True``: accept the TCP connection and never greet).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    login: str | None = None


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    defer_next: int = 0
    data_reply: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            if self.defer_next > 0:
                self.defer_next -= 1
                return "451 4.3.0 Try again later"
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        content = envelope.original_content or b""
        with self.lock:
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    content,
                    session.ssl is not None,
                    _login(session),
                )
            )
        return "250 2.0.0 Queued"


class MxPeer:
    """``with MxPeer() as mx:`` ... ``mx.port``, ``mx.wait(1)``, ``mx.received``."""

    def __init__(self, *, smtp: dict[str, Any] | None = None, **handler: Any) -> None:
        """``handler``: fields of the scripted replies; ``smtp``: aiosmtpd ``SMTP`` options
        (``tls_context`` for STARTTLS, ``authenticator`` and ``auth_require_tls`` for AUTH)."""
        self.handler = _Handler(**handler)
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=_free_port(),
            server_hostname="mx.remote.test",
            **(smtp or {}),
        )
        self.port = self._controller.port

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def wait(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"the MX got {len(self.received)} messages, expected {count}")

    def __enter__(self) -> MxPeer:
        self._controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._controller.stop()


class StallingPeer:
    """Accepts TCP connections and never says anything (a stalled remote server)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(50)
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    @property
    def connections(self) -> int:
        return len(self._held)

    def __enter__(self) -> StallingPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


def _login(session: Session) -> str | None:
    data = session.auth_data
    login = getattr(data, "login", None)
    return login.decode() if isinstance(login, bytes) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refused_port() -> int:
    """A loopback port where nothing listens (connection refused)."""
    return _free_port()
