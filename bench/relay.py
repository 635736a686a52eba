"""Benchmark of the outbound relay: rmail's queue against a bare client, same messages.

Run from the repository root::

    .venv/bin/python bench/relay.py                     # 1,000 x 10 KB, DKIM on (~30 s)
    .venv/bin/python bench/relay.py --no-dkim           # the same with relay.dkim_sign false
    .venv/bin/python bench/relay.py --both-dkim         # rmail rows with and without DKIM
    .venv/bin/python bench/relay.py --quick             # 200 messages (smoke test)
    .venv/bin/python bench/relay.py --json /tmp/relay.json
    .venv/bin/python bench/relay.py --only drain --py-spy /tmp/spy.txt   # profile the drain

Processes, all on 127.0.0.1, started and stopped by this script:

1. ``sink``: a bare aiosmtpd ``SMTP`` server (this script with ``--sink``), one fresh one per
   row, standing in for every remote MX. Its ``handle_DATA`` reads the ``Message-ID``,
   prints one line per transaction to its stdout (monotonic time, Message-ID, recipients),
   replies ``250 OK`` and drops the message; the first message is also written to a file
   (for the DKIM check). ``time.monotonic`` is CLOCK_MONOTONIC, shared by all processes.
2. ``rmail``: ``python -m rmail serve`` with a fresh config per row (every port 0, a temp
   ``mail_root``, domain ``example.test``, cheap Argon2, log level WARNING, ``store.fsync``
   true, ``smtp.plaintext_auth_on_loopback`` true, ``relay.routes`` sending every remote
   domain of the workload to the sink, ``relay.dkim_sign`` true unless ``--no-dkim``,
   ``relay.workers`` at rmail's default (4) unless ``--workers``). ``alice@example.test`` is
   created with ``Store.create_user`` and the DKIM key with ``rmail dkim show example.test``
   before the start, so key generation is not timed.

Workload: ``--messages`` (1,000) messages of ``--size`` (10 KB) from alice, each with its own
Message-ID, to recipients in 8 remote domains (``remote0.test`` ... ``remote7.test``): most
to one recipient, every 4th to two in the same domain, every 5th also to one in a second
domain. The relay sends one SMTP transaction per message and domain, so the sink sees 1,200
transactions for 1,000 messages. The same messages go three ways:

- ``peer``: aiosmtplib from this process straight into the sink, as many connections as
  rmail has relay workers, each reused for up to 100 messages (rmail's per-connection limit),
  one transaction per message and domain: the cost of the network and SMTP part alone.
  msg/s is messages over the time from the first connect to the last ``250``;
- ``drain``: the messages are written into the queue directory with ``Queue.enqueue`` while
  rmail is stopped; then rmail starts and the clock runs until the sink has every
  (message, recipient) pair and the queue directory holds no entry. msg/s is messages over
  the time from the sink's first arrival to that point (rmail's start-up, which includes
  listing the queue, is shown apart as "spawn to first");
- ``submission``: rmail is started with an empty queue; ``--clients`` (10) concurrent
  smtplib clients (threads) AUTH on the submission port and send the messages, up to 50 per
  connection (``smtp.max_messages_per_connection``). msg/s is messages over the time from
  the first connect to the moment the sink has them all and the queue is empty; latency
  is per message from its ``MAIL FROM`` to its last arrival at the sink (``submit p50`` is to
  the submission's ``250``).

Checks: the sink got each (message, recipient) pair exactly once (nothing lost, nothing
sent twice, none extra), the queue is empty, rmail exited with 0 and logged no error; with
DKIM on, the first message at the sink starts with a ``DKIM-Signature`` that dkimpy verifies
against the TXT record printed by ``rmail dkim show example.test``; with DKIM off, it has no
signature.

Memory: peak RSS of the rmail process, ``VmHWM`` from /proc/PID/status read just before it is
stopped (the kernel's high-water mark since its start), and ``VmRSS`` once it had started
(``RSS ready``) for comparison; ``VmRSS`` is also polled every 20 ms.

Output: Markdown on stdout (the machine, the table, CPU seconds of rmail, the sink, this
process and every other process during each row, the checks); ``--json PATH`` writes the
figures as JSON too; progress goes to stderr. With two cores, a busy neighbour changes the
figures, and the script says so when other processes used more than 10 % of the machine.
``--py-spy`` runs rmail under ``py-spy record`` (``pip install py-spy``), raw collapsed
stacks, GIL holder only unless ``--py-spy-idle``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import re
import signal
import smtplib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from common import (
    DOMAIN,
    HOST,
    PASSWORD,
    USER,
    Process,
    child_env,
    cpu_model,
    cpu_seconds,
    create_user,
    filesystem_of,
    load_average,
    machine_busy,
    rmail_commit,
    rmail_config,
    say,
    scratch_dir,
    spawn_rmail,
    status_kb,
    stop_process,
    stop_rmail,
    wait_ports,
    write_config,
    write_json,
)

SENDER: Final = USER
REMOTE_DOMAINS: Final = tuple(f"remote{i}.test" for i in range(8))
PER_SUBMISSION: Final = 50  # rmail's smtp.max_messages_per_connection default
PER_PEER_CONNECTION: Final = 100  # rmail's relay MESSAGES_PER_CONNECTION
DEFAULT_WORKERS: Final = 4  # rmail's relay.workers default
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 30.0
# After the last expected arrival, how long to keep listening for a duplicate.
SETTLE_SECONDS: Final = 0.5
POLL_SECONDS: Final = 0.02
SCRIPT: Final = os.path.abspath(__file__)
_MESSAGE_ID: Final = re.compile(rb"^Message-ID:\s*<([^>]+)>", re.IGNORECASE | re.MULTILINE)


# -- the sink (child process) -------------------------------------------------------------------


class _SinkHandler:
    """Prints ``monotonic message-id rcpt,rcpt`` per transaction; keeps nothing."""

    def __init__(self, first: Path) -> None:
        self.first: Path | None = first

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        now = time.monotonic()
        content: bytes = envelope.original_content or b""
        head = content[: content.find(b"\r\n\r\n")]
        found = _MESSAGE_ID.search(head)
        msgid = found.group(1).decode("ascii", "replace") if found else "-"
        if self.first is not None:
            self.first.write_bytes(content)
            self.first = None
        sys.stdout.write(f"{now:.6f} {msgid} {','.join(envelope.rcpt_tos)}\n")
        sys.stdout.flush()
        return "250 OK"


async def _sink_main(first: Path) -> None:
    """Serve SMTP on a free port, print the port, count and drop messages until SIGTERM."""
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler = _SinkHandler(first)
    # hostname given: otherwise aiosmtpd calls socket.getfqdn() per connection.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test"), HOST, 0, reuse_address=True
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


class Sink:
    """A running sink process and what it reported so far."""

    def __init__(
        self, proc: Process, port: int, first: Path, expected: set[tuple[str, str]]
    ) -> None:
        self.proc = proc
        self.port = port
        self.first = first
        self.expected = expected
        self.arrivals: dict[tuple[str, str], list[float]] = {}
        self.transactions = 0
        self.first_arrival = 0.0
        self.last_arrival = 0.0
        self.complete = asyncio.Event()
        self._have = 0
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, first: Path, expected: set[tuple[str, str]]) -> Sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--sink",
            str(first),
            stdout=asyncio.subprocess.PIPE,
            env=child_env(),
        )
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT))
        return cls(proc, port, first, expected)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            stamp, msgid, rcpts = line.decode().split()
            when = float(stamp)
            self.transactions += 1
            if not self.first_arrival:
                self.first_arrival = when
            self.last_arrival = max(self.last_arrival, when)
            for rcpt in rcpts.split(","):
                key = (msgid, rcpt)
                seen = self.arrivals.setdefault(key, [])
                seen.append(when)
                if len(seen) == 1 and key in self.expected:
                    self._have += 1
            if self._have == len(self.expected):
                self.complete.set()

    def check(self) -> list[str]:
        """Every expected pair exactly once, nothing else."""
        problems = []
        missing = self.expected - self.arrivals.keys()
        twice = [k for k, v in self.arrivals.items() if len(v) > 1]
        extra = self.arrivals.keys() - self.expected
        if missing:
            problems.append(f"{len(missing)} (message, recipient) pairs never arrived")
        if twice:
            problems.append(f"{len(twice)} pairs arrived more than once, e.g. {twice[0]}")
        if extra:
            problems.append(f"{len(extra)} unexpected pairs, e.g. {sorted(extra)[0]}")
        return problems

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)[0]

    async def stop(self) -> None:
        await stop_process(self.proc, STOP_TIMEOUT)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._reader, 5)


# -- the workload -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    msgid: str
    recipients: tuple[str, ...]
    data: bytes

    @property
    def domains(self) -> dict[str, list[str]]:
        """Recipients by domain: one relay transaction each."""
        out: dict[str, list[str]] = {}
        for rcpt in self.recipients:
            out.setdefault(rcpt.rpartition("@")[2], []).append(rcpt)
        return out


def make_messages(count: int, size: int) -> list[Message]:
    """``count`` messages of about ``size`` bytes from alice; see the module doc."""
    line = (b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstu" * 2)[
        :76
    ] + b"\r\n"
    out = []
    for n in range(count):
        domain = REMOTE_DOMAINS[n % len(REMOTE_DOMAINS)]
        rcpts = [f"user{n % 10}@{domain}"]
        if n % 4 == 0:
            rcpts.append(f"list{n % 3}@{domain}")
        if n % 5 == 0:
            other = REMOTE_DOMAINS[(n + 3) % len(REMOTE_DOMAINS)]
            rcpts.append(f"user{n % 7}@{other}")
        msgid = f"bench-{n}@{DOMAIN}"
        head = (
            f"From: Alice <{SENDER}>\r\nTo: {', '.join(rcpts)}\r\n"
            f"Subject: rmail relay benchmark {n}\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
            f"Message-ID: <{msgid}>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        ).encode()
        body_len = max(0, size - len(head))
        body = line * (body_len // len(line))
        body += b"x" * max(0, body_len - len(body) - 2) + b"\r\n"
        out.append(Message(msgid, tuple(rcpts), head + body))
    return out


def expected_pairs(messages: Sequence[Message]) -> set[tuple[str, str]]:
    return {(m.msgid, r) for m in messages for r in m.recipients}


# -- results ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    target: str
    path: str
    messages: int
    transactions: int = 0
    wall: float = 0.0  # the window msg/s is computed over
    spawn_to_first: float | None = None  # rmail start to the sink's first arrival
    spawn_to_done: float | None = None
    latencies: list[float] = field(default_factory=list)  # to the sink, seconds
    submit_latencies: list[float] = field(default_factory=list)  # to the 250, seconds
    peak_rss_mb: float | None = None  # VmHWM
    polled_rss_mb: float | None = None  # highest VmRSS seen by polling
    ready_rss_mb: float | None = None
    rmail_cpu: float = 0.0
    rmail_sys: float = 0.0
    sink_cpu: float = 0.0
    generator_cpu: float = 0.0
    other_cpu: float = 0.0
    machine_seconds: float = 0.0  # wall x CPUs over the measured window
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.wall if self.wall > 0 else 0.0

    @staticmethod
    def p50(values: Sequence[float]) -> float | None:
        return statistics.median(values) * 1000 if values else None


class Rmail:
    """One ``rmail serve`` process with its own data directory, routed to one sink."""

    def __init__(self, base: Path, sink_port: int, *, dkim: bool, workers: int | None) -> None:
        self.base = base
        self.root = base / "mail"
        self.log = base / "rmail.log"
        self.config = base / "config.json"
        self.dkim = dkim
        self.workers = workers
        self.sink_port = sink_port
        self.proc: Process | None = None  # what we started: rmail, or py-spy running it
        self.pid = 0  # rmail's own pid
        self.spawned = 0.0
        self.peak_polled_kb = 0
        self._poller: asyncio.Task[None] | None = None

    def prepare(self) -> dict[bytes, bytes]:
        """Config, alice, and the DKIM key; returns the DKIM TXT record as dkimpy wants it."""
        relay: dict[str, Any] = {
            "routes": {d: f"{HOST}:{self.sink_port}" for d in REMOTE_DOMAINS},
            "dkim_sign": self.dkim,
            "timeout": 60,
        }
        if self.workers is not None:
            relay["workers"] = self.workers
        smtp = {"plaintext_auth_on_loopback": True}
        write_config(self.config, rmail_config(self.root, smtp=smtp, relay=relay))
        create_user(self.root, SENDER, PASSWORD)
        shown = subprocess.run(
            [sys.executable, "-m", "rmail", "--config", str(self.config), "dkim", "show", DOMAIN],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
            check=False,
        )
        if shown.returncode != 0:
            raise RuntimeError(f"rmail dkim show failed: {shown.stderr.strip()}")
        line = shown.stdout.strip()
        name = line.split()[0]
        value = "".join(line.split('"')[1::2])
        return {name.encode(): value.encode()}

    def enqueue(self, messages: Sequence[Message]) -> float:
        """Queue every message with the store API (server stopped); returns seconds taken."""
        from rmail.store.queue import Queue

        queue = Queue(self.root, fsync=True)
        start = time.perf_counter()
        for m in messages:
            queue.enqueue(m.data, SENDER, m.recipients)
        return time.perf_counter() - start

    def queue_size(self) -> int:
        """Entries (records or message files) in the queue directory."""
        try:
            names = os.listdir(self.root / "queue")
        except FileNotFoundError:
            return 0
        return sum(1 for n in names if not n.startswith(".") and n.endswith((".json", ".eml")))

    async def start(self, py_spy: Path | None, idle: bool) -> None:
        self.spawned = time.monotonic()
        self.proc, self.pid = await spawn_rmail(
            self.config, self.log, py_spy=py_spy, idle=idle, start_timeout=START_TIMEOUT
        )
        self._poller = asyncio.get_running_loop().create_task(self._poll_rss())

    async def _poll_rss(self) -> None:
        while True:
            kb = status_kb(self.pid, "VmRSS")
            if kb is not None:
                self.peak_polled_kb = max(self.peak_polled_kb, kb)
            await asyncio.sleep(POLL_SECONDS)

    async def wait_ports(self) -> dict[str, int]:
        assert self.proc is not None
        return await wait_ports(self.root, self.proc, self.log, limit=START_TIMEOUT, poll=0.01)

    async def stop(self) -> list[str]:
        """Stop rmail (and py-spy); problems: exit status, error lines in the log."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self.proc is None:
            return []
        return await stop_rmail(self.proc, self.pid, self.log, STOP_TIMEOUT)


