"""IMAP listeners and the per-connection loop: framing, literals, STARTTLS, timeouts.

The loop reads one complete command (its line plus every literal, inline, as on the wire),
hands it to the pure parser, and the parsed value to the session. Limits, each a config
key: line length (``imap.max_line_length``), literal size (``smtp.max_message_size`` for
APPEND, refused with ``NO [TOOBIG]`` before a byte of it is read; ``imap.max_literal``
otherwise), bad commands before BYE (``imap.max_bad_commands``), and idle time
(``imap.preauth_timeout`` before login, ``imap.autologout_seconds`` after).

Transcripts are logged at TRACE with the connection id; the log formatter masks LOGIN and
AUTHENTICATE arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from dataclasses import dataclass, field
from typing import Final

from rmail import log
from rmail.imap import responses
from rmail.imap.parser.errors import BadCharset, ParseError
from rmail.imap.parser.parse import command_name, literal_at_end, parse_command
from rmail.imap.responses import Code
from rmail.imap.state import ImapServices, Session
from rmail.metrics import IMAP_CONNECTIONS, IMAP_CONNECTIONS_TOTAL

__all__ = ["ImapListeners"]

logger = logging.getLogger(__name__)

_ids = itertools.count(1)
# A MULTIAPPEND may carry several messages; past this many times the APPEND limit the
# command is refused whole.
_MAX_COMMAND_FACTOR: Final = 4
# Seconds for connections to notice their closed sockets at shutdown before being cancelled.
_STOP_DRAIN: Final = 2.0


class _TooBig(Exception):
    """A literal over its limit; the command is refused before its bytes are read."""


class _LineTooLong(Exception):
    pass


class ImapConnection:
    """One client: the streams, TLS state, and the :class:`~rmail.imap.state.Conn` interface."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        services: ImapServices,
        ssl_context: ssl.SSLContext,
        *,
        tls: bool,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.services = services
        self.ssl_context = ssl_context
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.peer_ip: str | None = peer[0] if isinstance(peer, tuple) else None
        self.id = f"imap-{next(_ids)}"
        # Set while no command is running; shutdown waits for it.
        self.idle = asyncio.Event()
        self.idle.set()

    async def send(self, data: bytes) -> None:
        if logger.isEnabledFor(log.TRACE):
            logger.log(log.TRACE, "S: %s", data[:2000].decode("utf-8", "replace").rstrip())
        self.writer.write(data)
        await self.writer.drain()

    async def read_line(self) -> bytes:
        """One line from the client (AUTHENTICATE responses, IDLE's DONE).

        An overlong line comes back empty: the caller answers it as a wrong reply.
        """
        try:
            line = await self._readline()
        except _LineTooLong:
            return b"\r\n"
        if logger.isEnabledFor(log.TRACE):
            logger.log(log.TRACE, "C: %s", line.decode("utf-8", "replace").rstrip())
        return line

    async def _readline(self) -> bytes:
        try:
            line = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            # Skip the rest of the overlong line, then report it.
            await self.reader.readexactly(exc.consumed)
            while True:
                try:
                    await self.reader.readuntil(b"\n")
                    break
                except asyncio.LimitOverrunError as more:
                    await self.reader.readexactly(more.consumed)
            raise _LineTooLong from None
        return line

    def set_waiting(self, waiting: bool) -> None:
        if waiting:
            self.idle.set()
        else:
            self.idle.clear()

    async def start_tls(self) -> None:
        # Whatever the client pipelined after STARTTLS came in clear text and must not be
        # taken as said over TLS (command injection as in CVE-2011-0411). The
        # StreamReader has no public way to drop buffered data.
        pending: bytearray | None = getattr(self.reader, "_buffer", None)
        if pending:
            logger.warning("discarding %d bytes sent in clear after STARTTLS", len(pending))
            pending.clear()
        await self.writer.start_tls(self.ssl_context)
        self.tls = True

    async def read_command(self, session: Session) -> bytes:
        """One complete command with its literals inline.

        Raises:
            _TooBig: a literal is over its limit (a synchronizing one was not read).
            _LineTooLong: a line is longer than ``imap.max_line_length``.
        """
        cfg = self.services.config.imap
        buffer = bytearray()
        while True:
            line = await self._readline()
            buffer += line
            found = literal_at_end(line.rstrip(b"\r\n"))
            if found is None:
                break
            size, non_sync, _binary = found
            _tag, name = command_name(bytes(buffer))
            limit = self.services.append_limit if name == "APPEND" else cfg.max_literal
            if size > limit or len(buffer) + size > _MAX_COMMAND_FACTOR * max(
                self.services.append_limit, cfg.max_literal
            ):
                if non_sync:
                    # RFC 7888 §4: the bytes are on their way and cannot be refused one by
                    # one; ending the connection is the only safe answer.
                    await self.send(
                        responses.untagged(b"BYE [TOOBIG] literal larger than %d bytes" % limit)
                    )
                    raise ConnectionAbortedError("literal too big")
                raise _TooBig(bytes(buffer))
            if not non_sync:
                await self.send(responses.continuation(b"Ready for literal data"))
            buffer += await self.reader.readexactly(size)
        if logger.isEnabledFor(log.TRACE):
            logger.log(log.TRACE, "C: %s", bytes(buffer[:2000]).decode("utf-8", "replace").rstrip())
        return bytes(buffer)

    async def run(self) -> None:
        """Serve the client until LOGOUT, a limit, a timeout or a disconnect."""
        cfg = self.services.config.imap
        session = Session(self.services, self)
        greeting = b"OK [CAPABILITY " + " ".join(session.capabilities()).encode()
        await self.send(responses.untagged(greeting + b"] rmail IMAP4rev1 ready"))
        loop = asyncio.get_running_loop()
        # imap.preauth_timeout bounds the whole time to log in, not each pause: a client
        # sending NOOPs cannot stay unauthenticated.
        login_deadline = loop.time() + cfg.preauth_timeout
        while not session.logged_out:
            if session.bad_replies >= cfg.max_bad_commands:
                logger.warning("too many bad commands peer=%s", self.peer_ip)
                await self.send(responses.untagged(b"BYE too many bad commands"))
                return
            deadline = (
                login_deadline
                if session.state == "not_authenticated"
                else loop.time() + cfg.autologout_seconds
            )
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self.read_command(session)
            except TimeoutError:
                await self.send(responses.untagged(b"BYE autologout; idle for too long"))
                return
            except _LineTooLong:
                session.bad_replies += 1
                await self.send(responses.untagged(b"BAD line too long"))
                continue
            except _TooBig as exc:
                tag, _name = command_name(exc.args[0])
                await self.send(
                    responses.tagged(tag or "*", "NO", "literal too big", code=Code.TOOBIG)
                )
                continue
            try:
                command = parse_command(data, utf8=session.utf8)
            except BadCharset as exc:
                await self.send(
                    responses.tagged(
                        exc.tag or "*",
                        "NO",
                        "unsupported charset",
                        code=b"BADCHARSET (UTF-8 US-ASCII)",
                    )
                )
                continue
            except ParseError as exc:
                logger.info("bad command reason=%s", exc)
                if exc.tag is None:
                    session.bad_replies += 1
                    await self.send(responses.untagged(b"BAD " + str(exc).encode()))
                else:
                    await session.bad(exc.tag, str(exc))
                continue
            self.idle.clear()
            try:
                await session.handle(command)
            finally:
                self.idle.set()


