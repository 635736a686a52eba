"""One IMAP session: the state machine and one ``do_<command>`` per command.

The server hands each parsed command to :meth:`Session.handle`. Which states allow a
command is declared on the command class (``Command.states``); the session checks it once.
Handlers check arguments, make their store calls off the event loop (``_io``), and send
responses through the connection. Errors of the store map to response codes in one table
(``_ERROR_CODES``); anything else is a bug: ``NO [SERVERBUG]`` and a traceback in the log.

Invariants:

- one command at a time per connection; responses go out in order;
- no EXPUNGE while answering FETCH, STORE or SEARCH (RFC 3501 §7.4.1);
- changes are published on the event bus only after the store call returned (durable).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import functools
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from rmail import __version__
from rmail.auth import Authenticator
from rmail.config import Config
from rmail.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ReadOnly,
    RmailError,
    TemporaryFailure,
)
from rmail.events import EventBus, FlagsChanged, MessageAdded, MessagesExpunged
from rmail.imap import fetch, mutf7, responses, search, thread
from rmail.imap.parser import commands as c
from rmail.imap.parser.types import (
    FetchAttr,
    SearchAnd,
    SearchKey,
    SearchNot,
    SearchOr,
    SearchText,
    SequenceSet,
)
from rmail.imap.responses import Code
from rmail.imap.selected import BadSequence, ClaimRecent, SelectedView
from rmail.store import Store
from rmail.store.accounts import Account
from rmail.store.headercache import CACHED_FIELDS, HeaderValues
from rmail.store.maildir import INBOX, Folder, FolderInfo, Mailbox
from rmail.store.mailindex import DELETED, SEEN, MessageMeta, MessageRow, mask_to_flags

__all__ = ["Conn", "ImapServices", "Session"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

SEPARATOR: Final = "/"
# Parsed messages kept per session: FETCH of headers then bodies touches the same few.
_PARSE_CACHE: Final = 64
# Cached ENVELOPE/BODYSTRUCTURE renderings and parsed headers shared by all sessions:
# a few KB each, so some tens of MB at most.
_SUMMARY_CACHE: Final = 20_000
# FETCH renders this many messages per trip to a worker thread.
_FETCH_CHUNK: Final = 200
_ERROR_CODES: Final[tuple[tuple[type[RmailError], Code | None], ...]] = (
    (QuotaExceeded, Code.OVERQUOTA),
    (fetch.UnknownTransferEncoding, Code.UNKNOWN_CTE),
    (AlreadyExists, Code.ALREADYEXISTS),
    (NotFound, Code.NONEXISTENT),
    (PermissionDenied, Code.NOPERM),
    (ReadOnly, Code.CANNOT),
    (InvalidInput, Code.CANNOT),
    (TemporaryFailure, Code.UNAVAILABLE),
    (RateLimited, Code.UNAVAILABLE),
)


class Conn(Protocol):
    """What a session needs of its connection (server.py provides it)."""

    peer_ip: str | None
    tls: bool

    async def send(self, data: bytes) -> None: ...

    async def read_line(self) -> bytes: ...

    async def start_tls(self) -> None: ...

    def set_waiting(self, waiting: bool) -> None:
        """The command in progress only waits for the client (IDLE): a shutdown need not
        wait for it to finish."""


@dataclass
class ImapServices:
    """What every session shares: configuration, store, authenticator, events."""

    config: Config
    store: Store
    authenticator: Authenticator
    events: EventBus
    # (address, folder) -> highest UID already shown as \Recent to some session.
    recent_claimed: dict[tuple[str, str], int] = field(default_factory=dict)
    # Sessions claim from worker threads (SelectedView.open, .updates).
    _recent_lock: threading.Lock = field(default_factory=threading.Lock)
    # What several sessions fetch again and again (ENVELOPE, BODYSTRUCTURE, parsed
    # headers), keyed by (folder dir, UIDVALIDITY, UID, item): message files never change.
    summaries: _Lru = field(default_factory=lambda: _Lru(_SUMMARY_CACHE))

    @property
    def append_limit(self) -> int:
        return self.config.smtp.max_message_size

    def recent_claim(self, key: tuple[str, str], *, readonly: bool) -> ClaimRecent:
        """The \\Recent claim function of one session on one folder (RFC 3501 §2.3.2)."""

        def claim(top_uid: int) -> int:
            with self._recent_lock:
                previous = self.recent_claimed.get(key, 0)
                if not readonly and top_uid > previous:
                    self.recent_claimed[key] = top_uid
                return previous

        return claim


class Session:
    """The state of one IMAP connection."""

    def __init__(self, services: ImapServices, conn: Conn) -> None:
        self.services = services
        self.conn = conn
        self.state: c.State = "not_authenticated"
        self.account: Account | None = None
        self.mailbox: Mailbox | None = None
        self.selected: SelectedView | None = None
        self.enabled: set[str] = set()
        self.logged_out = False
        # BAD replies sent so far; the server ends the connection at imap.max_bad_commands.
        self.bad_replies = 0
        # (folder, UIDVALIDITY, UID): a folder deleted and made again reuses names and UIDs.
        self._parsed: OrderedDict[tuple[str, int, int], fetch.ParsedMessage] = OrderedDict()

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled or "QRESYNC" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    @property
    def utf8(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled

    async def _io(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(func, *args)

    async def send(self, data: bytes) -> None:
        await self.conn.send(data)

    def plaintext_allowed(self) -> bool:
        cfg = self.services.config.imap
        return self.conn.tls or (
            cfg.plaintext_auth_on_loopback and self.conn.peer_ip in {"127.0.0.1", "::1"}
        )

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
        if self.state == "not_authenticated":
            if not self.conn.tls:
                caps.append("STARTTLS")
            if self.plaintext_allowed():
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")
            return caps
        return [
            *caps,
            "NAMESPACE",
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "CHILDREN",
            "SPECIAL-USE",
            "CREATE-SPECIAL-USE",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "CONDSTORE",
            "QRESYNC",
            "ESEARCH",
            "SEARCHRES",
            "SORT",
            "ESORT",
            "THREAD=ORDEREDSUBJECT",
            "THREAD=REFERENCES",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "MULTIAPPEND",
            "BINARY",
            "STATUS=SIZE",
            f"APPENDLIMIT={self.services.append_limit}",
        ]

    def _encode_name(self, name: str) -> bytes:
        if self.utf8:
            return responses.string(name, utf8=True)
        return responses.astring(mutf7.encode(name))

    # -- dispatch ----------------------------------------------------------------------------

    async def handle(self, cmd: c.Command) -> None:
        """Run one command and send its responses (the tagged one last)."""
        if self.state not in cmd.states:
            await self.bad(cmd.tag, f"{cmd.name} is not allowed in state {self.state}")
            return
        handler = getattr(self, f"do_{type(cmd).__name__.removesuffix('Command').lower()}")
        try:
            await handler(cmd)
        except BadSequence as exc:
            await self.bad(cmd.tag, str(exc))
        except RmailError as exc:
            code = next((code for kind, code in _ERROR_CODES if isinstance(exc, kind)), None)
            logger.info("command refused cmd=%s reason=%s", cmd.name, exc)
            await self.send(responses.tagged(cmd.tag, "NO", str(exc), code=code))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # The client left in the middle (IDLE, AUTHENTICATE) or the server stops.
            raise
        except Exception:
            logger.exception("command failed cmd=%s", cmd.name)
            await self.send(
                responses.tagged(cmd.tag, "NO", "internal error, try again", code=Code.SERVERBUG)
            )

    async def bad(self, tag: str, text: str) -> None:
        """A tagged BAD (RFC 3501 §7.1.3); each counts toward ``imap.max_bad_commands``."""
        self.bad_replies += 1
        await self.send(responses.tagged(tag, "BAD", text))

    async def _ok(self, tag: str, text: str, code: bytes | Code | None = None) -> None:
        await self.send(responses.tagged(tag, "OK", text, code=code))

    async def pending_updates(self, *, allow_expunge: bool = True) -> None:
        """Send what changed in the selected mailbox since the client last heard."""
        view = self.selected
        if view is None:
            return
        claim = self.services.recent_claim(
            (self._address(), view.folder.name), readonly=view.readonly
        )

        def collect() -> list[bytes]:
            view.folder.refresh()
            return view.updates(
                allow_expunge=allow_expunge,
                condstore=self.condstore,
                qresync=self.qresync,
                claim=claim,
            )

        try:
            lines = await self._io(collect)
        except NotFound:
            # Deleted by another session: sequence numbers mean nothing any more, so the
            # connection ends (as Dovecot does); the client reconnects and lists again.
            self.selected = None
            await self.send(responses.untagged(b"BYE the selected mailbox was deleted"))
            self.logged_out = True
            return
        for line in lines:
            await self.send(line)

    # -- any state ---------------------------------------------------------------------------

    async def do_capability(self, cmd: c.CapabilityCommand) -> None:
        await self.send(
            responses.untagged(("CAPABILITY " + " ".join(self.capabilities())).encode())
        )
        await self._ok(cmd.tag, "CAPABILITY completed")

    async def do_noop(self, cmd: c.NoopCommand) -> None:
        await self.pending_updates()
        await self._ok(cmd.tag, "NOOP completed")

    async def do_logout(self, cmd: c.LogoutCommand) -> None:
        await self.send(responses.untagged(b"BYE rmail logging out"))
        await self._ok(cmd.tag, "LOGOUT completed")
        self.logged_out = True

    async def do_id(self, cmd: c.IdCommand) -> None:
        if cmd.params:
            logger.info("client id %s", " ".join(f"{k}={v}" for k, v in cmd.params[:8]))
        fields = [b'"name"', b'"rmail"', b'"version"', responses.quoted(__version__)]
        await self.send(responses.untagged(b"ID " + responses.imap_list(fields)))
        await self._ok(cmd.tag, "ID completed")

    # -- not authenticated -----------------------------------------------------------------

    async def do_starttls(self, cmd: c.StartTlsCommand) -> None:
        if self.conn.tls:
            await self.bad(cmd.tag, "TLS is already active")
            return
        await self._ok(cmd.tag, "Begin TLS negotiation now")
        await self.conn.start_tls()

    async def do_login(self, cmd: c.LoginCommand) -> None:
        if not self.plaintext_allowed():
            await self.send(
                responses.tagged(
                    cmd.tag, "NO", "use STARTTLS or port 993 first", code=Code.PRIVACYREQUIRED
                )
            )
            return
        await self._login(cmd.tag, cmd.username, cmd.password)

    async def do_authenticate(self, cmd: c.AuthenticateCommand) -> None:
        mechanism = cmd.mechanism.upper()
        if mechanism not in {"PLAIN", "LOGIN"}:
            await self.send(responses.tagged(cmd.tag, "NO", f"unsupported mechanism {mechanism}"))
            return
        if not self.plaintext_allowed():
            await self.send(
                responses.tagged(
                    cmd.tag, "NO", "use STARTTLS or port 993 first", code=Code.PRIVACYREQUIRED
                )
            )
            return
        if mechanism == "PLAIN":
            blob = await self._sasl_step(cmd.initial_response, b"")
            if blob is None:
                await self._sasl_cancelled(cmd.tag)
                return
            parts = blob.split(b"\x00")
            if len(parts) != 3 or (parts[0] and parts[0].lower() != parts[1].lower()):
                await self.bad(cmd.tag, "malformed PLAIN response")
                return
            user, password = (
                parts[1].decode("utf-8", "replace"),
                parts[2].decode("utf-8", "replace"),
            )
        else:
            login = await self._sasl_step(cmd.initial_response, b"Username:")
            password_b = None if login is None else await self._sasl_step(None, b"Password:")
            if login is None or password_b is None:
                await self._sasl_cancelled(cmd.tag)
                return
            user = login.decode("utf-8", "replace")
            password = password_b.decode("utf-8", "replace")
        await self._login(cmd.tag, user, password)

    async def _sasl_step(self, initial: str | None, challenge: bytes) -> bytes | None:
        """One SASL exchange (RFC 3501 §6.2.2): None when the client cancels with ``*``."""
        if initial is not None:
            text = b"" if initial == "=" else initial.encode("ascii", "replace")
        else:
            await self.send(responses.continuation(base64.b64encode(challenge)))
            self.conn.set_waiting(True)
            try:
                # The login timer keeps running while the client owes a SASL response.
                async with asyncio.timeout(self.services.config.imap.preauth_timeout):
                    text = (await self.conn.read_line()).rstrip(b"\r\n")
            except TimeoutError:
                await self.send(responses.untagged(b"BYE autologout; idle for too long"))
                self.logged_out = True
                return None
            finally:
                self.conn.set_waiting(False)
        if text == b"*":
            return None
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None

    async def _sasl_cancelled(self, tag: str) -> None:
        if not self.logged_out:
            await self.bad(tag, "authentication cancelled")

    async def _login(self, tag: str, user: str, password: str) -> None:
        try:
            account = await self.services.authenticator.login(
                user, password, self.conn.peer_ip, "imap"
            )
        except RateLimited:
            await self.send(
                responses.tagged(
                    tag, "NO", "too many failed logins, try again later", code=Code.UNAVAILABLE
                )
            )
            return
        except PermissionDenied:
            await self.send(
                responses.tagged(tag, "NO", "invalid credentials", code=Code.AUTHENTICATIONFAILED)
            )
            return
        self.account = account
        self.mailbox = await self._io(self.services.store.mailbox, account.address)
        self.state = "authenticated"
        caps = ("CAPABILITY " + " ".join(self.capabilities())).encode()
        await self._ok(tag, "logged in", code=caps)

    # -- authenticated -----------------------------------------------------------------------

    def _mb(self) -> Mailbox:
        assert self.mailbox is not None
        return self.mailbox

    def _address(self) -> str:
        assert self.account is not None
        return self.account.address

    async def _folder(self, name: str) -> Folder:
        return await self._io(self._mb().folder, name)

    async def do_select(self, cmd: c.SelectCommand) -> None:
        if self.selected is not None:
            self.selected = None
            self.state = "authenticated"
            await self.send(responses.untagged(b"OK [CLOSED] previous mailbox closed"))
        if cmd.condstore:
            self.enabled.add("CONDSTORE")
        if cmd.qresync is not None and not self.qresync:
            await self.bad(cmd.tag, "QRESYNC is not enabled")
            return
        folder = await self._folder(cmd.mailbox)
        claim = self.services.recent_claim((self._address(), folder.name), readonly=cmd.readonly)
        view = await self._io(SelectedView.open, folder, cmd.readonly, claim)
        out = [
            view.flags_response(),
            responses.untagged(
                b"OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] "
                b"flags permitted"
                if not cmd.readonly
                else b"OK [PERMANENTFLAGS ()] read-only"
            ),
            responses.untagged(b"%d EXISTS" % view.exists),
            responses.untagged(b"%d RECENT" % len(view.recent)),
        ]
        if view.first_unseen is not None:
            out.append(responses.untagged(b"OK [UNSEEN %d] first unseen" % view.first_unseen))
        uidvalidity = folder.index.uidvalidity
        out += [
            responses.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % uidvalidity),
            responses.untagged(b"OK [UIDNEXT %d] predicted next UID" % view.uidnext),
            responses.untagged(b"OK [HIGHESTMODSEQ %d] highest" % view.flags_modseq),
        ]
        if cmd.qresync is not None and cmd.qresync.uidvalidity == uidvalidity:
            params = cmd.qresync
            out += await self._io(view.qresync, params.modseq, params.known_uids)
        for line in out:
            await self.send(line)
        self.selected = view
        self.state = "selected"
        mode = b"READ-ONLY" if cmd.readonly else b"READ-WRITE"
        verb = "EXAMINE" if cmd.readonly else "SELECT"
        await self._ok(cmd.tag, f"{verb} completed", code=mode)

    async def do_create(self, cmd: c.CreateCommand) -> None:
        name = cmd.mailbox.rstrip(SEPARATOR)
        use = cmd.special_use[0] if cmd.special_use else None
        if len(cmd.special_use) > 1:
            raise InvalidInput("one special-use attribute per mailbox")
        await self._io(self._mb().create_folder, name, use)
        await self._ok(cmd.tag, "CREATE completed")

    async def do_delete(self, cmd: c.DeleteCommand) -> None:
        name = cmd.mailbox.rstrip(SEPARATOR)
        infos = await self._io(self._mb().list_folders)
        if any(i.name.startswith(name + SEPARATOR) for i in infos):
            # RFC 3501 §6.3.4: DELETE must not remove inferior names (the store would).
            await self.send(
                responses.tagged(
                    cmd.tag, "NO", "delete the mailboxes inside it first", code=Code.HASCHILDREN
                )
            )
            return
        if self.selected is not None and self.selected.folder.name == name:
            self.selected = None
            self.state = "authenticated"
        await self._io(self._mb().delete_folder, name)
        await self._ok(cmd.tag, "DELETE completed")

    async def do_rename(self, cmd: c.RenameCommand) -> None:
        await self._io(self._mb().rename_folder, cmd.old, cmd.new)
        await self._ok(cmd.tag, "RENAME completed")

    async def do_subscribe(self, cmd: c.SubscribeCommand) -> None:
        await self._io(self._mb().subscribe, cmd.mailbox)
        await self._ok(cmd.tag, "SUBSCRIBE completed")

    async def do_unsubscribe(self, cmd: c.UnsubscribeCommand) -> None:
        await self._io(self._mb().unsubscribe, cmd.mailbox)
        await self._ok(cmd.tag, "UNSUBSCRIBE completed")

    async def do_namespace(self, cmd: c.NamespaceCommand) -> None:
        await self.send(responses.untagged(b'NAMESPACE (("" "/")) NIL NIL'))
        await self._ok(cmd.tag, "NAMESPACE completed")

    async def do_enable(self, cmd: c.EnableCommand) -> None:
        known = {"CONDSTORE", "QRESYNC"}
        new = [cap for cap in cmd.capabilities if cap in known and cap not in self.enabled]
        self.enabled.update(new)
        if "QRESYNC" in new:
            self.enabled.add("CONDSTORE")
        await self.send(responses.untagged(("ENABLED " + " ".join(new)).strip().encode()))
        await self._ok(cmd.tag, "ENABLE completed")

    async def do_list(self, cmd: c.ListCommand) -> None:
        patterns = [cmd.reference + p for p in cmd.patterns]
        if patterns == [cmd.reference] and not cmd.extended:
            # RFC 3501 §6.3.8: an empty pattern asks for the hierarchy delimiter and the root
            # name of the reference ("#news.comp.mail.misc" -> "#news.").
            top, slash, _rest = cmd.reference.partition(SEPARATOR)
            root = self._encode_name(top + slash) if slash else b'""'
            await self.send(responses.untagged(b'LIST (\\Noselect) "/" ' + root))
            await self._ok(cmd.tag, "LIST completed")
            return
        infos = await self._io(self._mb().list_folders)
        subscriptions = await self._io(self._mb().subscriptions)
        for entry in _list_entries(cmd, patterns, infos, subscriptions):
            line = b"LIST " + responses.imap_list(entry.attrs) + b' "/" '
            line += self._encode_name(entry.name)
            if entry.childinfo:
                line += b' ("CHILDINFO" ("SUBSCRIBED"))'
            await self.send(responses.untagged(line))
            if cmd.return_status and entry.exists:
                # RFC 5819 §2: the STATUS response follows its LIST response.
                await self._status_line(entry.name, cmd.return_status)
        await self._ok(cmd.tag, "LIST completed")

    async def do_lsub(self, cmd: c.LsubCommand) -> None:
        existing = {i.name for i in await self._io(self._mb().list_folders)}
        subscriptions = await self._io(self._mb().subscriptions)
        match = _pattern(cmd.reference + cmd.pattern)
        for name, attrs in _lsub_entries(subscriptions, existing, match):
            await self.send(
                responses.untagged(b"LSUB " + attrs + b' "/" ' + self._encode_name(name))
            )
        await self._ok(cmd.tag, "LSUB completed")

    async def do_status(self, cmd: c.StatusCommand) -> None:
        await self._status_line(cmd.mailbox, cmd.items)
        await self._ok(cmd.tag, "STATUS completed")

    async def _status_line(self, name: str, items: Sequence[str]) -> None:
        folder = await self._folder(name)
        index = folder.index
        claimed = self.services.recent_claim((self._address(), folder.name), readonly=True)(0)
        uids = index.uids[:]  # one copy: other threads may change the index meanwhile
        values = {
            "MESSAGES": len(uids),
            "RECENT": len(uids) - bisect.bisect_right(uids, claimed),
            "UIDNEXT": index.uidnext,
            "UIDVALIDITY": index.uidvalidity,
            "UNSEEN": index.unseen,
            "HIGHESTMODSEQ": index.highestmodseq,
            "SIZE": index.total_size,
            "APPENDLIMIT": self.services.append_limit,
        }
        pairs = b" ".join(b"%s %d" % (item.encode(), values[item]) for item in items)
        await self.send(
            responses.untagged(b"STATUS " + self._encode_name(folder.name) + b" (" + pairs + b")")
        )

    async def do_append(self, cmd: c.AppendCommand) -> None:
        try:
            folder = await self._folder(cmd.mailbox)
        except NotFound:
            await self.send(responses.tagged(cmd.tag, "NO", "no such mailbox", code=Code.TRYCREATE))
            return
        if _unknown_system_flag(f for m in cmd.messages for f in m.flags):
            await self.bad(cmd.tag, "unknown system flag")
            return
        for message in cmd.messages:
            if len(message.data) > self.services.append_limit:
                await self.send(
                    responses.tagged(cmd.tag, "NO", "message too big", code=Code.TOOBIG)
                )
                return
            if not message.data:
                await self.send(responses.tagged(cmd.tag, "NO", "empty message"))
                return
        items = [
            (m.data, m.flags, int(m.date.timestamp()) if m.date else None) for m in cmd.messages
        ]
        metas = await self._io(folder.append_many, items)
        for meta in metas:
            self.services.events.publish(MessageAdded(self._address(), folder.name, meta.uid))
        await self.pending_updates()
        uids = responses.sequence_set([m.uid for m in metas])
        code = b"APPENDUID %d %s" % (folder.index.uidvalidity, uids)
        await self._ok(cmd.tag, "APPEND completed", code=code)

    async def do_getquotaroot(self, cmd: c.GetQuotaRootCommand) -> None:
        await self._folder(cmd.mailbox)
        await self.send(responses.untagged(b"QUOTAROOT " + self._encode_name(cmd.mailbox) + b' ""'))
        await self._quota_line()
        await self._ok(cmd.tag, "GETQUOTAROOT completed")

    async def do_getquota(self, cmd: c.GetQuotaCommand) -> None:
        if cmd.root != "":
            raise NotFound('no such quota root; the only one is ""')
        await self._quota_line()
        await self._ok(cmd.tag, "GETQUOTA completed")

    async def _quota_line(self) -> None:
        account = await self._io(self.services.store.accounts.get_user, self._address())
        used = await self._io(self._mb().usage_bytes)
        # RFC 9208: STORAGE is in units of 1024 octets.
        line = b'QUOTA "" (STORAGE %d %d)' % ((used + 1023) // 1024, account.quota_mb * 1024)
        await self.send(responses.untagged(line))

    async def do_idle(self, cmd: c.IdleCommand) -> None:
        """RFC 2177: push changes until the client says DONE."""
        await self.send(responses.continuation(b"idling"))
        subscription = self.services.events.subscribe(self._address())
        reader = asyncio.ensure_future(self.conn.read_line())
        self.conn.set_waiting(True)
        # RFC 2177: clients re-issue IDLE within 29 minutes; past the autologout time the
        # client is gone.
        deadline = time.monotonic() + self.services.config.imap.autologout_seconds
        try:
            await self.pending_updates()
            while not self.logged_out:  # BYE: the selected mailbox was deleted
                if time.monotonic() > deadline:
                    await self.send(responses.untagged(b"BYE autologout; idle for too long"))
                    self.logged_out = True
                    return
                getter = asyncio.ensure_future(subscription.get())
                done, _ = await asyncio.wait(
                    {reader, getter}, timeout=30, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    event = getter.result()
                    if self.selected is not None and event.folder == self.selected.folder.name:
                        await self.pending_updates()
                else:
                    getter.cancel()
                    if not done:
                        # Changes by other processes (rmail deliver) do not reach the bus.
                        await self.pending_updates()
                if reader in done:
                    line = reader.result()
                    if line.rstrip(b"\r\n").upper() != b"DONE":
                        await self.bad(cmd.tag, "expected DONE")
                        return
                    break
            else:
                return
        finally:
            self.conn.set_waiting(False)
            subscription.close()
            if not reader.done():
                reader.cancel()
        await self._ok(cmd.tag, "IDLE terminated")

    # -- selected ---------------------------------------------------------------------------

    def _view(self) -> SelectedView:
        assert self.selected is not None
        return self.selected

    async def do_check(self, cmd: c.CheckCommand) -> None:
        await self.pending_updates()
        await self._ok(cmd.tag, "CHECK completed")

    async def do_unselect(self, cmd: c.UnselectCommand) -> None:
        self.selected = None
        self.state = "authenticated"
        await self._ok(cmd.tag, "UNSELECT completed")

    async def do_close(self, cmd: c.CloseCommand) -> None:
        view = self._view()
        if not view.readonly:
            gone = await self._io(view.folder.expunge, None)
            self._publish_expunge(view, [m.uid for m in gone])
        self.selected = None
        self.state = "authenticated"
        await self._ok(cmd.tag, "CLOSE completed")

    def _publish_expunge(self, view: SelectedView, uids: list[int]) -> None:
        if uids:
            self.services.events.publish(
                MessagesExpunged(self._address(), view.folder.name, tuple(uids))
            )

    async def do_expunge(self, cmd: c.ExpungeCommand) -> None:
        view = self._view()
        if view.readonly:
            raise ReadOnly("mailbox is read-only (EXAMINE)")
        deleted = None
        if cmd.uids is not None:
            # RFC 4315 §2.1: only the messages of the set that are \Deleted.
            wanted = set(view.resolve(cmd.uids, uid=True))
            deleted = await self._io(_deleted_among, view.folder, wanted)
        gone = await self._io(functools.partial(view.folder.expunge, deleted, only_deleted=True))
        uids = [m.uid for m in gone]
        self._publish_expunge(view, uids)
        for line in view.forget(uids, qresync=self.qresync):
            await self.send(line)
        await self.pending_updates()
        code = None
        if self.condstore:
            # RFC 7162: the MODSEQ the client is now up to date with, not the index's latest
            # (a change landing meanwhile is still to be reported).
            code = b"HIGHESTMODSEQ %d" % min(view.flags_modseq, view.expunge_modseq)
        await self._ok(cmd.tag, "EXPUNGE completed", code=code)

    async def do_store(self, cmd: c.StoreCommand) -> None:
        view = self._view()
        if _unknown_system_flag(cmd.flags):
            await self.bad(cmd.tag, "unknown system flag")
            return
        if view.readonly:
            raise ReadOnly("mailbox is read-only (EXAMINE)")
        await self._io(view.folder.refresh)
        uids = view.resolve(cmd.set, uid=cmd.uid)
        results = await self._io(self._store_all, view.folder, uids, cmd)
        modified: list[int] = []
        answers: list[MessageMeta] = []
        for uid, before, after in results:
            if after is None:
                continue
            if cmd.unchanged_since is not None and before.modseq > cmd.unchanged_since:
                modified.append(uid if cmd.uid else (view.seq_of(uid) or 0))
                continue
            changed = after.modseq != before.modseq
            if changed:
                view.mark_own(after)
                self.services.events.publish(
                    FlagsChanged(self._address(), view.folder.name, uid, after.modseq)
                )
            if not cmd.silent or (changed and self.condstore and cmd.unchanged_since is not None):
                answers.append(after)
        # A new keyword is announced (FLAGS, RFC 3501 §7.2.6) before a FETCH that shows it.
        if not {k for meta in answers for k in meta.keywords} <= view.keywords:
            view.keywords |= {k for meta in answers for k in meta.keywords}
            await self.send(view.flags_response())
        for after in answers:
            seq = view.seq_of(after.uid)
            if seq is not None:
                await self.send(view.fetch_flags(seq, after, uid=cmd.uid, modseq=self.condstore))
        await self.pending_updates(allow_expunge=cmd.uid)
        code = None
        if modified:
            code = b"MODIFIED " + responses.sequence_set(sorted(modified))
        await self._ok(cmd.tag, "STORE completed", code=code)

    @staticmethod
    def _store_all(
        folder: Folder, uids: list[int], cmd: c.StoreCommand
    ) -> list[tuple[int, MessageMeta, MessageMeta | None]]:
        # A UID expunged meanwhile is left out; the client hears of it later.
        changes = folder.change_flags_many(
            uids, cmd.op, cmd.flags, unchanged_since=cmd.unchanged_since
        )
        return [(before.uid, before, after) for before, after in changes]

    async def do_copy(self, cmd: c.CopyCommand) -> None:
        await self._copy_or_move(cmd.tag, cmd.set, cmd.mailbox, cmd.uid, move=False)

    async def do_move(self, cmd: c.MoveCommand) -> None:
        await self._copy_or_move(cmd.tag, cmd.set, cmd.mailbox, cmd.uid, move=True)

    async def _copy_or_move(
        self, tag: str, seqset: SequenceSet, mailbox: str, uid: bool, *, move: bool
    ) -> None:
        view = self._view()
        if move and view.readonly:
            raise ReadOnly("mailbox is read-only (EXAMINE)")
        try:
            dest = await self._folder(mailbox)
        except NotFound:
            await self.send(responses.tagged(tag, "NO", "no such mailbox", code=Code.TRYCREATE))
            return
        uids = view.resolve(seqset, uid=uid)
        operation = view.folder.move_to if move else view.folder.copy_to
        pairs = await self._io(operation, uids, dest)
        for _src, new in pairs:
            self.services.events.publish(MessageAdded(self._address(), dest.name, new))
        code = None
        if pairs:
            code = b"COPYUID %d %s %s" % (
                dest.index.uidvalidity,
                responses.sequence_set([s for s, _ in pairs]),
                responses.sequence_set([d for _, d in pairs]),
            )
        if move:
            if code is not None:
                await self.send(responses.untagged(b"OK [" + code + b"] moved"))
            moved = [s for s, _ in pairs]
            self._publish_expunge(view, moved)
            for line in view.forget(moved, qresync=self.qresync):
                await self.send(line)
            await self.pending_updates()
            await self._ok(tag, "MOVE completed")
            return
        await self.pending_updates(allow_expunge=uid)
        await self._ok(tag, "COPY completed", code=code)

    # -- FETCH -------------------------------------------------------------------------------

    async def do_fetch(self, cmd: c.FetchCommand) -> None:
        view = self._view()
        if cmd.vanished and not (cmd.uid and self.qresync and cmd.changed_since is not None):
            await self.bad(cmd.tag, "VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC")
            return
        if cmd.changed_since is not None:
            self.enabled.add("CONDSTORE")

        def entries_of_set() -> tuple[list[int], list[tuple[int, MessageMeta]]]:
            view.folder.refresh()
            uids = view.resolve(cmd.set, uid=cmd.uid)
            return uids, view.metas(uids)

        # One trip to a worker thread for the index work (a short FETCH is mostly trips).
        uids, entries = await self._io(entries_of_set)
        if cmd.vanished and cmd.changed_since is not None:
            # "*" covers every UID handed out, or expunging the newest ones would go unsaid;
            # UIDs still in the view are reported (VANISHED, not EARLIER) below.
            top = view.uidnext - 1
            gone = [
                u
                for u in view.index.vanished_since(cmd.changed_since)
                if cmd.set.contains(u, top) and view.seq_of(u) is None
            ]
            if gone:
                await self.send(
                    responses.untagged(b"VANISHED (EARLIER) " + responses.sequence_set(gone))
                )
        attrs = list(cmd.attrs)
        names = {a.name for a in attrs}
        if cmd.uid and "UID" not in names:
            attrs.insert(0, FetchAttr("UID"))
        # RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ in every response.
        if cmd.changed_since is not None and "MODSEQ" not in names:
            attrs.append(FetchAttr("MODSEQ"))
        sets_seen = not view.readonly and any(
            (a.name == "BODY[]" and not a.peek)
            or a.name in {"RFC822", "RFC822.TEXT"}
            or (a.name == "BINARY[]" and not a.peek)
            for a in attrs
        )
        if cmd.changed_since is not None:
            entries = [(s, m) for s, m in entries if m.modseq > cmd.changed_since]
        missing = len(entries) < len(uids)
        for start in range(0, len(entries), _FETCH_CHUNK):
            chunk = entries[start : start + _FETCH_CHUNK]
            blobs = await self._io(self._render_fetch, view, chunk, attrs, sets_seen)
            for _blob, reported, changed in blobs:
                if reported is not None:
                    # Its flags are in this response; the update pass must not repeat them.
                    view.mark_own(reported)
                if changed:
                    assert reported is not None
                    self.services.events.publish(
                        FlagsChanged(
                            self._address(), view.folder.name, reported.uid, reported.modseq
                        )
                    )
            # One write for the chunk: a write and a drain per message cost more than the
            # rendering of a small one.
            if blobs:
                await self.send(b"".join(blob for blob, _reported, _changed in blobs))
        await self.pending_updates(allow_expunge=cmd.uid)
        if missing and not cmd.uid and cmd.changed_since is None:
            await self._ok(cmd.tag, "some messages were expunged", code=Code.EXPUNGEISSUED)
            return
        await self._ok(cmd.tag, "FETCH completed")

    def _render_fetch(
        self,
        view: SelectedView,
        chunk: list[tuple[int, MessageMeta]],
        attrs: list[FetchAttr],
        sets_seen: bool,
    ) -> list[tuple[bytes, MessageMeta | None, bool]]:
        """FETCH responses for a chunk (runs in a worker thread).

        Each comes with the index entry whose flags it reported (None if it had no FLAGS)
        and whether this FETCH itself changed them (implicit \\Seen).
        """
        out: list[tuple[bytes, MessageMeta | None, bool]] = []
        content_attrs = [a for a in attrs if a.name not in _INDEX_ITEMS]
        cacheable = all(a.name in _CACHED_ITEMS for a in content_attrs)
        headers_only = all(a.name == "ENVELOPE" for a in content_attrs)
        cache = self.services.summaries
        folder_key = (str(view.folder.dir), view.index.uidvalidity)
        for seq, listed in chunk:
            meta = listed
            changed: MessageMeta | None = None
            if sets_seen and not meta.mask & SEEN:
                try:
                    _before, after = view.folder.change_flags(meta.uid, "add", ["\\Seen"])
                except NotFound:
                    continue
                if after.modseq != meta.modseq:
                    meta = changed = after
            parsed = None
            values: HeaderValues | None = None
            cached: dict[str, bytes] = {}
            if content_attrs and cacheable:
                for attr in content_attrs:
                    hit = cache.get((*folder_key, meta.uid, attr.name))
                    if hit is not None:
                        cached[attr.name] = hit
            if content_attrs and len(cached) < len(content_attrs):
                try:
                    if headers_only:  # ENVELOPE alone: the folder's header cache has it
                        values = view.folder.header_values(meta)
                    else:
                        parsed = self._parsed_message(view.folder, meta)
                except NotFound:
                    continue
            items: list[bytes] = []
            flags_sent = False
            for attr in attrs:
                if attr.name == "UID":
                    items.append(b"UID %d" % meta.uid)
                elif attr.name == "FLAGS":
                    items.append(b"FLAGS " + _flags(view, meta))
                    flags_sent = True
                elif attr.name == "INTERNALDATE":
                    items.append(b"INTERNALDATE " + _internaldate(meta.date))
                elif attr.name == "RFC822.SIZE":
                    items.append(b"RFC822.SIZE %d" % meta.size)
                elif attr.name == "MODSEQ":
                    items.append(b"MODSEQ (%d)" % meta.modseq)
                elif attr.name in cached:
                    items.append(cached[attr.name])
                else:
                    if parsed is None:
                        assert values is not None and attr.name == "ENVELOPE"
                        rendered = fetch.render_envelope(values)
                    else:
                        rendered = fetch.render_item(attr, parsed)
                    if attr.name in _CACHED_ITEMS:
                        cache.put((*folder_key, meta.uid, attr.name), rendered)
                    items.append(rendered)
            if changed is not None and not flags_sent:
                items.append(b"FLAGS " + _flags(view, meta))
                flags_sent = True
            blob = responses.fetch_response(seq, items)
            out.append((blob, meta if flags_sent else None, changed is not None))
        return out

    def _parsed_message(self, folder: Folder, meta: MessageMeta) -> fetch.ParsedMessage:
        key = (folder.name, folder.index.uidvalidity, meta.uid)
        parsed = self._parsed.get(key)
        if parsed is not None:
            self._parsed.move_to_end(key)
            return parsed
        parsed = fetch.ParsedMessage.parse(folder.read_message(meta))
        self._parsed[key] = parsed
        while len(self._parsed) > _PARSE_CACHE:
            self._parsed.popitem(last=False)
        return parsed

    def _header_message(
        self, folder: Folder, uid: int, meta: Callable[[], MessageMeta]
    ) -> fetch.ParsedMessage:
        """The message's header block alone, parsed (shared by every session).

        ``meta`` gives the index entry, needed only to read the file when it is not cached.
        """
        key = (str(folder.dir), folder.index.uidvalidity, uid, "header")
        parsed: fetch.ParsedMessage | None = self.services.summaries.get(key)
        if parsed is None:
            parsed = fetch.ParsedMessage.parse(folder.read_header(meta()))
            self.services.summaries.put(key, parsed)
        return parsed

    # -- SEARCH, SORT, THREAD ----------------------------------------------------------------

    def _candidates(self, view: SelectedView, key: SearchKey) -> Iterator[search.SearchableMessage]:
        """Every message of the view as a searchable object (runs in a worker thread).

        A generator: a message that does not match is dropped, with its parsed copy, as
        soon as it has been looked at, so a search holds one message at a time.
        """
        # One consistent snapshot: other threads may change the shared index meanwhile.
        rows = {row[0]: row for row in view.index.rows()}
        headers_only = not search.needs_content(key)
        needles = _required_words(key)
        only_required_words = len(needles) == _text_keys(key)
        cache = self.services.summaries
        folder_key = (str(view.folder.dir), view.index.uidvalidity)
        headers = view.folder.headers
        # Header keys every match passes, on fields the folder's header cache holds: a
        # message whose cached values fail one is dropped before anything is built for it.
        header_tests = [
            (name, test)
            for name, test in search.required_header_tests(key)
            if name in CACHED_FIELDS
        ]
        for seq, uid in enumerate(view.uids, start=1):
            row = rows.get(uid)
            if row is None:
                continue
            if header_tests:
                record = headers.get(row[1])
                if record is not None and not all(
                    test(fetch.decode_values(record.get(name, ()))) for name, test in header_tests
                ):
                    continue
            message = _Searchable(seq, row, view, self, headers_only=headers_only)
            if needles:
                try:
                    raw = view.folder.read_message(message.meta)
                except NotFound:
                    continue
                lowered = raw.lower()
                if not _lacks_a_word(raw, lowered, needles):
                    message.set_parsed(fetch.ParsedMessage.parse(raw))
                    yield message
                    continue
                # The bytes lack a word. Whether the decoded header and body show their
                # ASCII words as stored decides: known from an earlier search, or found by
                # looking for encodings and, only if there are some, by parsing.
                plain_key = (*folder_key, uid, "as_stored")
                plain: tuple[bool, bool] | None = cache.get(plain_key)
                parsed = None
                if plain is None:
                    if _has_encoding(lowered):
                        parsed = fetch.ParsedMessage.parse(raw)
                        plain = (
                            fetch.header_text_as_stored(parsed),
                            fetch.body_text_as_stored(parsed),
                        )
                    else:
                        plain = (True, True)
                    cache.put(plain_key, plain)
                header_plain, body_plain = plain
                if header_plain and body_plain:
                    continue  # its text cannot hold the word either
                message.set_parsed(parsed or fetch.ParsedMessage.parse(raw))
                if (
                    body_plain
                    and only_required_words
                    and not any(word in lowered for word in needles)
                ):
                    # Every TEXT/BODY key is a word these bytes lack, so the body cannot
                    # hold one: no need to decode it to say so.
                    message.body_lacks_words = True
            yield message

    def _run_search(self, view: SelectedView, key: SearchKey) -> list[search.SearchableMessage]:
        messages = self._candidates(view, key)
        star_uid = view.uids[-1] if view.uids else 0
        return search.search(
            key, messages, max_seq=len(view.uids), max_uid=star_uid, saved=view.saved
        )

    def _search_released(
        self, view: SelectedView, key: SearchKey
    ) -> list[search.SearchableMessage]:
        """SEARCH needs only numbers from the result: drop the parsed copies at once."""
        found = self._run_search(view, key)
        _release(found)
        return found

    async def do_search(self, cmd: c.SearchCommand) -> None:
        view = self._view()
        await self._io(view.folder.refresh)
        assert cmd.key is not None
        found = await self._io(self._search_released, view, cmd.key)
        await self._answer_search(cmd, found, "SEARCH")

    async def _answer_search(
        self,
        cmd: c.SearchCommand | c.SortCommand,
        found: Sequence[search.SearchableMessage],
        verb: str,
    ) -> None:
        """The result lines of SEARCH or SORT, pending updates, and the tagged OK."""
        assert cmd.key is not None
        await self._send_search_result(
            cmd.tag,
            numbers=[m.uid if cmd.uid else m.seq for m in found],
            uids=[m.uid for m in found],
            uid=cmd.uid,
            returns=cmd.returns,
            verb=verb,
            found=found,
            with_modseq=search.uses_modseq(cmd.key),
        )
        await self.pending_updates(allow_expunge=cmd.uid)
        await self._ok(cmd.tag, f"{verb} completed")

    async def _send_search_result(
        self,
        tag: str,
        *,
        numbers: list[int],
        uids: list[int],
        uid: bool,
        returns: tuple[str, ...] | None,
        verb: str,
        found: Sequence[search.SearchableMessage],
        with_modseq: bool,
    ) -> None:
        view = self._view()
        modseq = max((m.modseq for m in found), default=0)
        if returns is None:
            line = verb.encode() + b"".join(b" %d" % n for n in numbers)
            # RFC 7162 §3.1.5: only a search that used MODSEQ reports the highest one.
            if with_modseq and found:
                line += b" (MODSEQ %d)" % modseq
            await self.send(responses.untagged(line))
            return
        options = set(returns) or {"ALL"}
        if "SAVE" in options:
            options.discard("SAVE")
            view.saved = set(uids)
            if uids and options and options <= {"MIN", "MAX"}:
                # RFC 5182 §2.4: with only MIN and/or MAX, only those messages are saved.
                pairs = sorted(zip(numbers, uids, strict=True))
                view.saved = {pairs[0][1]} if "MIN" in options else set()
                if "MAX" in options:
                    view.saved.add(pairs[-1][1])
            if not options:
                return
        parts = [b"ESEARCH (TAG " + responses.quoted(tag) + b")"]
        if uid:
            parts.append(b"UID")
        if numbers:
            if "MIN" in options:
                parts.append(b"MIN %d" % min(numbers))
            if "MAX" in options:
                parts.append(b"MAX %d" % max(numbers))
            if "ALL" in options:
                ordered = numbers if verb == "SORT" else sorted(numbers)
                seq = (
                    b",".join(b"%d" % n for n in ordered)
                    if verb == "SORT"
                    else responses.sequence_set(ordered)
                )
                parts.append(b"ALL " + seq)
        if "COUNT" in options:
            parts.append(b"COUNT %d" % len(numbers))
        if with_modseq and found:
            parts.append(b"MODSEQ %d" % modseq)
        await self.send(responses.untagged(b" ".join(parts)))

    async def do_sort(self, cmd: c.SortCommand) -> None:
        view = self._view()
        await self._io(view.folder.refresh)
        assert cmd.key is not None

        def run() -> list[search.SearchableMessage]:
            found = self._run_search(view, cmd.key)  # type: ignore[arg-type]
            ordered = list(thread.sort(found, cmd.keys))
            _release(ordered)
            return ordered

        ordered = await self._io(run)
        await self._answer_search(cmd, ordered, "SORT")

    async def do_thread(self, cmd: c.ThreadCommand) -> None:
        view = self._view()
        await self._io(view.folder.refresh)
        assert cmd.key is not None

        def run() -> bytes:
            found = self._run_search(view, cmd.key)  # type: ignore[arg-type]
            if cmd.algorithm == "ORDEREDSUBJECT":
                threads = thread.thread_orderedsubject(found, uid=cmd.uid)
            else:
                threads = thread.thread_references(found, uid=cmd.uid)
            return thread.render_threads(threads)

        rendered = await self._io(run)
        await self.send(responses.untagged(b"THREAD " + rendered if rendered else b"THREAD"))
        await self.pending_updates(allow_expunge=cmd.uid)
        await self._ok(cmd.tag, "THREAD completed")


_INDEX_ITEMS: Final = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})
# Items that depend on the message alone (not on flags or a section): safe to share.
_CACHED_ITEMS: Final = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE"})


# RFC 3501 §2.3.2: the system flags; another "\\" flag is reserved for future RFCs.
_SYSTEM_FLAGS: Final = frozenset(
    ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")
)


def _unknown_system_flag(flags: Iterable[str]) -> bool:
    return any(f.startswith("\\") and f not in _SYSTEM_FLAGS for f in flags)


def _deleted_among(folder: Folder, wanted: set[int]) -> list[int]:
    """The UIDs of ``wanted`` that are flagged \\Deleted now (worker thread)."""
    folder.refresh()
    return [m.uid for m in folder.index.messages() if m.uid in wanted and m.mask & DELETED]


def _flags(view: SelectedView, meta: MessageMeta) -> bytes:
    return _flags_list(meta.mask, meta.keywords, meta.uid in view.recent)


# A mailbox has few distinct flag combinations: render each once.
@functools.lru_cache(maxsize=1024)
def _flags_list(mask: int, keywords: tuple[str, ...], recent: bool) -> bytes:
    flags = list(mask_to_flags(mask, keywords))
    if recent:
        flags.append("\\Recent")
    return responses.flags_list(flags)


# INTERNALDATE of messages fetched again and again (every FETCH 1:* of every session).
_internaldate: Final = functools.lru_cache(maxsize=_SUMMARY_CACHE)(responses.internaldate)


@dataclass(frozen=True, slots=True)
class _ListEntry:
    """One LIST response: name, attributes, and whether it carries CHILDINFO."""

    name: str
    attrs: tuple[bytes, ...]
    childinfo: bool = False
    exists: bool = True


def _ancestors(name: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:depth]) for depth in range(1, len(parts))]


def _list_entries(
    cmd: c.ListCommand,
    patterns: Sequence[str],
    infos: Sequence[FolderInfo],
    subscriptions: Sequence[str],
) -> list[_ListEntry]:
    """What LIST answers (RFC 3501 §6.3.8, RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE)."""
    matchers = [_pattern(p) for p in patterns]

    def match(name: str) -> bool:
        return any(m(name) for m in matchers)

    subscribed_only = "SUBSCRIBED" in cmd.select_options
    special_only = "SPECIAL-USE" in cmd.select_options
    want_subscribed = subscribed_only or "SUBSCRIBED" in cmd.return_options
    want_special = not cmd.extended or special_only or "SPECIAL-USE" in cmd.return_options
    subscribed = set(subscriptions)
    # RFC 5258 §3.5: with RECURSIVEMATCH, a name with a subscribed descendant is listed
    # (whether or not it is subscribed itself) with CHILDINFO ("SUBSCRIBED").
    with_child: set[str] = set()
    if subscribed_only and "RECURSIVEMATCH" in cmd.select_options:
        with_child = {parent for name in subscribed for parent in _ancestors(name)}
    out: list[_ListEntry] = []
    for info in infos:
        childinfo = info.name in with_child
        if not match(info.name) or (subscribed_only and not info.subscribed and not childinfo):
            continue
        if special_only and not info.special_use:
            continue
        attrs = [b"\\HasChildren" if info.has_children else b"\\HasNoChildren"]
        if want_subscribed and info.subscribed:
            attrs.append(b"\\Subscribed")
        if want_special and info.special_use:
            attrs.append(info.special_use.encode())
        out.append(_ListEntry(info.name, tuple(attrs), childinfo))
    if subscribed_only and not special_only:
        # Subscriptions to folders that do not exist still list (RFC 5258 §3).
        existing = {i.name for i in infos}
        for name in sorted((subscribed | with_child) - existing):
            if match(name):
                attrs = [b"\\Subscribed"] if name in subscribed else []
                out.append(
                    _ListEntry(name, (*attrs, b"\\NonExistent"), name in with_child, exists=False)
                )
    return out


def _lsub_entries(
    subscriptions: Sequence[str], existing: set[str], match: Callable[[str], bool]
) -> list[tuple[str, bytes]]:
    """(name, attributes) of each LSUB response (RFC 3501 §6.3.9)."""
    subscribed = set(subscriptions)
    out = [(n, b"()" if n in existing else b"(\\Noselect)") for n in subscriptions if match(n)]
    # "foo/bar" subscribed, "foo" not: LSUB "" "%" must answer "foo", flagged \Noselect.
    parents = {
        parent
        for name in subscribed
        if not match(name)
        for parent in _ancestors(name)
        if parent not in subscribed and match(parent)
    }
    out += [(p, b"(\\Noselect)") for p in sorted(parents)]
    return out


def _pattern(pattern: str) -> Callable[[str], bool]:
    """A LIST pattern (RFC 3501 §6.3.8): ``*`` matches anything, ``%`` anything but ``/``.

    Names match case-sensitively, except INBOX, which is case-insensitive.
    """
    if pattern[:5].upper() == INBOX:
        pattern = INBOX + pattern[5:]
    regex = "".join(
        ".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch) for ch in pattern
    )
    compiled = re.compile(f"^{regex}$", re.DOTALL)
    return lambda name: compiled.match(name) is not None


class _Searchable:
    """A message as SEARCH/SORT/THREAD see it: index fields now, content on demand.

    Built from an index row for every message of a search, so it stays light: the full
    index entry (``meta``) and the flag names are made only when asked for.
    """

    __slots__ = (
        "_headers_only",
        "_meta",
        "_parsed",
        "_row",
        "_session",
        "_view",
        "body_lacks_words",
        "internal_date",
        "modseq",
        "recent",
        "seq",
        "size",
        "uid",
    )

    def __init__(
        self,
        seq: int,
        row: MessageRow,
        view: SelectedView,
        session: Session,
        *,
        headers_only: bool = False,
    ) -> None:
        self.seq = seq
        self._row = row
        self.uid = row[0]
        self.size = row[4]
        self.internal_date = row[5]
        self.modseq = row[6]
        self.recent = self.uid in view.recent
        self._view = view
        self._session = session
        self._headers_only = headers_only
        self._meta: MessageMeta | None = None
        self._parsed: fetch.ParsedMessage | None = None
        # Set by the search when every TEXT/BODY key of it is a word the body cannot hold
        # (see Session._candidates): body_text() is then empty, which answers them alike.
        self.body_lacks_words = False

    @property
    def meta(self) -> MessageMeta:
        if self._meta is None:
            self._meta = MessageMeta(*self._row)
        return self._meta

    @property
    def flags(self) -> tuple[str, ...]:
        return mask_to_flags(self._row[2], self._row[3])

    def _msg(self) -> fetch.ParsedMessage:
        if self._parsed is None:
            if self._headers_only:
                self._parsed = self._session._header_message(
                    self._view.folder, self.uid, lambda: self.meta
                )
            else:
                self._parsed = self._session._parsed_message(self._view.folder, self.meta)
        return self._parsed

    def set_parsed(self, parsed: fetch.ParsedMessage) -> None:
        self._parsed = parsed

    def release(self) -> None:
        """Drop the parsed copy (the result list outlives the search)."""
        self._parsed = None

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        if wanted in CACHED_FIELDS:  # from the folder's header cache: no file read or parse
            folder = self._view.folder
            values = folder.headers.get(self._row[1])
            if values is None:
                values = folder.header_values(self.meta)
            return fetch.decode_values(values.get(wanted, ()))
        return fetch.header_value(self._msg(), name)

    def header_text(self) -> str:
        return fetch.header_text(self._msg())

    def body_text(self) -> str:
        if self.body_lacks_words:
            return ""
        return fetch.text_content(self._msg())

    def sent_date(self) -> Any:
        value = fetch.sent_date(self._msg())
        return value.date() if value is not None else None

    def __getattr__(self, name: str) -> Any:
        # Further accessors SORT/THREAD use (message_id, references, ...) come from fetch.
        func = getattr(fetch, name, None)
        if func is None:
            raise AttributeError(name)
        return lambda *args: func(self._msg(), *args)


def _required_words(key: SearchKey) -> list[bytes]:
    """ASCII words every match must contain (TEXT/BODY keys ANDed at the top), lower case.

    Words with white space are left out: a folded header line could split them.
    """
    if isinstance(key, SearchText):
        value = key.value
        if value.isascii() and value and not any(ch.isspace() for ch in value):
            return [value.lower().encode("ascii")]
        return []
    if isinstance(key, SearchAnd):
        return [word for sub in key.keys for word in _required_words(sub)]
    return []


# Markers of text that may read differently once decoded: transfer encodings, RFC 2047
# encoded words, charsets that are not ASCII-compatible ...
_ENCODED: Final = (
    b"base64",
    b"quoted-printable",
    b"=?",
    b"utf-16",
    b"utf-32",
    b"utf-7",
)
# ... and the few characters whose case folding is ASCII (sharp s -> ss, long s -> s,
# Kelvin sign -> k, dotted I, the ff..st ligatures), in UTF-8 and, for sharp s, Latin-1.
_FOLDS_TO_ASCII: Final = (
    b"\xc3\x9f",
    b"\xc5\xbf",
    b"\xe2\x84\xaa",
    b"\xc4\xb0",
    b"\xef\xac",
    b"\xdf",
)


def _text_keys(key: SearchKey) -> int:
    """How many TEXT/BODY keys ``key`` holds, at any depth."""
    if isinstance(key, SearchText):
        return 1
    if isinstance(key, SearchAnd):
        return sum(_text_keys(sub) for sub in key.keys)
    if isinstance(key, SearchOr):
        return _text_keys(key.left) + _text_keys(key.right)
    if isinstance(key, SearchNot):
        return _text_keys(key.key)
    return 0


def _lacks_a_word(raw: bytes, lowered: bytes, words: Sequence[bytes]) -> bool:
    """Whether the bytes of a message (and ``lowered``, the same in ASCII lower case) lack
    one of the ASCII ``words`` and hold no non-ASCII character that case-folds to ASCII.

    Only then can its bytes tell that its decoded text lacks the word (SEARCH shortcut).
    """
    for word in words:
        if word not in lowered:
            break
    else:
        return False
    if not raw.isascii():
        for marker in _FOLDS_TO_ASCII:
            if marker in lowered:
                return False
    return True


def _has_encoding(lowered: bytes) -> bool:
    """Whether a message's bytes (in ASCII lower case) hold an encoding marker: without
    one, its decoded text shows its ASCII words as they are stored."""
    return any(marker in lowered for marker in _ENCODED)


def _release(messages: Iterable[Any]) -> None:
    for message in messages:
        if isinstance(message, _Searchable):
            message.release()


class _Lru:
    """A small thread-safe LRU map (worker threads of several sessions share it)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        # No lock: each OrderedDict call is atomic under the GIL, and a key evicted by
        # another thread between the two calls is simply not refreshed.
        value = self._data.get(key)
        if value is not None:
            # Not contextlib.suppress: this runs for every message of a FETCH or SEARCH.
            try:  # noqa: SIM105
                self._data.move_to_end(key)
            except KeyError:
                pass
        return value

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