# -- the three ways -----------------------------------------------------------------------------


class Meter:
    """CPU seconds of rmail, the sink, this process and the rest of the machine."""

    def __init__(self, rmail_pid: int | None, sink: Sink) -> None:
        self.rmail_pid = rmail_pid
        self.sink = sink
        self.rmail0 = cpu_seconds(rmail_pid) if rmail_pid else (0.0, 0.0)
        self.sink0 = sink.cpu()
        self.gen0 = time.process_time()
        self.busy0 = machine_busy()
        self.t0 = time.monotonic()

    def fill(self, row: Row) -> None:
        if self.rmail_pid:
            cpu, system = cpu_seconds(self.rmail_pid)
            row.rmail_cpu, row.rmail_sys = cpu - self.rmail0[0], system - self.rmail0[1]
        row.sink_cpu = self.sink.cpu() - self.sink0
        row.generator_cpu = time.process_time() - self.gen0
        busy = machine_busy() - self.busy0
        row.other_cpu = max(0.0, busy - row.rmail_cpu - row.sink_cpu - row.generator_cpu)
        row.machine_seconds = (time.monotonic() - self.t0) * len(os.sched_getaffinity(0))


async def run_peer(args: argparse.Namespace, base: Path, messages: list[Message]) -> Row:
    """aiosmtplib straight into the sink: the network part alone."""
    import aiosmtplib

    row = Row("aiosmtplib → sink", "peer", len(messages))
    sink = await Sink.start(base / "peer-first.eml", expected_pairs(messages))
    jobs = [(m, rcpts) for m in messages for rcpts in m.domains.values()]
    row.transactions = len(jobs)
    connections = args.workers or DEFAULT_WORKERS
    started: dict[str, float] = {}
    done: dict[str, float] = {}

    async def client() -> None:
        smtp: aiosmtplib.SMTP | None = None
        sent = 0
        try:
            while jobs:
                message, rcpts = jobs.pop()
                if smtp is None or sent >= PER_PEER_CONNECTION:
                    if smtp is not None:
                        await smtp.quit()
                    smtp = aiosmtplib.SMTP(
                        hostname=HOST,
                        port=sink.port,
                        local_hostname="mail.example.test",
                        start_tls=False,
                        timeout=60,
                    )
                    await smtp.connect()
                    await smtp.ehlo()
                    sent = 0
                started.setdefault(message.msgid, time.monotonic())
                await smtp.sendmail(SENDER, rcpts, message.data)
                sent += 1
                done[message.msgid] = time.monotonic()
        finally:
            if smtp is not None:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await smtp.quit()

    try:
        meter = Meter(None, sink)
        t0 = time.monotonic()
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(client() for _ in range(connections)), return_exceptions=True),
            args.timeout,
        )
        row.problems += [f"client failed: {o!r}" for o in outcomes if isinstance(o, BaseException)]
        await wait_complete(sink, None, args.timeout)
        row.wall = max(done.values(), default=t0) - t0
        meter.fill(row)
        row.latencies = [done[k] - started[k] for k in done]
        await asyncio.sleep(SETTLE_SECONDS)
    finally:
        await sink.stop()
    row.problems += sink.check()
    if not row.problems:
        row.checks.append(
            f"sink got each of {len(sink.expected)} (message, recipient) pairs exactly once "
            f"in {sink.transactions} transactions"
        )
    return row


