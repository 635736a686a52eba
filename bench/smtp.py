"""Benchmark of SMTP intake: rmail's MX port against a bare aiosmtpd sink, same workload.

Run from the repository root::

    .venv/bin/python bench/smtp.py                      # 2000 x 10 KB, 10 clients, fsync on
    .venv/bin/python bench/smtp.py --no-fsync           # the same with store.fsync false
    .venv/bin/python bench/smtp.py --quick              # 500 messages (smoke test, < 30 s)
    .venv/bin/python bench/smtp.py --workers 8          # rmail with delivery.workers 8
    .venv/bin/python bench/smtp.py --cprofile /tmp/rmail.prof   # cProfile (event loop only)
    .venv/bin/python bench/smtp.py --py-spy /tmp/spy.txt        # py-spy: who holds the GIL
    .venv/bin/python bench/smtp.py --py-spy /tmp/spy.txt --py-spy-idle  # ... wall time

Both servers run in their own process, so the load generator (this process) does not share
their CPU:

1. ``sink``: aiosmtpd's ``SMTP`` protocol on an asyncio server, whose ``handle_DATA`` returns
   ``250 OK`` and drops the message: the cost of SMTP in aiosmtpd and nothing else;
2. ``rmail``: ``python -m rmail serve`` with a fresh config (every port 0, a temp
   ``mail_root``, domain ``example.test``, cheap Argon2, log level WARNING, ``store.fsync``
   true unless ``--no-fsync``); ``alice@example.test`` (and ``bob`` for the warm-up) are
   created with the store API before it starts. Messages go to the MX port
   (``run/ports.json`` ``smtp``) for alice; after the run the server is stopped and alice's
   INBOX must hold exactly the number of messages that got ``250`` (no loss).

Workload: ``--messages`` messages of ``--size`` bytes from ``--clients`` concurrent clients.
Each client is one asyncio connection speaking plain request/response SMTP (EHLO, then per
message MAIL, RCPT, DATA, body; no PIPELINING), reused for up to
``smtp.max_messages_per_connection`` (50) messages, then QUIT and reconnect. Throughput is
messages that got ``250`` divided by the wall time from the first connect to the last
``250``; latency is per message, from MAIL FROM sent to the ``250`` after the body. A short
warm-up (to bob on rmail) comes before each measurement.

The target (docs/performance.md): rmail takes at least 0.5x the sink's rate with fsync on.
Output is Markdown on stdout: the machine, the filesystem of the temp dir and its fsync
latency, the results table and the verdict. The CPU seconds used by each server (and the
kernel's part), by the generator and by every other process on the machine during the run
are shown too: with two cores, a busy neighbour changes the figures, and the script says so.
On a journal-less ext4 (this project's test machine) the kernel time of every new file
grows with the inodes freed in its block group in the last minute, which each run's
cleanup provides for the next: to compare versions, alternate them and leave a minute
between runs, or give ``--dir`` a new directory at the top of the file system (it gets a
block group of its own); see docs/performance.md.
``--py-spy`` needs ``py-spy`` on PATH (``pip install py-spy``); its raw output is collapsed
stacks, one per line, per thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import pstats
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from common import (
    DOMAIN,
    HOST,
    HOSTNAME,
    USER,
    Process,
    attach_py_spy,
    cpu_model,
    cpu_seconds,
    create_user,
    filesystem_of,
    log_tail,
    machine_busy,
    rmail_config,
    scratch_dir,
    spawn_rmail,
    stop_process,
    stop_py_spy,
    wait_ports,
    write_config,
)

RCPT: Final = USER
WARMUP_RCPT: Final = f"bob@{DOMAIN}"
PER_CONNECTION: Final = 50  # rmail's smtp.max_messages_per_connection default
TARGET_RATIO: Final = 0.5
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 30.0
PY_SPY_RATE: Final = 250
SCRIPT: Final = os.path.abspath(__file__)


# -- the sink (child process) -----------------------------------------------------------------


class _SinkHandler:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


async def _sink_main() -> None:
    """Serve SMTP on a free port, print the port, drop every message until SIGTERM."""
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    # hostname given, as rmail does: otherwise aiosmtpd calls socket.getfqdn() per connection.
    server = await loop.create_server(
        lambda: SMTP(_SinkHandler(), hostname="sink.test"), HOST, 0, reuse_address=True
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


# -- the load generator -----------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one run of the workload against one server gave."""

    target: str
    clients: int
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    generator_cpu: float = 0.0
    server_cpu: float = 0.0
    server_sys: float = 0.0  # the kernel's part of server_cpu
    # CPU seconds the rest of the machine (neither server nor generator) used meanwhile.
    other_cpu: float = 0.0
    timed_out: bool = False

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def make_message(size: int) -> tuple[bytes, bytes]:
    """A message of about ``size`` bytes, split where the per-message number goes.

    Lines are 76 printable characters; none starts with a dot, so no dot-stuffing is needed.
    The body ends with CRLF and the caller adds ``.\\r\\n``.
    """
    head = (
        f"From: Bench <bench@sender.test>\r\nTo: <{RCPT}>\r\n"
        "Subject: rmail SMTP benchmark\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        "Message-ID: <bench-"
    ).encode()
    tail = b"@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
    line = (b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstu" * 2)[
        :76
    ] + b"\r\n"
    body_len = max(0, size - len(head) - len(tail) - 8)
    body = line * (body_len // len(line))
    body += b"x" * max(0, body_len - len(body) - 2) + b"\r\n"
    return head, tail + body


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (possibly multi-line) SMTP reply: its code and last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed by the server")
        if line[3:4] != b"-":
            return int(line[:3]), line


async def run_load(
    *,
    target: str,
    port: int,
    messages: int,
    clients: int,
    size: int,
    rcpt: str,
    seconds: float,
) -> LoadResult:
    """Send ``messages`` messages from ``clients`` concurrent connections; see module doc."""
    result = LoadResult(target, clients)
    head, rest = make_message(size)
    mail_cmd = b"MAIL FROM:<bench@sender.test>\r\n"
    rcpt_cmd = f"RCPT TO:<{rcpt}>\r\n".encode()
    tickets = [messages]
    first_connect: list[float] = []
    last_ok = [0.0]

    async def client(cid: int) -> None:
        while tickets[0] > 0:
            if not first_connect:
                first_connect.append(time.perf_counter())
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                code, line = await _reply(reader)
                if code != 220:
                    raise ConnectionError(f"greeting {line!r}")
                writer.write(b"EHLO bench.test\r\n")
                code, line = await _reply(reader)
                if code != 250:
                    raise ConnectionError(f"EHLO {line!r}")
                for _ in range(PER_CONNECTION):
                    if tickets[0] <= 0:
                        break
                    tickets[0] -= 1
                    number = tickets[0]
                    start = time.perf_counter()
                    writer.write(mail_cmd)
                    code, line = await _reply(reader)
                    if code != 250:
                        result.errors.append(f"MAIL: {line!r}")
                        break
                    writer.write(rcpt_cmd)
                    code, line = await _reply(reader)
                    if code != 250:
                        result.errors.append(f"RCPT: {line!r}")
                        writer.write(b"RSET\r\n")
                        await _reply(reader)
                        continue
                    writer.write(b"DATA\r\n")
                    code, line = await _reply(reader)
                    if code != 354:
                        result.errors.append(f"DATA: {line!r}")
                        break
                    writer.write(b"".join((head, b"%d-%d" % (cid, number), rest, b".\r\n")))
                    code, line = await _reply(reader)
                    now = time.perf_counter()
                    if code != 250:
                        result.errors.append(f"end of DATA: {line!r}")
                        continue
                    result.ok += 1
                    result.latencies.append(now - start)
                    last_ok[0] = max(last_ok[0], now)
                writer.write(b"QUIT\r\n")
                with contextlib.suppress(ConnectionError):
                    await _reply(reader)
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

    cpu0 = time.process_time()
    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    done, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    result.timed_out = bool(pending)
    for task in done:
        exc = task.exception()
        if exc is not None:
            result.errors.append(f"client failed: {exc!r}")
    result.generator_cpu = time.process_time() - cpu0
    if first_connect and last_ok[0]:
        result.wall = last_ok[0] - first_connect[0]
    return result


# -- servers ----------------------------------------------------------------------------------


def fsync_probe(directory: Path, rounds: int = 50) -> tuple[float, float]:
    """Median ms of: write 10 KB to a new file + fsync it + fsync the directory; and p95."""
    data = os.urandom(10240)
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        fd = os.open(directory / f"probe-{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.95)] * 1000


def measure_server(result: LoadResult, pid: int, before: tuple[float, float, float]) -> None:
    """Fill in the CPU figures of ``result`` from ``before`` = (cpu, sys, machine busy)."""
    cpu, system = cpu_seconds(pid)
    result.server_cpu = cpu - before[0]
    result.server_sys = system - before[1]
    busy = machine_busy() - before[2]
    result.other_cpu = busy - result.server_cpu - result.generator_cpu


def snapshot(pid: int) -> tuple[float, float, float]:
    return (*cpu_seconds(pid), machine_busy())


async def bench_sink(args: argparse.Namespace) -> LoadResult:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, SCRIPT, "--sink", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT))
        common = {"port": port, "clients": args.clients, "size": args.size, "rcpt": RCPT}
        await run_load(target="warm-up", messages=2 * args.clients, seconds=30, **common)
        before = snapshot(proc.pid)
        result = await run_load(
            target="aiosmtpd sink", messages=args.messages, seconds=args.timeout, **common
        )
        measure_server(result, proc.pid, before)
        return result
    finally:
        await stop_process(proc, STOP_TIMEOUT)


