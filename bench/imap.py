"""Benchmark of the IMAP server: rmail against a private Dovecot, same workload, one run.

Run from the repository root::

    .venv/bin/python bench/imap.py                   # 5,000 messages, 1,000 idle connections
    .venv/bin/python bench/imap.py --quick           # 1,000 messages, 200 idle connections
    .venv/bin/python bench/imap.py --messages 2000 --connections 500 --json /tmp/imap.json
    .venv/bin/python bench/imap.py --only rmail --py-spy /tmp/spy.txt   # profile rmail

Servers (each in its own processes, on 127.0.0.1, started and stopped by this script):

1. ``rmail``: ``python -m rmail serve`` with a fresh config in a temp dir (every port 0,
   ``imap.plaintext_auth_on_loopback`` true, ``imap.max_connections`` 2000, log level
   WARNING, ``store.fsync`` at its default, true); ``alice@example.test`` is created with
   ``Store.create_user`` before the start and the IMAP port is read from ``run/ports.json``.
2. ``dovecot``: ``/usr/sbin/dovecot -F`` with its own config file, ``base_dir``,
   ``state_dir`` and ``instance_name`` (the system's Dovecot is not touched), ``ssl = no``,
   plaintext auth allowed, a static passdb/userdb, maildir under the temp dir, a free port,
   ``mail_fsync`` at its default (optimized), process and connection limits raised for the
   idle-connection test. Run as root, mail processes run as ``nobody`` (Dovecot refuses
   root mail access); run as another user, everything runs as that user.

Workload, the same messages and the same commands for both (``--seed`` fixes the messages):

- APPEND ``--messages`` realistic messages to INBOX from one client, one APPEND each, with a
  synchronizing literal (as imaplib and most clients send it), flags and INTERNALDATE:
  plain text, multipart/alternative (text + HTML), multipart/mixed with 1-2 attachments of
  1-50 KB, varied senders, recipients, subjects (some RFC 2047-encoded), threads;
- then, on fresh logged-in connections: SELECT INBOX; FETCH 1:* (UID FLAGS RFC822.SIZE
  INTERNALDATE ENVELOPE); UID FETCH of 100 random full bodies (BODY.PEEK[]) in one command;
  UID SEARCH FROM <one sender's name>; UID SEARCH TEXT <a word in ~3 % of bodies>;
  UID STORE of 100 unseen messages +FLAGS (\\Seen) (not .SILENT), undone afterwards by an
  untimed -FLAGS.SILENT so that every run changes the same messages (with too few unseen
  messages for 8 x 100, as with ``--quick``, clients share some);
- once with 1 client, then with ``--clients`` (8) concurrent clients on the same mailbox,
  each doing the same sequence; before each step the clients wait for each other, and the
  figure is the wall time from the common start to the last client's tagged OK; each step
  runs ``--repeat`` (3) times and the median is shown;
- memory: VmRSS (from /proc/PID/status) of the server with ``--connections`` (1,000)
  connections open and logged in, idle (nothing selected), once on the fresh server and
  once after the workload; for Dovecot the sum over the master and all its children (one
  ``imap`` process per connection), beside the sum of PSS (/proc/PID/smaps_rollup), which
  does not count shared pages once per process.

Every answer is checked (tagged OK, message count, RFC822.SIZE of every message equal to
the appended size, bytes of the fetched bodies, SEARCH hit counts equal to what the
generator put in, STORE answers): a mismatch is printed under the table. The client is raw
asyncio streams in this process; its CPU time is reported beside each figure, as it shares
the machine with the server.

Output: Markdown on stdout (machine, table with ``rmail s | dovecot s | ratio``, targets:
every operation within 3x Dovecot, 1,000 idle connections under 150 MB RSS for rmail);
``--json PATH`` writes the figures as JSON too. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import os
import platform
import pwd
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from common import (
    DOMAIN,
    HOST,
    PASSWORD,
    USER,
    attach_py_spy,
    cpu_model,
    cpu_of,
    create_user,
    filesystem_of,
    free_port,
    load_average,
    log_problems,
    log_tail,
    machine_busy,
    process_tree,
    rmail_commit,
    rmail_config,
    say,
    scratch_dir,
    spawn_rmail,
    status_kb,
    stop_process,
    stop_py_spy,
    wait_ports,
    write_config,
    write_json,
)

DOVECOT: Final = Path("/usr/sbin/dovecot")
TARGET_RATIO: Final = 3.0
TARGET_RSS_MB: Final = 150.0
TARGET_CONNECTIONS: Final = 1000
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 20.0
BODIES: Final = 100
STORES: Final = 100
LOGIN_CONCURRENCY: Final = 50
READ_CHUNK: Final = 1 << 18

# -- messages -------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES: Final = _words(
    "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert "
    "Sybil Trent Victor Walter Xavier Yvonne Zoe Amir Bianca Chen Dmitri Elena Farah Gustav "
    "Hana Ines Jonas Kenji Lena Mateo Nadia Oskar Priya"
)
LAST_NAMES: Final = _words(
    "Smith Jones Garcia Miller Davis Martin Bernard Dubois Moreau Laurent Rossi Russo Ferrari "
    "Novak Horvat Kowalski Nowak Tanaka Suzuki Kim Park Nguyen Silva Santos Costa Jensen "
    "Hansen Larsen Berg Lindqvist Quispe"
)
SENDER_DOMAINS: Final = (
    "example.org",
    "mail.example.net",
    "lists.example.com",
    "corp.example",
    "uni.example.edu",
)
WORDS: Final = _words(
    "the of and to in is that for it as with was on be by this are or at from have an they "
    "which one you were all we her she there would their will when who him been has more if "
    "no out do so can what up said about other into than its time only could new them man "
    "some these then two first may any like now my such make over our even most me state "
    "after also made many did must before back see through way where get much go well your "
    "know should down work year because come people just say each those take day good how "
    "long own too little use under very great still men here life both between old under "
    "report meeting budget invoice release server deploy schedule review draft contract "
    "quarter planning roadmap feedback customer support ticket update status agenda minutes "
    "holiday travel expense receipt approval migration backup network storage latency"
)
SUBJECTS: Final = (
    "Quarterly report",
    "Meeting notes",
    "Invoice {n}",
    "Re: project status",
    "Your order #{n} has shipped",
    "Weekly digest",
    "Build failed on main",
    "Lunch on Friday?",
    "Contract draft v{n}",
    "Holiday schedule",
    "Password reset request",
    "Server migration plan",
    "Photos from the trip",
    "Budget approval needed",
    "Release {n} notes",
)
ENCODED_SUBJECTS: Final = (
    "=?utf-8?q?R=C3=A9union_de_l=27=C3=A9quipe?=",
    "=?utf-8?b?w5xiZXJwcsO8ZnVuZyBkZXIgUmVjaG51bmc=?=",
    "=?iso-8859-1?q?Caf=E9_cr=E8me?=",
)
# FROM finds every message from one person; TEXT a word put in about 3 % of the bodies.
SEARCH_FROM: Final = "Quispe"
SEARCH_TEXT: Final = "xylophone"
MONTHS: Final = _words("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec")


@dataclass(frozen=True, slots=True)
class Message:
    data: bytes
    date: datetime
    flags: tuple[str, ...]
    from_hit: bool
    text_hit: bool

    @property
    def internaldate(self) -> str:
        """RFC 3501 date-time, as APPEND takes it."""
        d = self.date
        return f"{d.day:02d}-{MONTHS[d.month - 1]}-{d.year} {d:%H:%M:%S} +0000"


def _paragraph(rng: random.Random, words: int) -> str:
    out: list[str] = []
    line = ""
    for i in range(words):
        word = rng.choice(WORDS)
        if i == 0:
            word = word.capitalize()
        if len(line) + len(word) + 1 > 72:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line + ".")
    return "\r\n".join(out)


def _body_text(rng: random.Random, hit: bool) -> str:
    paragraphs = [_paragraph(rng, rng.randint(15, 90)) for _ in range(rng.randint(1, 6))]
    if hit:
        i = rng.randrange(len(paragraphs))
        paragraphs[i] += f" The {SEARCH_TEXT} arrived."
    if rng.random() < 0.4:
        paragraphs.append("-- \r\nSent from a benchmark\r\nhttps://example.org/")
    return "\r\n\r\n".join(paragraphs) + "\r\n"


def _address(first: str, last: str, domain: str) -> str:
    return f"{first} {last} <{first.lower()}.{last.lower()}@{domain}>"


def _base64_lines(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + "\r\n"


def make_messages(count: int, seed: int) -> list[Message]:
    """``count`` varied, deterministic RFC 5322 messages with CRLF line endings."""
    rng = random.Random(seed)
    people = [(rng.choice(FIRST_NAMES), last, rng.choice(SENDER_DOMAINS)) for last in LAST_NAMES]
    start = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    out: list[Message] = []
    thread_ids: list[str] = []
    for n in range(count):
        date = start + timedelta(minutes=37 * n + rng.randint(0, 30))
        first, last, domain = rng.choice(people)
        sender = _address(first, last, domain)
        to = [USER] + [
            _address(rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), DOMAIN)
            for _ in range(rng.choice((0, 0, 0, 1, 2)))
        ]
        subject = rng.choice(SUBJECTS).format(n=rng.randint(100, 99999))
        if rng.random() < 0.05:
            subject = rng.choice(ENCODED_SUBJECTS)
        msgid = f"<{seed}.{n}.{rng.getrandbits(32):08x}@{domain}>"
        head = [
            f"Return-Path: <{first.lower()}.{last.lower()}@{domain}>",
            f"Received: from mx.{domain} (mx.{domain} [192.0.2.{n % 250 + 1}])\r\n"
            f"\tby mail.{DOMAIN} with ESMTPS id {rng.getrandbits(48):012x}\r\n"
            f"\tfor <{USER}>; {date:%a, %d %b %Y %H:%M:%S} +0000",
            f"From: {sender}",
            f"To: {', '.join(to)}",
        ]
        if rng.random() < 0.2:
            head.append(f"Cc: {_address(rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), domain)}")
        head += [
            f"Subject: {subject}",
            f"Date: {date:%a, %d %b %Y %H:%M:%S} +0000",
            f"Message-ID: {msgid}",
        ]
        if thread_ids and rng.random() < 0.3:
            parent = rng.choice(thread_ids[-50:])
            head += [f"In-Reply-To: {parent}", f"References: {parent}"]
        thread_ids.append(msgid)
        head += ["MIME-Version: 1.0", f"X-Mailer: bench-imap {rng.randint(1, 9)}.0"]
        text_hit = rng.random() < 0.03
        text = _body_text(rng, text_hit)
        kind = rng.random()
        if kind < 0.55:
            head.append("Content-Type: text/plain; charset=utf-8")
            head.append("Content-Transfer-Encoding: 7bit")
            body = text
        else:
            boundary = f"=_bench_{n}_{rng.getrandbits(32):08x}"
            html = (
                "<html><body><p>"
                + text.replace("\r\n\r\n", "</p>\r\n<p>")
                + "</p></body></html>\r\n"
            )
            alternative = (
                "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 7bit\r\n\r\n"
                f"{text}\r\n--{boundary}\r\n"
                "Content-Type: text/html; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 7bit\r\n\r\n"
                f"{html}"
            )
            if kind < 0.8:
                head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
                body = (
                    "This is a multi-part message in MIME format.\r\n\r\n"
                    f"--{boundary}\r\n{alternative}\r\n--{boundary}--\r\n"
                )
            else:
                outer = f"=_mixed_{n}_{rng.getrandbits(32):08x}"
                head.append(f'Content-Type: multipart/mixed; boundary="{outer}"')
                parts = [
                    f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
                    f"--{boundary}\r\n{alternative}\r\n--{boundary}--\r\n"
                ]
                for k in range(rng.choice((1, 1, 1, 2))):
                    size = rng.randint(1024, 50 * 1024)
                    ext, ctype = rng.choice(
                        (
                            ("pdf", "application/pdf"),
                            ("png", "image/png"),
                            ("zip", "application/zip"),
                        )
                    )
                    name = f"document-{n}-{k}.{ext}"
                    parts.append(
                        f'Content-Type: {ctype}; name="{name}"\r\n'
                        f'Content-Disposition: attachment; filename="{name}"\r\n'
                        "Content-Transfer-Encoding: base64\r\n\r\n"
                        + _base64_lines(rng.randbytes(size))
                    )
                body = "".join(f"--{outer}\r\n{part}" for part in parts) + f"--{outer}--\r\n"
        data = ("\r\n".join(head) + "\r\n\r\n" + body).encode()
        flags: list[str] = []
        if rng.random() < 0.4:
            flags.append("\\Seen")
        if rng.random() < 0.05:
            flags.append("\\Flagged")
        if rng.random() < 0.1 and "\\Seen" in flags:
            flags.append("\\Answered")
        out.append(Message(data, date, tuple(flags), last == SEARCH_FROM, text_hit))
    return out


# -- a small IMAP client -------------------------------------------------------------------

_LITERAL: Final = re.compile(rb"\{(\d+)\+?\}\Z")
_UID: Final = re.compile(rb"[( ]UID (\d+)")
_FLAGS: Final = re.compile(rb"FLAGS \(([^)]*)\)")
_SIZE: Final = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapError(Exception):
    """A NO, BAD or BYE, or an answer the benchmark did not expect."""


@dataclass(slots=True)
class Reply:
    """One command's answer: its untagged lines (when kept) and their volume."""

    status: bytes
    lines: list[bytes] = field(default_factory=list)
    count: int = 0
    nbytes: int = 0
    literal_bytes: int = 0
    heads: list[bytes] = field(default_factory=list)  # each untagged line's first 64 bytes