async def wait_complete(sink: Sink, rmail: Rmail | None, seconds: float) -> float:
    """Until the sink has every pair and the queue is empty; returns the monotonic time."""
    async with asyncio.timeout(seconds):
        await sink.complete.wait()
        while rmail is not None:
            if not rmail.queue_size():
                break
            await asyncio.sleep(POLL_SECONDS / 2)
    return time.monotonic()


def check_dkim(first: Path, records: dict[bytes, bytes], signed: bool) -> str:
    """Whether the first message at the sink is signed (and verifies) as it should be."""
    import dkim

    data = first.read_bytes() if first.exists() else b""
    if not data:
        return "PROBLEM: the sink kept no message"
    if not signed:
        if data.startswith(b"DKIM-Signature:"):
            return "PROBLEM: DKIM signing is off but the message is signed"
        return "DKIM: first message unsigned, as configured"
    if not data.startswith(b"DKIM-Signature:"):
        return "PROBLEM: the first message has no DKIM-Signature"
    ok = dkim.verify(data, dnsfunc=lambda name, timeout=5: records.get(name))
    if not ok:
        return "PROBLEM: the DKIM-Signature does not verify"
    return "DKIM: the first message's signature verifies with dkimpy against `rmail dkim show`"


async def run_rmail(
    args: argparse.Namespace, base: Path, messages: list[Message], path: str, dkim: bool
) -> Row:
    """One rmail row: ``drain`` (queued while stopped) or ``submission``."""
    label = f"rmail {path}, DKIM {'on' if dkim else 'off'}"
    row = Row(label, path, len(messages))
    row.transactions = sum(len(m.domains) for m in messages)
    tag = f"{path}-{'dkim' if dkim else 'nodkim'}"
    sink = await Sink.start(base / f"{tag}-first.eml", expected_pairs(messages))
    rmail = Rmail(base / tag, sink.port, dkim=dkim, workers=args.workers)
    spy = Path(args.py_spy) if args.py_spy and args.only == path else None
    try:
        records = await asyncio.to_thread(rmail.prepare)
        if path == "drain":
            took = await asyncio.to_thread(rmail.enqueue, messages)
            row.checks.append(
                f"enqueued {len(messages)} with Queue.enqueue in {took:.2f} s "
                f"({len(messages) / took:.0f}/s, fsync on), server stopped"
            )
            await rmail.start(spy, args.py_spy_idle)
            meter = Meter(rmail.pid, sink)
            ports_task = asyncio.create_task(rmail.wait_ports())
            end = await wait_complete(sink, rmail, args.timeout)
            await ports_task
            row.wall = end - sink.first_arrival
            row.spawn_to_first = sink.first_arrival - rmail.spawned
            row.spawn_to_done = end - rmail.spawned
        else:
            await rmail.start(spy, args.py_spy_idle)
            ports = await rmail.wait_ports()
            row.spawn_to_first = None
            kb = status_kb(rmail.pid, "VmRSS")
            row.ready_rss_mb = kb / 1024 if kb else None
            meter = Meter(rmail.pid, sink)
            t0, submitted, problems = await submit_all(
                ports["submission"], messages, args.clients, args.timeout
            )
            row.problems += problems
            end = await wait_complete(sink, rmail, args.timeout)
            row.wall = end - t0
            row.submit_latencies = [done - start for start, done in submitted.values()]
            row.latencies = [
                max(sink.arrivals.get((m.msgid, r), [0.0])[0] for r in m.recipients)
                - submitted[m.msgid][0]
                for m in messages
                if m.msgid in submitted
            ]
            row.checks.append(
                f"submission: {len(submitted)} got 250 in "
                f"{max(d for _, d in submitted.values()) - t0:.2f} s "
                f"({len(submitted) / (max(d for _, d in submitted.values()) - t0):.0f}/s)"
            )
        meter.fill(row)
        hwm = status_kb(rmail.pid, "VmHWM")
        row.peak_rss_mb = hwm / 1024 if hwm else None
        row.polled_rss_mb = rmail.peak_polled_kb / 1024
        await asyncio.sleep(SETTLE_SECONDS)
    except TimeoutError:
        row.problems.append(
            f"timed out after {args.timeout:.0f} s: sink has "
            f"{len(sink.arrivals.keys() & sink.expected)} of {len(sink.expected)} pairs, "
            f"queue holds {rmail.queue_size()} files"
        )
    finally:
        row.problems += await rmail.stop()
        await sink.stop()
    row.problems += sink.check()
    if rmail.queue_size():
        row.problems.append(f"the queue still holds {rmail.queue_size()} files")
    if not any("pairs" in p for p in row.problems):
        row.checks.append(
            f"sink got each of {len(sink.expected)} (message, recipient) pairs exactly once "
            f"in {sink.transactions} transactions; queue empty"
        )
    verdict = await asyncio.to_thread(check_dkim, sink.first, records, dkim)
    (row.problems if verdict.startswith("PROBLEM") else row.checks).append(verdict)
    if spy is not None:
        row.checks.append(f"py-spy samples (raw, collapsed stacks): {spy}")
    return row