def prepare_rmail(base: Path, fsync: bool, workers: int | None) -> tuple[Path, Path]:
    """Config written and users created (before the server starts); (config, mail_root)."""
    root = base / "mail"
    sections: dict[str, Any] = {"store": {"fsync": fsync}}
    if workers is not None:
        sections["delivery"] = {"workers": workers}
    config = write_config(base / "config.json", rmail_config(root, **sections))
    for address in (RCPT, WARMUP_RCPT):
        create_user(root, address)
    return config, root


def count_inbox(root: Path, address: str) -> tuple[int, int]:
    """(messages in the INBOX index, message files in new/ and cur/) of a user."""
    from rmail.store import Store

    store = Store.open(root, fsync=False, hostname=HOSTNAME)
    try:
        folder = store.mailbox(address).folder("INBOX")
        indexed = len(folder.refresh())
        files = sum(len(os.listdir(folder.dir / sub)) for sub in ("new", "cur"))
        return indexed, files
    finally:
        store.close()


async def bench_rmail(args: argparse.Namespace, base: Path) -> tuple[LoadResult, str]:
    """Run the workload against a real rmail process; returns the result and the check."""
    fsync = not args.no_fsync
    config, root = await asyncio.to_thread(prepare_rmail, base, fsync, args.workers)
    log = base / "rmail.log"
    cprofile = Path(args.cprofile) if args.cprofile else None
    proc, _pid = await spawn_rmail(config, log, cprofile=cprofile)
    spy: Process | None = None
    try:
        ports = await wait_ports(root, proc, log, limit=START_TIMEOUT, poll=0.05)
        common = {"port": ports["smtp"], "clients": args.clients, "size": args.size}
        await run_load(
            target="warm-up", messages=2 * args.clients, rcpt=WARMUP_RCPT, seconds=30, **common
        )
        if args.py_spy:
            # Attached after the warm-up (not spawn_rmail's py_spy=): only the measured load.
            spy = await attach_py_spy(
                proc.pid, Path(args.py_spy), idle=args.py_spy_idle, rate=PY_SPY_RATE
            )
        before = snapshot(proc.pid)
        result = await run_load(
            target="rmail (fsync on)" if fsync else "rmail (fsync off)",
            messages=args.messages,
            rcpt=RCPT,
            seconds=args.timeout,
            **common,
        )
        measure_server(result, proc.pid, before)
    finally:
        if spy is not None:
            await stop_py_spy(spy, STOP_TIMEOUT)
        await stop_process(proc, STOP_TIMEOUT)
    # Not stop_rmail(): error lines in the log are not counted as failures here.
    if proc.returncode != 0:
        text = await asyncio.to_thread(log_tail, log, 2000)
        result.errors.append(f"rmail exited with {proc.returncode}: {text}")
    indexed, files = await asyncio.to_thread(count_inbox, root, RCPT)
    verdict = "OK" if indexed == files == result.ok else "MISMATCH"
    check = (
        f"INBOX check: {result.ok} accepted with 250, {indexed} indexed, "
        f"{files} files in new/+cur/: {verdict}"
    )
    if verdict != "OK":
        result.errors.append(check)
    return result, check