class Client:
    """Raw IMAP over asyncio streams; literals in answers are read by count."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.tags = 0

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection(HOST, port, limit=READ_CHUNK)
        client = cls(reader, writer)
        greeting, _length, _literal = await client._line(keep=True)
        if not greeting.startswith(b"* OK"):
            client.close()
            raise ImapError(f"greeting: {greeting[:200]!r}")
        return client

    @classmethod
    async def login(cls, port: int) -> Client:
        client = await cls.connect(port)
        try:
            await client.command(f'LOGIN {USER} "{PASSWORD}"')
        except BaseException:
            client.close()
            raise
        return client

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def _fill(self) -> None:
        data = await self.reader.read(READ_CHUNK)
        if not data:
            raise ImapError("connection closed by the server")
        self.buf += data

    async def _line(self, keep: bool) -> tuple[bytes, int, int]:
        """One logical line with its literals inline: (line, length, literal bytes).

        Without ``keep`` only the line's first 64 bytes come back (enough for the tag).
        """
        buf = self.buf
        scan = 0
        literal = 0
        while True:
            nl = buf.find(b"\r\n", scan)
            if nl < 0:
                scan = max(0, len(buf) - 1)
                await self._fill()
                continue
            found = (
                _LITERAL.search(buf, max(scan, nl - 24), nl) if buf[nl - 1 : nl] == b"}" else None
            )
            if found is not None:
                size = int(found.group(1))
                literal += size
                need = nl + 2 + size
                while len(buf) < need:
                    await self._fill()
                scan = need
                continue
            line = bytes(buf[:nl]) if keep else bytes(buf[: min(nl, 64)])
            del buf[: nl + 2]
            return line, nl, literal

    async def _answer(self, tag: bytes, keep: bool, plus: bool = False) -> Reply:
        prefix = tag + b" "
        reply = Reply(status=b"")
        while True:
            line, length, literal = await self._line(keep)
            if line.startswith(prefix):
                reply.status = line
                if not line.startswith(prefix + b"OK"):
                    raise ImapError(line[:300].decode("utf-8", "replace"))
                return reply
            if plus and line.startswith(b"+"):
                return reply
            if line.startswith(b"* BYE"):
                raise ImapError(line[:300].decode("utf-8", "replace"))
            reply.count += 1
            reply.nbytes += length
            reply.literal_bytes += literal
            reply.heads.append(line[:64])
            if keep:
                reply.lines.append(line)

    def _tag(self) -> bytes:
        self.tags += 1
        return b"b%d" % self.tags

    async def command(self, text: str, keep: bool = False) -> Reply:
        tag = self._tag()
        self.writer.write(tag + b" " + text.encode() + b"\r\n")
        return await self._answer(tag, keep)

    async def append(self, msg: Message) -> Reply:
        tag = self._tag()
        flags = " ".join(msg.flags)
        head = f'APPEND INBOX ({flags}) "{msg.internaldate}" {{{len(msg.data)}}}'
        self.writer.write(tag + b" " + head.encode() + b"\r\n")
        ready = await self._answer(tag, keep=False, plus=True)
        if ready.status:
            raise ImapError(f"APPEND got no continuation: {ready.status!r}")
        self.writer.write(msg.data + b"\r\n")
        return await self._answer(tag, keep=False)


# -- the servers ---------------------------------------------------------------------------


def _pss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, PermissionError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True, slots=True)
class Memory:
    processes: int
    rss_mb: float
    pss_mb: float


def memory_of(root: int) -> Memory:
    pids = process_tree(root)
    rss = sum(status_kb(p, "VmRSS") or 0 for p in pids)
    pss = sum(_pss_kb(p) for p in pids)
    return Memory(len(pids), rss / 1024, pss / 1024)


class Server:
    """A started server: its name, IMAP port, main process and log."""

    name: str
    port: int
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        await stop_process(self.proc, STOP_TIMEOUT)

    def log_tail(self, chars: int = 3000) -> str:
        return log_tail(self.log, chars)


class Rmail(Server):
    name = "rmail"

    def __init__(self, base: Path, *, cprofile: Path | None) -> None:
        self.base = base
        self.root = base / "mail"
        self.log = base / "rmail.log"
        self.cprofile = cprofile

    def prepare(self) -> Path:
        imap = {"max_connections": 2000, "plaintext_auth_on_loopback": True}
        path = write_config(self.base / "config.json", rmail_config(self.root, imap=imap))
        create_user(self.root)
        return path

    async def start(self) -> None:
        config = await asyncio.to_thread(self.prepare)
        self.proc, _pid = await spawn_rmail(config, self.log, cprofile=self.cprofile)
        ports = await wait_ports(self.root, self.proc, self.log, limit=START_TIMEOUT, poll=0.05)
        self.port = ports["imap"]

    def version(self) -> str:
        return f"commit {rmail_commit()}"


class Dovecot(Server):
    name = "dovecot"

    def __init__(self, base: Path, connections: int) -> None:
        self.base = base
        self.dir = base / "dovecot"
        self.log = self.dir / "dovecot.log"
        self.connections = connections

    def prepare(self) -> Path:
        d = self.dir
        for sub in ("run", "state", "home"):
            (d / sub).mkdir(parents=True)
        self.log.touch()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            mail_uid, mail_gid = pw.pw_uid, pw.pw_gid
            users = ""
        else:
            mail_uid, mail_gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(mail_uid).pw_name
            users = f"default_internal_user = {me}\ndefault_login_user = {me}\n"
        # mkdtemp makes 0700 dirs: let the unprivileged users through to their homes.
        os.chmod(self.base, 0o711)
        os.chmod(d, 0o755)
        os.chown(d / "home", mail_uid, mail_gid)
        self.port = free_port()
        limit = self.connections + 100
        conf = d / "dovecot.conf"
        conf.write_text(
            f"""ssl = no