async def submit_all(
    port: int, messages: list[Message], clients: int, io_timeout: float
) -> tuple[float, dict[str, tuple[float, float]], list[str]]:
    """``clients`` smtplib threads submit every message; (first connect, {id: (MAIL, 250)})."""
    todo = list(reversed(messages))
    lock = threading.Lock()
    submitted: dict[str, tuple[float, float]] = {}
    problems: list[str] = []
    first = [0.0]

    def take() -> Message | None:
        with lock:
            return todo.pop() if todo else None

    def client() -> None:
        message = take()
        while message is not None:
            with lock:
                if not first[0]:
                    first[0] = time.monotonic()
            smtp = smtplib.SMTP(HOST, port, local_hostname="bench.test", timeout=io_timeout)
            try:
                smtp.ehlo()
                smtp.login(SENDER, PASSWORD)
                for _ in range(PER_SUBMISSION):
                    if message is None:
                        break
                    start = time.monotonic()
                    try:
                        refused = smtp.sendmail(SENDER, list(message.recipients), message.data)
                    except smtplib.SMTPException as exc:
                        with lock:
                            problems.append(f"submission of {message.msgid}: {exc!r}")
                    else:
                        if refused:
                            with lock:
                                problems.append(f"{message.msgid} refused: {refused}")
                        with lock:
                            submitted[message.msgid] = (start, time.monotonic())
                    message = take()
            finally:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    smtp.quit()

    outcomes = await asyncio.gather(
        *(asyncio.to_thread(client) for _ in range(clients)), return_exceptions=True
    )
    problems += [f"client failed: {o!r}" for o in outcomes if isinstance(o, BaseException)]
    return first[0], submitted, problems


