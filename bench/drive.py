"""Benchmark of the drive: big transfers and a big listing, against ``cp`` and rclone.

Run from the repository root::

    .venv/bin/python bench/drive.py                    # 512 MB file, 10,000-file folder
    .venv/bin/python bench/drive.py --quick            # 64 MB, 2,000 files (smoke test)
    .venv/bin/python bench/drive.py --no-fsync         # rmail with store.fsync false
    .venv/bin/python bench/drive.py --only rmail bare --client curl --json /tmp/drive.json

Servers (each in its own process on 127.0.0.1, started and stopped by this script):

1. ``rmail``: ``python -m rmail serve`` with a fresh config in a temp dir (every port 0, log
   level WARNING, ``store.fsync`` true unless ``--no-fsync``, a 1 TB quota for the user); the
   HTTP port is read from ``run/ports.json``. The ``--files`` files of the listing folder
   are written straight to disk beforehand and indexed with the store's ``Drive.adopt``
   (one snapshot write; ``Drive.write`` file by file appends to the folder's journal,
   about 2 ms a file with fsync, but goes through the lock chain and an fsync each time).
2. ``rclone``: ``rclone serve webdav`` (Debian's rclone) over a plain directory on the same
   disk, with a user and password, the same files.
3. ``bare``: ``bench/bare_http.py``, the least a Python server can do for these transfers
   with rmail's durable work (a BLAKE3 hash, a write and fsync, a rename, and ``sendfile``
   for downloads); transfers only. Its figures show what curl, the kernel and the disk
   allow on this machine, apart from what rmail adds: ``rmail / bare`` near 1 means the
   rest of the gap to ``cp`` is not rmail's.

Workload, the same for both: one PUT of a ``--size-mb`` file streamed from disk, one GET of
it streamed to a file on the same disk, each ``--repeat`` times (best and worst shown), with
``curl`` (a separate process, as users run it; the target is measured with it) and with
aiohttp in this process (``--client`` picks one); a listing of the ``--files`` folder (rmail:
JSON ``GET`` and XML ``PROPFIND Depth: 1``; rclone: ``PROPFIND Depth: 1``): the first (the
server has not read the folder since it started), the median of 10 more, and the median of
10 listings each right after a small PUT into the folder (what a client syncing the folder
sees). The limit is ``cp`` of the same file on the same disk, followed by an fsync of the
copy when rmail fsyncs (``--no-fsync``: plain ``cp``). Before every timed transfer the disk
is synced (untimed), so no step pays for the writeback of the one before. Peak RSS of the
server is sampled every 20 ms during the transfers and compared with its RSS before them: it
should stay flat (bodies stream, nothing holds a whole file).

Output is Markdown on stdout: machine, table with ratios, targets (transfers at least 50 %
of ``cp``, listing under 50 ms) and the CPU seconds of every other process on the machine
during the run (two shared cores: a busy neighbour shows up there). ``--json PATH`` writes
the figures as JSON. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from common import (
    CHEAP_AUTH,
    HOST,
    HOSTNAME,
    PASSWORD,
    REPO,
    USER,
    Process,
    cpu_of,
    free_port,
    machine_busy,
    rmail_config,
    rss_mb,
    say,
    scratch_dir,
    spawn_rmail,
    stop_process,
    wait_ports,
    write_config,
    write_json,
)

CHUNK: Final = 1 << 20
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 20.0
TARGET_RATIO: Final = 0.5
TARGET_LIST_MS: Final = 50.0
LISTINGS: Final = 10
PROPFIND_BODY: Final = (
    b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><resourcetype/><getcontentlength/>'
    b"<getetag/><getlastmodified/></prop></propfind>"
)


@dataclass
class Server:
    name: str
    base: str  # URL of the drive root, ending in "/"
    proc: Process
    log: Path
    populate_s: float = 0.0  # rmail: writing the listing folder before the start


async def start_rmail(work: Path, args: argparse.Namespace) -> Server:
    sys.path.insert(0, str(REPO))
    from rmail.config import AuthConfig
    from rmail.store import Store
    from rmail.store.drive import Drive

    root = work / "rmail"
    config = rmail_config(root, store={"fsync": not args.no_fsync})
    path = write_config(work / "config.json", config)
    # Not common.create_user: the same store also sets the quota and fills the drive.
    store = Store.open(root, auth=AuthConfig(**CHEAP_AUTH), hostname=HOSTNAME)
    try:
        store.create_user(USER, PASSWORD)
        store.accounts.set_user(USER, quota_mb=1024 * 1024)  # the most allowed: 1 TB
        drive = Drive(store.accounts.user_dir(USER) / "drive", fsync=False)
        say(f"rmail: writing {args.files:,} files and indexing them with Drive.adopt")
        t0 = time.perf_counter()
        drive.mkdir("many")
        for i in range(args.files):
            (drive.files / "many" / f"file-{i:05d}.txt").write_bytes(b"x" * 100)
        drive.adopt("many")
        populate = time.perf_counter() - t0
    finally:
        store.close()
    log = work / "rmail.log"
    proc, _pid = await spawn_rmail(path, log)
    ports = await wait_ports(root, proc, log, limit=START_TIMEOUT, poll=0.05)
    return Server("rmail", f"http://{HOST}:{ports['http']}/drive/", proc, log, populate)


async def start_rclone(work: Path, args: argparse.Namespace) -> Server:
    rclone = shutil.which("rclone")
    if rclone is None:
        raise RuntimeError("rclone is not installed (apt-get install rclone)")
    root = work / "rclone"
    (root / "many").mkdir(parents=True)
    for i in range(args.files):
        (root / "many" / f"file-{i:05d}.txt").write_bytes(b"x" * 100)
    return await start_listening(
        "rclone",
        work,
        rclone,
        *("serve", "webdav", str(root), "--addr", f"{HOST}:{{port}}"),
        *("--user", USER, "--pass", PASSWORD, "--config", str(work / "rclone.conf")),
    )


async def start_bare(work: Path, args: argparse.Namespace) -> Server:
    extra = ["--no-fsync"] if args.no_fsync else []
    script = str(REPO / "bench" / "bare_http.py")
    return await start_listening(
        "bare", work, sys.executable, script, str(work / "bare"), "{port}", *extra
    )


async def start_listening(name: str, work: Path, *command: str) -> Server:
    """Start ``command`` (``{port}`` in an argument becomes a free port) with its output in
    ``work/NAME.log``; returns once it accepts connections on 127.0.0.1."""
    port = free_port()
    log = work / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *(arg.replace("{port}", str(port)) for arg in command),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection((HOST, port), timeout=0.2).close()
            return Server(name, f"http://{HOST}:{port}/", proc, log)
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} in time")


# -- measurements ------------------------------------------------------------------------


@dataclass
class Figures:
    # Seconds per transfer, by client ("curl", "aiohttp").
    upload_s: dict[str, list[float]] = field(default_factory=dict)
    download_s: dict[str, list[float]] = field(default_factory=dict)
    list_ms: dict[str, float] = field(default_factory=dict)
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    cpu_s: float = 0.0


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            rss = await asyncio.to_thread(rss_mb, self.pid, tree=True)
            self.peak = max(self.peak, rss)
            await asyncio.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def _auth() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


async def transfers(
    server: Server, source: Path, work: Path, args: argparse.Namespace, figures: Figures
) -> None:
    for client in args.clients:
        for i in range(args.repeat):
            url = server.base + f"big-{i}.bin"
            say(f"{server.name}: PUT {args.size_mb} MB with {client} ({i + 1}/{args.repeat})")
            await asyncio.to_thread(os.sync)  # no writeback of earlier steps in the figure
            seconds = await (_put_curl if client == "curl" else _put_aiohttp)(url, source)
            figures.upload_s.setdefault(client, []).append(seconds)
            say(f"{server.name}: GET with {client} ({i + 1}/{args.repeat})")
            target = work / f"down-{server.name}.bin"
            await asyncio.to_thread(os.sync)
            get = _get_curl if client == "curl" else _get_aiohttp
            seconds = await get(url, target)
            figures.download_s.setdefault(client, []).append(seconds)
            got = target.stat().st_size
            target.unlink()
            if got != args.size_mb * CHUNK:
                raise RuntimeError(f"{server.name} GET gave {got} bytes")
            async with aiohttp.ClientSession(headers=_auth()) as http, http.delete(url) as r:
                await r.read()


async def _curl(*args: str) -> float:
    """Run curl (quiet, failing on an HTTP error); returns its wall time."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail", "-u", f"{USER}:{PASSWORD}", *args
    )
    if await proc.wait() != 0:
        raise RuntimeError(f"curl {' '.join(args)} failed")
    return time.perf_counter() - t0