protocols = imap
listen = {HOST}
base_dir = {d}/run
state_dir = {d}/state
instance_name = rmail-bench-{os.getpid()}
log_path = {self.log}
info_log_path = /dev/null
{users}disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_max_userip_connections = {limit}
default_process_limit = {limit}
default_client_limit = {2 * limit + 100}
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={d}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
        )
        conf.chmod(0o644)
        return conf

    async def start(self) -> None:
        conf = await asyncio.to_thread(self.prepare)
        self.proc = await asyncio.create_subprocess_exec(
            str(DOVECOT),
            "-F",
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(
                    f"dovecot exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                client = await Client.connect(self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            client.close()
            return
        raise RuntimeError("dovecot did not listen in time")

    def version(self) -> str:
        run = subprocess.run(
            [str(DOVECOT), "--version"], capture_output=True, text=True, check=False
        )
        return run.stdout.strip() or "?"


# -- the workload ------------------------------------------------------------------------


@dataclass(slots=True)
class Figure:
    """One operation on one server: wall seconds, server and client CPU seconds."""

    seconds: float | None = None  # None: failed or timed out
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    rss_mb: float = 0.0  # server RSS right after the operation
    error: str = ""
    samples: list[float] = field(default_factory=list)  # every run's seconds, in order


def summarize(runs: Sequence[Figure]) -> Figure:
    """The median of repeated runs (CPU figures too); failed if any run failed."""
    failed = [f for f in runs if f.seconds is None]
    if failed:
        return failed[0]
    mid = sorted(runs, key=lambda f: f.seconds or 0.0)[len(runs) // 2]
    return Figure(
        seconds=mid.seconds,
        server_cpu=statistics.median(f.server_cpu for f in runs),
        client_cpu=statistics.median(f.client_cpu for f in runs),
        rss_mb=max(f.rss_mb for f in runs),
        samples=[f.seconds or 0.0 for f in runs],
    )


@dataclass(slots=True)
class Results:
    figures: dict[str, dict[str, Figure]] = field(default_factory=dict)  # op -> server -> fig
    memory: dict[str, dict[str, IdleMemory]] = field(default_factory=dict)  # server -> when
    problems: list[str] = field(default_factory=list)
    cpu: list[str] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)

    def put(self, op: str, server: str, figure: Figure) -> None:
        self.figures.setdefault(op, {})[server] = figure


class Workload:
    """The commands of the benchmark against one server, with their checks."""

    def __init__(
        self,
        server: Server,
        messages: list[Message],
        results: Results,
        args: argparse.Namespace,
    ) -> None:
        self.server = server
        self.messages = messages
        self.results = results
        self.args = args
        self.uids: list[int] = []
        self.unseen: list[int] = []
        self.store_round = 0
        self.stored: set[int] = set()

    def problem(self, text: str) -> None:
        line = f"{self.server.name}: {text}"
        self.results.problems.append(line)
        say("PROBLEM " + line)

    async def measure(
        self,
        op: str,
        clients: Sequence[Client],
        step: Callable[[int, Client], Awaitable[None]],
        *,
        record: bool = True,
    ) -> Figure:
        """Run ``step`` on every client at once; the wall time to the last answer."""
        figure = Figure()
        cpu0, client0 = cpu_of(self.server.pid), time.process_time()
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.args.timeout):
                await asyncio.gather(*(step(i, c) for i, c in enumerate(clients)))
            figure.seconds = time.perf_counter() - t0
        except TimeoutError:
            figure.error = f"timed out after {self.args.timeout:.0f} s"
        except (ImapError, OSError, AssertionError) as exc:
            figure.error = f"{type(exc).__name__}: {exc}"
        figure.server_cpu = cpu_of(self.server.pid) - cpu0
        figure.client_cpu = time.process_time() - client0
        figure.rss_mb = memory_of(self.server.pid).rss_mb
        if record:
            self.results.put(op, self.server.name, figure)
        shown = f"{figure.seconds:.3f} s" if figure.seconds is not None else figure.error
        say(f"{self.server.name}: {op}: {shown} (server RSS {figure.rss_mb:.0f} MB)")
        if figure.error:
            self.problem(f"{op}: {figure.error}")
        return figure

    # -- steps ----------------------------------------------------------------------------

    async def append_all(self) -> None:
        client = await Client.login(self.server.port)
        bad: list[str] = []

        async def step(_i: int, c: Client) -> None:
            for msg in self.messages:
                reply = await c.append(msg)
                if b"APPENDUID" not in reply.status and len(bad) < 3:
                    bad.append(reply.status[:120].decode())

        try:
            await self.measure(f"APPEND {len(self.messages):,} messages", [client], step)
            # Let a server that indexes in the background settle before the reads.
            await client.command("NOOP")
        finally:
            client.close()
        if bad:
            self.problem(f"APPEND without APPENDUID: {bad}")

    async def select(self, _i: int, c: Client) -> None:
        reply = await c.command("SELECT INBOX", keep=True)
        exists = [ln for ln in reply.lines if ln.endswith(b" EXISTS")]
        count = int(exists[-1].split()[1]) if exists else -1
        if count != len(self.messages):
            raise ImapError(f"SELECT: {count} EXISTS, expected {len(self.messages)}")

    async def fetch_all(self, i: int, c: Client) -> None:
        reply = await c.command(
            "FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)", keep=True
        )
        if i:
            return  # one client's answer is checked; the others are counted
        uids: list[int] = []
        unseen: list[int] = []
        wrong = 0
        for line in reply.lines:
            if b" FETCH (" not in line or b"ENVELOPE" not in line:
                continue
            uid, flags, size = _UID.search(line), _FLAGS.search(line), _SIZE.search(line)
            if uid is None or flags is None or size is None:
                raise ImapError(f"FETCH line without UID/FLAGS/SIZE: {line[:200]!r}")
            seq = len(uids)
            uids.append(int(uid.group(1)))
            if b"\\Seen" not in flags.group(1):
                unseen.append(int(uid.group(1)))
            if seq < len(self.messages) and int(size.group(1)) != len(self.messages[seq].data):
                wrong += 1
        if len(uids) != len(self.messages):
            raise ImapError(f"FETCH 1:* returned {len(uids)} messages, not {len(self.messages)}")
        if wrong:
            self.problem(f"FETCH 1:*: RFC822.SIZE differs from the appended size for {wrong}")
        if not self.uids:
            self.uids, self.unseen = uids, unseen

    async def fetch_bodies(self, i: int, c: Client) -> None:
        rng = random.Random(self.args.seed * 100 + i)
        picks = rng.sample(range(len(self.uids)), min(BODIES, len(self.uids)))
        uid_set = ",".join(str(self.uids[p]) for p in sorted(picks))
        reply = await c.command(f"UID FETCH {uid_set} (BODY.PEEK[])")
        expected = sum(len(self.messages[p].data) for p in picks)
        bodies = [h for h in reply.heads if b"BODY[]" in h]
        if len(bodies) != len(picks) or reply.literal_bytes != expected:
            others = [h for h in reply.heads if b"BODY[]" not in h]
            raise ImapError(
                f"UID FETCH bodies: {len(bodies)} bodies, {reply.literal_bytes} bytes; expected "
                f"{len(picks)} and {expected}; {len(others)} other lines: {others[:3]}"
            )

    async def _search(self, c: Client, criteria: str, expected: int) -> None:
        reply = await c.command(f"UID SEARCH {criteria}", keep=True)
        found = sum(len(ln.split()) - 2 for ln in reply.lines if ln.startswith(b"* SEARCH"))
        if found != expected:
            raise ImapError(f"UID SEARCH {criteria}: {found} hits, expected {expected}")

    async def search_from(self, _i: int, c: Client) -> None:
        await self._search(c, f"FROM {SEARCH_FROM}", sum(m.from_hit for m in self.messages))

    async def search_text(self, _i: int, c: Client) -> None:
        await self._search(c, f"TEXT {SEARCH_TEXT}", sum(m.text_hit for m in self.messages))

    def store_targets(self, i: int) -> list[int]:
        """Client ``i``'s 100 messages: unseen ones, disjoint between clients when possible."""
        pool = self.unseen or self.uids
        start = i * STORES
        return sorted(pool[(start + k) % len(pool)] for k in range(min(STORES, len(pool))))

    async def store(self, i: int, c: Client) -> None:
        targets = self.store_targets(i)
        reply = await c.command(
            f"UID STORE {','.join(map(str, targets))} +FLAGS (\\Seen)", keep=True
        )
        if len(self.unseen) < STORES * self.args.clients:
            return  # clients share messages: who answers with the change is a race
        answered = {
            int(m.group(1))
            for ln in reply.lines
            if b" FETCH " in ln and (m := _UID.search(ln)) is not None
        }
        if not set(targets) <= answered:
            missing = len(set(targets) - answered)
            raise ImapError(f"UID STORE: {missing} of {len(targets)} changes without FETCH")

    async def unstore(self, i: int, c: Client) -> None:
        """Put the flags back (not timed), so that every round changes the same messages."""
        await c.command(
            f"UID STORE {','.join(map(str, self.store_targets(i)))} -FLAGS.SILENT (\\Seen)"
        )

    # -- phases ---------------------------------------------------------------------------

    async def read_workload(self, count: int) -> None:
        """The read steps on ``count`` clients at once, each step ``--repeat`` times."""
        label = "1 client" if count == 1 else f"{count} clients"
        clients: list[Client] = []
        try:
            for _ in range(count):
                clients.append(await Client.login(self.server.port))
            steps: list[tuple[str, Callable[[int, Client], Awaitable[None]]]] = [
                ("SELECT INBOX", self.select),
                ("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)", self.fetch_all),
                (f"UID FETCH {BODIES} bodies (BODY.PEEK[])", self.fetch_bodies),
                (f"UID SEARCH FROM {SEARCH_FROM}", self.search_from),
                (f"UID SEARCH TEXT {SEARCH_TEXT}", self.search_text),
                (f"UID STORE {STORES} +FLAGS (\\Seen)", self.store),
            ]
            for name, step in steps:
                if not self.uids and step not in (self.select, self.fetch_all):
                    self.problem(f"{name}: skipped, FETCH 1:* gave no UIDs")
                    continue
                op = f"{label}: {name}"
                runs: list[Figure] = []
                for _ in range(self.args.repeat):
                    figure = await self.measure(op, clients, step, record=False)
                    runs.append(figure)
                    if figure.seconds is None:
                        # The connections are in an unknown state: start again.
                        for c in clients:
                            c.close()
                        clients = [await Client.login(self.server.port) for _ in range(count)]
                        for i, c in enumerate(clients):
                            with contextlib.suppress(ImapError):
                                await self.select(i, c)
                        break
                    if step == self.store:
                        await self.measure(f"{op} (undo)", clients, self.unstore, record=False)
                self.results.put(op, self.server.name, summarize(runs))
        finally:
            await logout_all(clients)

    async def idle_connections(self, count: int, when: str) -> None:
        """RSS of the server with ``count`` logged-in connections doing nothing."""
        await asyncio.sleep(1.0)
        before = memory_of(self.server.pid)
        clients: list[Client] = []
        errors: list[str] = []
        gate = asyncio.Semaphore(LOGIN_CONCURRENCY)

        async def one() -> None:
            async with gate:
                try:
                    clients.append(await Client.login(self.server.port))
                except (ImapError, OSError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(one() for _ in range(count))), self.args.timeout
            )
        except TimeoutError:
            errors.append(f"logins timed out after {self.args.timeout:.0f} s")
        took = time.perf_counter() - t0
        try:
            await asyncio.sleep(1.0)
            # Are they really alive? A NOOP on a sample of them.
            for c in clients[:: max(1, len(clients) // 20)]:
                try:
                    await asyncio.wait_for(c.command("NOOP"), 10)
                except (ImapError, OSError, TimeoutError) as exc:
                    errors.append(f"NOOP: {type(exc).__name__}: {exc}")
            after = memory_of(self.server.pid)
        finally:
            await logout_all(clients)
        self.results.memory.setdefault(self.server.name, {})[when] = IdleMemory(
            len(clients), count, took, before, after
        )
        say(
            f"{self.server.name}: {len(clients)} idle connections ({when}): RSS "
            f"{after.rss_mb:.1f} MB (before {before.rss_mb:.1f} MB), PSS {after.pss_mb:.1f} MB, "
            f"{after.processes} processes"
        )
        if errors:
            self.problem(f"idle connections: {len(errors)} errors, first: {errors[0]}")

    async def run(self) -> None:
        if self.args.connections:
            await self.idle_connections(self.args.connections, FRESH)
        await self.append_all()
        await self.read_workload(1)
        await self.read_workload(self.args.clients)
        if self.args.connections:
            await self.idle_connections(self.args.connections, AFTER)


FRESH: Final = "fresh"
AFTER: Final = "after the workload"


@dataclass(frozen=True, slots=True)
class IdleMemory:
    connections: int
    asked: int
    login_seconds: float
    before: Memory
    after: Memory

    @property
    def per_connection_kb(self) -> float:
        if not self.connections:
            return 0.0
        return (self.after.rss_mb - self.before.rss_mb) * 1024 / self.connections


async def logout_all(clients: Sequence[Client]) -> None:
    """Say LOGOUT on every connection and close it (servers see a clean end)."""

    async def one(c: Client) -> None:
        with contextlib.suppress(ImapError, OSError, TimeoutError):
            await asyncio.wait_for(c.command("LOGOUT"), 10)
        c.close()

    for start in range(0, len(clients), 200):
        await asyncio.gather(*(one(c) for c in clients[start : start + 200]))


# -- report ------------------------------------------------------------------------------


def machine(base: Path) -> list[str]:
    mount, fstype, _dev = filesystem_of(base)
    return [
        f"- CPU: {cpu_model()}; nproc {len(os.sched_getaffinity(0))}; "
        f"kernel {platform.release()}; Python {platform.python_version()}",
        f"- temp dir on {fstype} ({mount}); load average at start {load_average()}",
    ]


def _cell(f: Figure | None) -> str:
    if f is None:
        return "-"
    if f.seconds is None:
        return "failed"
    text = f"{f.seconds:.3f}"
    if len(f.samples) > 1 and f.samples[0] > 1.5 * f.seconds:
        text += f" (1st {f.samples[0]:.3f})"
    return text


def render(results: Results, args: argparse.Namespace, servers: Sequence[str]) -> str:
    out: list[str] = ["# IMAP benchmark (bench/imap.py)\n"]
    out += [f"- {k}: {v}" for k, v in results.info.items()]
    out.append(
        f"- workload: {args.messages:,} messages (seed {args.seed}), 1 and {args.clients} "
        f"clients, {args.connections:,} idle connections; wall seconds, median of "
        f"{args.repeat} run{'s' if args.repeat > 1 else ''} (the first run beside it when it "
        "was over 1.5x slower)\n"
    )
    both = "rmail" in servers and "dovecot" in servers
    out.append("| operation | rmail s | dovecot s | ratio |")
    out.append("| --- | ---: | ---: | ---: |")
    worst = 0.0
    missed: list[str] = []
    for op, by in results.figures.items():
        r, d = by.get("rmail"), by.get("dovecot")
        ratio = ""
        if r is not None and d is not None and r.seconds is not None and d.seconds:
            value = r.seconds / d.seconds
            worst = max(worst, value)
            ratio = f"{value:.1f}x" if value <= TARGET_RATIO else f"**{value:.1f}x**"
            if value > TARGET_RATIO:
                missed.append(op)
        elif both and r is not None and r.seconds is None:
            missed.append(op)
        out.append(f"| {op} | {_cell(r)} | {_cell(d)} | {ratio} |")
    out.append("")
    out.append("CPU seconds per operation (median run; Dovecot: all its processes):\n")
    out.append("| operation | rmail server | dovecot server | client (with rmail / dovecot) |")
    out.append("| --- | ---: | ---: | ---: |")
    for op, by in results.figures.items():
        r, d = by.get("rmail"), by.get("dovecot")
        rs = f"{r.server_cpu:.2f}" if r else "-"
        ds = f"{d.server_cpu:.2f}" if d else "-"
        cl = " / ".join(f"{f.client_cpu:.2f}" if f else "-" for f in (r, d))
        out.append(f"| {op} | {rs} | {ds} | {cl} |")
    out.append("")
    if results.memory:
        out.append(f"Memory with {args.connections:,} idle authenticated connections:\n")
        out.append(
            "| server | when | connections | processes | RSS MB | PSS MB | RSS before MB "
            "| RSS per connection KB | logins took s |"
        )
        out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name in servers:
            for when, m in results.memory.get(name, {}).items():
                out.append(
                    f"| {name} | {when} | {m.connections:,} | {m.after.processes} | "
                    f"{m.after.rss_mb:.1f} | {m.after.pss_mb:.1f} | {m.before.rss_mb:.1f} | "
                    f"{m.per_connection_kb:.0f} | {m.login_seconds:.2f} |"
                )
        out.append("")
    if both:
        out.append(
            f"- time target (every operation within {TARGET_RATIO:.0f}x Dovecot): "
            + ("met" if not missed else f"**missed** by {len(missed)}: {'; '.join(missed)}")
            + (f" (worst ratio {worst:.1f}x)" if worst else "")
        )
    for when, m in results.memory.get("rmail", {}).items():
        rss, note = m.after.rss_mb, ""
        if m.connections and m.connections != TARGET_CONNECTIONS:
            rss = m.before.rss_mb + m.per_connection_kb * TARGET_CONNECTIONS / 1024
            note = f", extrapolated from {m.connections:,} connections"
        verdict = "met" if rss <= TARGET_RSS_MB else "**missed**"
        out.append(
            f"- memory target (rmail, {TARGET_CONNECTIONS:,} idle connections under "
            f"{TARGET_RSS_MB:.0f} MB RSS), {when}: {rss:.1f} MB{note}: {verdict}"
        )
    for line in results.cpu:
        out.append(f"- {line}")
    for p in results.problems:
        out.append(f"- problem: {p}")
    return "\n".join(out)


def as_json(results: Results) -> dict[str, Any]:
    def fig(f: Figure) -> dict[str, Any]:
        return {
            "seconds": f.seconds,
            "samples": f.samples,
            "server_cpu": f.server_cpu,
            "client_cpu": f.client_cpu,
            "server_rss_mb": f.rss_mb,
            "error": f.error,
        }

    def mem(m: IdleMemory) -> dict[str, Any]:
        return {
            "connections": m.connections,
            "asked": m.asked,
            "login_seconds": m.login_seconds,
            "before": dataclasses.asdict(m.before),
            "after": dataclasses.asdict(m.after),
        }

    return {
        "info": results.info,
        "figures": {op: {s: fig(f) for s, f in by.items()} for op, by in results.figures.items()},
        "memory": {s: {w: mem(m) for w, m in by.items()} for s, by in results.memory.items()},
        "cpu": results.cpu,
        "problems": results.problems,
    }


# -- main --------------------------------------------------------------------------------


async def bench_server(
    server: Server, messages: list[Message], results: Results, args: argparse.Namespace
) -> None:
    say(f"{server.name}: starting")
    await server.start()
    spy = None
    if args.py_spy and server.name == "rmail":
        spy = await attach_py_spy(server.pid, Path(args.py_spy), idle=args.py_spy_idle)
    busy0, server0, client0, t0 = (
        machine_busy(),
        cpu_of(server.pid),
        time.process_time(),
        time.perf_counter(),
    )
    try:
        await Workload(server, messages, results, args).run()
        busy = machine_busy() - busy0
        used, client = cpu_of(server.pid) - server0, time.process_time() - client0
        wall = time.perf_counter() - t0
        results.cpu.append(
            f"{server.name} run: {wall:.0f} s wall; CPU s: server {used:.1f}, client "
            f"{client:.1f}, other processes {max(0.0, busy - used - client):.1f} "
            f"(of {wall * len(os.sched_getaffinity(0)):.0f} available)"
        )
        await asyncio.sleep(0.5)  # let the server notice the last disconnects
    finally:
        if spy is not None:
            await stop_py_spy(spy, STOP_TIMEOUT)
        await server.stop()
    if server.proc.returncode not in (0, -signal.SIGTERM):
        results.problems.append(
            f"{server.name} exited with {server.proc.returncode}: {server.log_tail(1500)}"
        )
    results.problems += log_problems(
        server.name, server.log, r"(?i)\b(error|fatal|panic|traceback|exception)\b"
    )


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need * 2 + 1024
    if soft < want:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= want else want
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, new_hard), new_hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < want:
            say(f"RLIMIT_NOFILE is {soft}, below the {want} this run wants")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages to APPEND")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument(
        "--connections", type=int, default=1000, help="idle connections for the memory figure"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 messages, 200 connections")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated messages")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each read step (the median is shown)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per operation")
    parser.add_argument(
        "--only", choices=("rmail", "dovecot"), help="run one server (no ratio then)"
    )
    parser.add_argument("--dir", help="parent of the temp dir (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--cprofile", metavar="PATH", help="run rmail under cProfile")
    parser.add_argument("--py-spy", metavar="PATH", help="sample rmail with py-spy (raw)")
    parser.add_argument(
        "--py-spy-idle", action="store_true", help="with --py-spy: idle threads too (wall time)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 1000)
        args.connections = min(args.connections, 200)
    if args.messages < BODIES or args.clients < 1 or args.connections < 0 or args.repeat < 1:
        parser.error(f"--messages must be >= {BODIES}, --clients >= 1, --connections >= 0")
    return args


async def amain(args: argparse.Namespace) -> int:
    raise_fd_limit(args.connections + 100)
    results = Results()
    servers = [args.only] if args.only else ["rmail", "dovecot"]
    if "dovecot" in servers and not DOVECOT.exists():
        say("Dovecot is not installed (apt-get install dovecot-imapd): rmail alone")
        servers.remove("dovecot")
    with scratch_dir("rmail-bench-imap-", args.dir, args.keep) as base:
        results.info["machine"] = "; ".join(s.lstrip("- ") for s in machine(base))
        say(f"generating {args.messages:,} messages")
        messages = make_messages(args.messages, args.seed)
        total = sum(len(m.data) for m in messages)
        results.info["messages"] = (
            f"{len(messages):,}, {total / 1e6:.1f} MB, {sum(m.from_hit for m in messages)} from "
            f"{SEARCH_FROM}, {sum(m.text_hit for m in messages)} with '{SEARCH_TEXT}'"
        )
        for name in servers:
            server: Server
            if name == "rmail":
                server = Rmail(
                    base / "rmail", cprofile=Path(args.cprofile) if args.cprofile else None
                )
                (base / "rmail").mkdir()
                results.info["rmail"] = server.version() + " (store.fsync true)"
            else:
                server = Dovecot(base, args.connections)
                results.info["dovecot"] = server.version() + " (mail_fsync optimized)"
            try:
                await bench_server(server, messages, results, args)
            except (RuntimeError, OSError, ImapError) as exc:
                results.problems.append(f"{name}: {type(exc).__name__}: {exc}")
                say(f"{name} failed: {exc}")
        print(render(results, args, servers))
        if args.json:
            await asyncio.to_thread(write_json, args.json, as_json(results))
        return 1 if results.problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