# -- report -------------------------------------------------------------------------------------


def machine(base: Path) -> list[str]:
    import aiosmtpd
    import aiosmtplib

    mount, fstype, _dev = filesystem_of(base)
    return [
        f"- CPU: {cpu_model()}; nproc {len(os.sched_getaffinity(0))}; kernel {platform.release()}; "
        f"Python {platform.python_version()}; aiosmtpd {aiosmtpd.__version__}; "
        f"aiosmtplib {aiosmtplib.__version__}",
        f"- rmail commit {rmail_commit(dirty=False)}; temp dir on {fstype} ({mount}); "
        f"load average at start {load_average()}",
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| target | messages (transactions) | msg/s | window s | p50 to sink ms "
        "| spawn to first s | peak RSS MB (VmHWM) | RSS ready MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        first = "-" if r.spawn_to_first is None else f"{r.spawn_to_first:.2f}"
        p50 = _ms(Row.p50(r.latencies)) if r.path != "drain" else "-"
        if r.submit_latencies:
            p50 += f" (250: {_ms(Row.p50(r.submit_latencies))})"
        lines.append(
            f"| {r.target} | {r.messages} ({r.transactions}) | {r.rate:.0f} | {r.wall:.2f} | "
            f"{p50} | {first} | {_mb(r.peak_rss_mb)} | {_mb(r.ready_rss_mb)} |"
        )
    lines += [
        "",
        "| target | rmail CPU s (kernel) | rmail CPU per msg ms | sink CPU s | generator CPU s "
        "| other processes CPU s (of machine s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        per = f"{r.rmail_cpu / r.messages * 1000:.2f}" if r.path != "peer" else "-"
        rm = f"{r.rmail_cpu:.2f} ({r.rmail_sys:.2f})" if r.path != "peer" else "-"
        lines.append(
            f"| {r.target} | {rm} | {per} | {r.sink_cpu:.2f} | {r.generator_cpu:.2f} | "
            f"{r.other_cpu:.2f} ({r.machine_seconds:.1f}) |"
        )
    return lines


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per row")
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes")
    parser.add_argument("--clients", type=int, default=10, help="concurrent submission clients")
    parser.add_argument(
        "--workers", type=int, help="rmail relay.workers, and the peer's connections (default 4)"
    )
    parser.add_argument("--no-dkim", action="store_true", help="rmail with relay.dkim_sign false")
    parser.add_argument(
        "--both-dkim", action="store_true", help="rmail rows with DKIM on and with it off"
    )
    parser.add_argument("--quick", action="store_true", help="200 messages (smoke test)")
    parser.add_argument(
        "--only", choices=("peer", "drain", "submission"), help="run one way (rmail: DKIM as set)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per row")
    parser.add_argument("--dir", help="parent of the temp dir (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--py-spy", metavar="PATH", help="with --only drain|submission: run rmail under py-spy"
    )
    parser.add_argument(
        "--py-spy-idle", action="store_true", help="with --py-spy: sample waiting threads too"
    )
    parser.add_argument("--sink", metavar="FIRST", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 200)
    if args.messages < 1 or args.clients < 1 or args.size < 1024:
        parser.error("--messages and --clients must be >= 1, --size >= 1024")
    if args.py_spy and args.only not in ("drain", "submission"):
        parser.error("--py-spy needs --only drain or --only submission")
    return args


async def amain(args: argparse.Namespace) -> int:
    with scratch_dir("rmail-bench-relay-", args.dir, args.keep) as base:
        info = machine(base)
        dkims = [True, False] if args.both_dkim else [not args.no_dkim]
        say(f"generating {args.messages} messages")
        messages = make_messages(args.messages, args.size)
        rows: list[Row] = []
        if args.only in (None, "peer"):
            say("peer: aiosmtplib straight into the sink")
            rows.append(await run_peer(args, base, messages))
        for dkim in dkims:
            for path in ("drain", "submission"):
                if args.only in (None, path):
                    say(f"rmail {path}, DKIM {'on' if dkim else 'off'}")
                    rows.append(await run_rmail(args, base, messages, path, dkim))
        drain_ready = {r.target: r for r in rows if r.path == "submission"}
        for r in rows:  # a drain has no idle moment: show the same config's idle RSS
            twin = drain_ready.get(r.target.replace("drain", "submission"))
            if r.path == "drain" and twin is not None:
                r.ready_rss_mb = twin.ready_rss_mb
        transactions = sum(len(m.domains) for m in messages)
        print("# Relay benchmark (bench/relay.py)\n")
        print("\n".join(info))
        print(
            f"- workload: {args.messages} messages of {args.size} bytes from {SENDER} to "
            f"{len(expected_pairs(messages))} (message, recipient) pairs in "
            f"{len(REMOTE_DOMAINS)} remote domains = {transactions} transactions; relay.workers "
            f"{args.workers or f'default ({DEFAULT_WORKERS})'}; {args.clients} submission "
            "clients; store.fsync true\n"
        )
        print("\n".join(table(rows)))
        print()
        failed = False
        cpus = len(os.sched_getaffinity(0))
        for r in rows:
            for check in r.checks:
                print(f"- {r.target}: {check}")
            for problem in r.problems[:5]:
                print(f"- {r.target}: PROBLEM: {problem}")
                failed = True
            if r.other_cpu > 0.1 * r.machine_seconds:
                print(
                    f"- {r.target}: other processes used {r.other_cpu:.1f} of "
                    f"{r.machine_seconds:.1f} CPU s ({cpus} CPUs) during the row: the machine "
                    "was not quiet, figures are pessimistic"
                )
        if args.json:
            data = {"machine": info, "rows": [dataclasses.asdict(r) for r in rows]}
            await asyncio.to_thread(write_json, args.json, data)
        return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sink:
        asyncio.run(_sink_main(Path(args.sink)))
        return 0
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