async def _put_curl(url: str, source: Path) -> float:
    return await _curl("-T", str(source), "-o", "/dev/null", url)


async def _get_curl(url: str, target: Path) -> float:
    return await _curl("-o", str(target), url)


async def _put_aiohttp(url: str, source: Path) -> float:
    timeout = aiohttp.ClientTimeout(total=3600)
    size = source.stat().st_size  # noqa: ASYNC240 (before the timed part)
    async with aiohttp.ClientSession(headers=_auth(), timeout=timeout) as http:
        with source.open("rb") as f:
            t0 = time.perf_counter()
            async with http.put(url, data=f, headers={"Content-Length": str(size)}) as r:
                await r.read()
                if r.status not in (200, 201, 204):
                    raise RuntimeError(f"PUT answered {r.status}")
            return time.perf_counter() - t0


async def _get_aiohttp(url: str, target: Path) -> float:
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(headers=_auth(), timeout=timeout) as http:
        t0 = time.perf_counter()
        async with http.get(url) as r:
            with target.open("wb") as out:
                async for chunk in r.content.iter_chunked(CHUNK):
                    out.write(chunk)
        return time.perf_counter() - t0


async def listings(server: Server, figures: Figures) -> None:
    url = server.base + "many/"
    async with aiohttp.ClientSession(headers=_auth()) as http:
        kinds = [("PROPFIND XML", "PROPFIND")]
        if server.name == "rmail":
            kinds.insert(0, ("GET JSON", "GET"))
        for label, method in kinds:
            times = []
            for _ in range(LISTINGS + 1):
                headers = {"Depth": "1"}
                body = PROPFIND_BODY if method == "PROPFIND" else None
                t0 = time.perf_counter()
                async with http.request(method, url, data=body, headers=headers) as r:
                    data = await r.read()
                    if r.status not in (200, 207):
                        raise RuntimeError(f"{server.name} {method} answered {r.status}")
                times.append(time.perf_counter() - t0)
            # The first listing reads and renders the folder; rmail keeps the rendered answer
            # while the folder is unchanged, so the repeats show what a polling client gets.
            figures.list_ms[f"{label}, first"] = times[0] * 1000
            figures.list_ms[f"{label}, repeated"] = statistics.median(times[1:]) * 1000
            say(f"{server.name}: {label} of the folder: {len(data):,} bytes")
            # A client that lists a folder after each change in it (a sync client): one
            # small PUT into the folder (untimed), then the listing.
            changed = []
            for i in range(LISTINGS):
                async with http.put(url + f"{method}-{i}.txt", data=b"changed") as r:
                    await r.read()
                    if r.status not in (200, 201, 204):
                        raise RuntimeError(f"{server.name} PUT answered {r.status}")
                body = PROPFIND_BODY if method == "PROPFIND" else None
                t0 = time.perf_counter()
                async with http.request(method, url, data=body, headers={"Depth": "1"}) as r:
                    await r.read()
                changed.append(time.perf_counter() - t0)
            figures.list_ms[f"{label}, after a change"] = statistics.median(changed) * 1000