# -- report -----------------------------------------------------------------------------------


def machine() -> list[str]:
    import aiosmtpd

    return [
        f"- CPU: {cpu_model()}; nproc {len(os.sched_getaffinity(0))}",
        f"- kernel {platform.release()}; Python {platform.python_version()}; "
        f"aiosmtpd {aiosmtpd.__version__}",
    ]


def filesystem(path: Path) -> str:
    """Filesystem type and mount point holding ``path``."""
    mount, fstype, _device = filesystem_of(path)
    return f"{fstype} (mounted on {mount})"


def table(results: Sequence[LoadResult], messages: int) -> list[str]:
    lines = [
        "| target | messages | clients | msg/s | p50 ms | p95 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        shown = f"{r.ok}" if r.ok == messages else f"{r.ok} of {messages}"
        lines.append(
            f"| {r.target} | {shown} | {r.clients} | {r.rate:.0f} | "
            f"{r.percentile(0.50):.1f} | {r.percentile(0.95):.1f} |"
        )
    lines += [
        "",
        "| target | wall s | server CPU s (of which kernel) | server CPU per msg ms "
        "| generator CPU s "
        "| other processes CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        per = r.server_cpu / r.ok * 1000 if r.ok else float("nan")
        lines.append(
            f"| {r.target} | {r.wall:.2f} | {r.server_cpu:.2f} ({r.server_sys:.2f}) | {per:.2f} | "
            f"{r.generator_cpu:.2f} | {max(0.0, r.other_cpu):.2f} |"
        )
    return lines


def print_cprofile(path: Path, out: TextIO) -> None:
    stats = pstats.Stats(str(path), stream=out)
    print("\ncProfile of the server's main thread (event loop), top by own time:", file=out)
    stats.sort_stats("tottime").print_stats(25)
    print("top by cumulative time:", file=out)
    stats.sort_stats("cumulative").print_stats(25)


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per target")
    parser.add_argument("--clients", type=int, default=10, help="concurrent connections")
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes")
    parser.add_argument("--no-fsync", action="store_true", help="rmail with store.fsync false")
    parser.add_argument("--quick", action="store_true", help="500 messages (smoke test)")
    parser.add_argument(
        "--timeout", type=float, default=45.0, help="seconds allowed per target's run"
    )
    parser.add_argument(
        "--workers", type=int, help="rmail delivery.workers (default: rmail's default, 4)"
    )
    parser.add_argument("--dir", help="parent of the temp dir (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--cprofile", metavar="PATH", help="run rmail under cProfile to PATH")
    parser.add_argument("--py-spy", metavar="PATH", help="sample rmail with py-spy to PATH")
    parser.add_argument(
        "--py-spy-idle", action="store_true", help="with --py-spy: sample waiting threads too"
    )
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 500)
    if args.cprofile:  # rmail runs in the repository (spawn_rmail), this script may not
        args.cprofile = os.path.abspath(args.cprofile)
    if args.messages < 1 or args.clients < 1 or args.size < 512:
        parser.error("--messages and --clients must be >= 1, --size >= 512")
    return args


async def amain(args: argparse.Namespace) -> int:
    # The "kept" note goes to stdout, in the report, as a list item.
    with scratch_dir(
        "rmail-bench-smtp-", args.dir, args.keep, note=lambda t: print(f"- {t}")
    ) as base:
        print("# SMTP intake benchmark (bench/smtp.py)\n")
        print("\n".join(machine()))
        probe = base / "probe"
        probe.mkdir()
        p50, p95 = fsync_probe(probe)
        shutil.rmtree(probe)
        print(f"- temp dir {base}: {filesystem(base)}")
        print(f"- disk: write 10 KB + fsync file + fsync dir: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        print(
            f"- workload: {args.messages} messages of {args.size} bytes, {args.clients} clients, "
            f"up to {PER_CONNECTION} messages per connection, rmail store.fsync "
            f"{'false' if args.no_fsync else 'true'}, delivery.workers "
            f"{args.workers or 'default (4)'}\n",
            flush=True,
        )
        sink = await bench_sink(args)
        rmail, check = await bench_rmail(args, base)
        print("\n".join(table([sink, rmail], args.messages)))
        print()
        print(f"- {check}")
        ratio = rmail.rate / sink.rate if sink.rate else 0.0
        met = ratio >= TARGET_RATIO
        condition = "" if not args.no_fsync else " (this run has fsync off: not the target's case)"
        print(
            f"- rmail/sink = {ratio:.2f}; target >= {TARGET_RATIO}x the sink's rate with fsync "
            f"on: {'met' if met else 'NOT met'}{condition}"
        )
        failed = False
        for r in (sink, rmail):
            if r.timed_out:
                print(f"- {r.target}: stopped after --timeout {args.timeout:.0f} s")
                failed = True
            for error in r.errors[:5]:
                print(f"- {r.target} error: {error}")
                failed = True
            if r.other_cpu > 0.1 * r.wall * len(os.sched_getaffinity(0)):
                print(
                    f"- {r.target}: other processes used {r.other_cpu:.1f} CPU s during the run: "
                    "the machine was not quiet, figures are pessimistic"
                )
            if len(r.errors) > 5:
                print(f"- {r.target}: {len(r.errors) - 5} more errors")
        if args.cprofile:
            print_cprofile(Path(args.cprofile), sys.stdout)
        if args.py_spy:
            print(f"- py-spy samples (raw, collapsed stacks): {args.py_spy}")
        return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sink:
        asyncio.run(_sink_main())
        return 0
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
