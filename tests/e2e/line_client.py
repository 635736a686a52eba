"""A line-level client on a plain or TLS socket, shared by the raw SMTP and IMAP helpers."""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Final, Self

TLS_NAME: Final = "localhost"  # a name the generated certificate carries
LOOPBACK: Final = "127.0.0.1"
TIMEOUT: Final = 10.0  # seconds for any single network operation


class LineClient:
    """Connects to the loopback port and reads CRLF lines and exact byte counts."""

    def __init__(
        self,
        port: int,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        if implicit_tls is not None:
            sock = implicit_tls.wrap_socket(sock, server_hostname=TLS_NAME)
        self.sock: socket.socket = sock
        self.timeout = timeout
        self._buf = b""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; unread: {self._buf!r}")
        self._buf += chunk

    def read_line(self) -> bytes:
        """One raw line without its CRLF."""
        while b"\r\n" not in self._buf:
            self._fill()
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def read_exactly(self, size: int) -> bytes:
        while len(self._buf) < size:
            self._fill()
        data, self._buf = self._buf[:size], self._buf[size:]
        return data