@dataclass
class ImapListeners:
    """The IMAP (STARTTLS) and IMAPS listeners."""

    services: ImapServices
    ssl_context: ssl.SSLContext
    servers: dict[str, asyncio.Server] = field(default_factory=dict)
    active: set[ImapConnection] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _handler(self, tls: bool) -> object:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = ImapConnection(reader, writer, self.services, self.ssl_context, tls=tls)
            token = log.conn_id.set(conn.id)
            task = asyncio.current_task()
            try:
                if len(self.active) >= self.services.config.imap.max_connections:
                    logger.warning("connection limit reached peer=%s", conn.peer_ip)
                    writer.write(responses.untagged(b"BYE [UNAVAILABLE] too many connections"))
                    return
                self.active.add(conn)
                IMAP_CONNECTIONS.set(len(self.active))
                IMAP_CONNECTIONS_TOTAL.labels("imaps" if tls else "imap").inc()
                if task is not None:
                    self.tasks.add(task)
                logger.debug("connected peer=%s tls=%s", conn.peer_ip, tls)
                await conn.run()
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                logger.debug("connection closed by peer")
            except asyncio.CancelledError:
                raise
            except Exception:  # the one broad handler of a connection
                logger.exception("connection failed")
            finally:
                self.active.discard(conn)
                IMAP_CONNECTIONS.set(len(self.active))
                if task is not None:
                    self.tasks.discard(task)
                with contextlib.suppress(Exception):
                    writer.close()
                log.conn_id.reset(token)

        return handle

    async def start(self) -> dict[str, int]:
        cfg = self.services.config.imap
        ports: dict[str, int] = {}
        # The stream limit is the longest line; literals are read by count, not by line.
        for name, port, context in (
            ("imap", cfg.port, None),
            ("imaps", cfg.imaps_port, self.ssl_context),
        ):
            server = await asyncio.start_server(
                self._handler(context is not None),  # type: ignore[arg-type]
                cfg.host,
                port,
                ssl=context,
                limit=cfg.max_line_length,
                reuse_address=True,
            )
            self.servers[name] = server
            ports[name] = int(server.sockets[0].getsockname()[1])
        return ports

    async def stop(self, grace: float) -> None:
        """Stop accepting; let commands in progress finish, then say BYE to everyone."""
        for server in self.servers.values():
            server.close()
        waits = [asyncio.ensure_future(c.idle.wait()) for c in self.active]
        if waits:
            await asyncio.wait(waits, timeout=grace)
            for wait in waits:
                wait.cancel()
        for conn in list(self.active):
            with contextlib.suppress(Exception):
                conn.writer.write(responses.untagged(b"BYE server shutting down"))
                conn.writer.close()
        # A closed transport ends each loop by itself (EOF); cancelling a handler task instead
        # makes Python 3.11's start_server callback log a spurious CancelledError traceback.
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=_STOP_DRAIN)
        for task in list(self.tasks):
            task.cancel()
        for server in self.servers.values():
            await server.wait_closed()