def cp_limit(source: Path, work: Path, fsync: bool, repeat: int) -> list[float]:
    out: list[float] = []
    for _ in range(repeat):
        target = work / "cp-copy.bin"
        os.sync()
        t0 = time.perf_counter()
        subprocess.run(["cp", str(source), str(target)], check=True)
        if fsync:
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        out.append(time.perf_counter() - t0)
        target.unlink()
    return out


async def bench(server: Server, source: Path, work: Path, args: argparse.Namespace) -> Figures:
    figures = Figures()
    await asyncio.sleep(0.5)
    figures.rss_before_mb = rss_mb(server.proc.pid, tree=True)
    cpu0 = cpu_of(server.proc.pid)
    with RssSampler(server.proc.pid) as sampler:
        await transfers(server, source, work, args, figures)
    figures.rss_peak_mb = sampler.peak
    if server.name != "bare":  # it serves files, not listings
        await listings(server, figures)
    figures.cpu_s = cpu_of(server.proc.pid) - cpu0
    return figures


# -- report ------------------------------------------------------------------------------


def _range(values: Sequence[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if abs(hi - lo) < 0.005 else f"{lo:.2f}-{hi:.2f}"


def report(
    args: argparse.Namespace,
    results: dict[str, Figures],
    cp: list[float],
    info: dict[str, Any],
) -> str:
    mb = args.size_mb
    out = [
        f"Machine: {info['machine']}; temp dir {info['work']}; rmail store.fsync "
        f"{not args.no_fsync}; file {mb} MB, {args.repeat} runs (best-worst), listing of "
        f"{args.files:,} files (median of {LISTINGS}).",
        "",
        "| operation | rmail | rclone serve webdav | bare server | limit (cp) | rmail / limit "
        "| rmail / rclone | rmail / bare |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    r, c, b = results.get("rmail"), results.get("rclone"), results.get("bare")
    cp_rate = [mb / s for s in cp]
    verdicts = []
    for client in args.clients:
        for verb, attr in (("upload (PUT)", "upload_s"), ("download (GET)", "download_s")):
            label = f"{verb} MB/s, {client}"
            rr, cr, br = (
                [mb / s for s in getattr(f, attr).get(client, [])] if f else [] for f in (r, c, b)
            )
            ratio = max(rr) / max(cp_rate) if rr else None
            vs = max(rr) / max(cr) if rr and cr else None
            vs_bare = max(rr) / max(br) if rr and br else None
            out.append(
                f"| {label} | {_range(rr) if rr else '-'} | {_range(cr) if cr else '-'} | "
                f"{_range(br) if br else '-'} | {_range(cp_rate)} | "
                f"{f'{ratio:.0%}' if ratio else '-'} | {f'{vs:.2f}x' if vs else '-'} | "
                f"{f'{vs_bare:.2f}x' if vs_bare else '-'} |"
            )
            if ratio is not None and client == "curl":  # the target is for a real client
                ok = ratio >= TARGET_RATIO
                verdicts.append(f"{label}: {ratio:.0%} of cp: {'met' if ok else '**missed**'}")
            if br and client == "curl":
                verdicts.append(
                    f"{label}: the bare server reaches {max(br) / max(cp_rate):.0%} of cp "
                    "with the same client (what curl and the kernel leave to any server)"
                )
    labels = list(dict.fromkeys([*(r.list_ms if r else {}), *(c.list_ms if c else {})]))
    for label in labels:
        rv = r.list_ms.get(label) if r else None
        cv = c.list_ms.get(label) if c else None
        vs = f"{rv / cv:.2f}x" if rv and cv else "-"
        out.append(
            f"| list {args.files:,} files, {label}, ms | {f'{rv:.1f}' if rv else '-'} | "
            f"{f'{cv:.1f}' if cv else '-'} | | | | {vs} | |"
        )
        if rv is not None:
            ok = rv <= TARGET_LIST_MS
            verdicts.append(f"listing ({label}): {rv:.1f} ms: {'met' if ok else '**missed**'}")
    for name, f in results.items():
        cells = ["", "", "", "", "", "", ""]
        cells[("rmail", "rclone", "bare").index(name)] = (
            f"{f.rss_before_mb:.0f} / {f.rss_peak_mb:.0f}"
        )
        out.append(f"| {name} RSS MB before / peak during transfers | {' | '.join(cells)} |")
    out.append("")
    out.append(
        f"- targets: transfers >= {TARGET_RATIO:.0%} of cp, listing <= {TARGET_LIST_MS:.0f} ms"
    )
    out.extend(f"- {v}" for v in verdicts)
    if "populate_s" in info:
        out.append(
            f"- writing the {args.files:,} listing files and Drive.adopt took "
            f"{info['populate_s']:.1f} s (before the server started)"
        )
    for name, f in results.items():
        out.append(f"- {name} server CPU during its run: {f.cpu_s:.1f} s")
    out.append(f"- {info['load']}")
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=512, help="size of the big file")
    parser.add_argument("--files", type=int, default=10_000, help="files in the listed folder")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each transfer")
    parser.add_argument("--quick", action="store_true", help="64 MB and 2,000 files")
    parser.add_argument("--no-fsync", action="store_true", help="rmail with store.fsync false")
    parser.add_argument(
        "--only", nargs="+", choices=("rmail", "rclone", "bare"), help="run these servers only"
    )
    parser.add_argument(
        "--client",
        choices=("curl", "aiohttp", "both"),
        default="both",
        help="transfer client: curl (the target's), aiohttp in this process, or both",
    )
    parser.add_argument("--no-transfers", action="store_true", help="listings only")
    parser.add_argument("--tmp", help="where the temp dir goes (default: the system's)")
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mb, args.files = 64, 2000
    args.clients = ["curl", "aiohttp"] if args.client == "both" else [args.client]
    if args.no_transfers:
        args.clients = []
    return args


async def main_async(args: argparse.Namespace) -> int:
    with scratch_dir("rmail-bench-drive-", args.tmp, keep=False) as work:
        source = work / "source.bin"
        say(f"writing a {args.size_mb} MB source file")
        with source.open("wb") as f:
            block = os.urandom(CHUNK)
            for i in range(args.size_mb):
                f.write(block[i % 251 :] + block[: i % 251])  # no two blocks alike
        cp = cp_limit(source, work, not args.no_fsync, args.repeat)
        busy0, t0 = machine_busy(), time.perf_counter()
        self0 = time.process_time()
        results: dict[str, Figures] = {}
        info: dict[str, Any] = {
            "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}",
            "work": str(work),
        }
        servers_cpu = 0.0
        starts = (("rmail", start_rmail), ("rclone", start_rclone), ("bare", start_bare))
        for name, start in starts:
            if (args.only and name not in args.only) or (name == "bare" and not args.clients):
                continue
            say(f"{name}: starting")
            server = await start(work, args)
            if name == "rmail":
                info["populate_s"] = server.populate_s
            try:
                results[name] = await bench(server, source, work, args)
                servers_cpu += cpu_of(server.proc.pid)
            finally:
                await stop_process(server.proc, STOP_TIMEOUT)
        wall = time.perf_counter() - t0
        busy = machine_busy() - busy0
        own = time.process_time() - self0
        other = max(0.0, busy - servers_cpu - own)
        cores = len(os.sched_getaffinity(0))
        info["load"] = (
            f"run: {wall:.0f} s wall; CPU s: servers {servers_cpu:.1f}, this client "
            f"{own:.1f}, other processes on the machine {other:.1f} (of "
            f"{wall * cores:.0f} available on {cores} cores); load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        print(report(args, results, cp, info))
        if args.json:
            data = {
                "args": vars(args),
                "info": info,
                "cp_s": cp,
                "results": {n: f.__dict__ for n, f in results.items()},
            }
            await asyncio.to_thread(write_json, args.json, data)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
