"""Benchmark of the JSON API: rmail's aiohttp routes against a bare aiohttp peer, same bodies.

Run from the repository root::

    .venv/bin/python bench/api.py                    # 10,000 messages, 1,000 requests per row
    .venv/bin/python bench/api.py --quick            # 2,000 messages, 200 requests per row
    .venv/bin/python bench/api.py --json /tmp/api.json
    .venv/bin/python bench/api.py --only list --py-spy /tmp/spy.txt   # profile the listing

Processes, all on 127.0.0.1, started and stopped by this script:

1. ``rmail``: ``python -m rmail serve`` with a fresh config in a temp dir (every port 0, log
   level WARNING, ``store.fsync`` true), the HTTP port read from ``run/ports.json``. Before
   the start, ``alice@example.test`` gets ``--messages`` realistic messages in INBOX through
   the store API (``Store.open(root, fsync=False)``, ``Folder.append_many``; the messages of
   ``bench/imap.py``: plain text, multipart/alternative, multipart/mixed with 1-2
   attachments of 1-50 KB). rmail runs twice on the same data directory: first with the
   default Argon2 settings (t=3, 64 MiB: what users get) for the login rows with a default
   hash, then with cheap Argon2 (t=1, 64 KiB, as the tests use) for every other row.
   Users created for the login rows carry a hash of the settings the server runs with, so
   no login upgrades a hash.
2. ``peer``: a bare aiohttp server (this script with ``--peer``), no auth, no store: for each
   rmail row it answers ``web.json_response`` of the very JSON document rmail answered
   (parsed once at its start, serialised per request), so the body has the same size and
   shape. It is the floor of aiohttp + JSON on this machine; the ratio column is rmail /
   peer.

Rows (each a fixed number of requests from ``C`` concurrent aiohttp connections, C = 1 and
``--clients`` (8); one untimed request first, shown as ``1st ms``):

- ``login first``: ``POST /auth/login`` once per user, each a different user, so each is a
  cache miss and costs one Argon2 verification; with the default and the cheap settings;
- ``login repeated``: alice again and again; after the first, the verified-credentials
  cache (``auth.cache_seconds``, 300 s by default) answers without hashing;
- ``list first page``: ``GET /folders/INBOX/messages?limit=50``;
- ``list offset 5000``: the same with ``offset`` half the folder;
- ``message plain|alternative|attachments``: ``GET /folders/INBOX/messages/{uid}?format=json``
  of different messages of that kind in turn;
- ``search from``: ``GET /folders/INBOX/messages?from=quispe&limit=50`` (about 3 % match);
  the first one after a start reads every message's header (``1st ms``), later ones use
  rmail's cache of header text; fewer requests (``--search-requests``, 20).

``1st ms`` of the listing rows is the first listing after the start, when the summaries of
the 50 messages are not cached yet; the timed requests then hit rmail's summary cache.

Figures: requests/s is requests over the wall time from the first to the last answer;
p50/p99 is the latency of one request (send to body read) in ms. Every answer is checked
(status 200, a token, 50 listed messages, the uid asked for, the search total). CPU seconds
of rmail, the peer, this process (the client) and other processes are shown per row: the
machine has 2 cores and is shared, and the client competes with the server for them.

Output: Markdown on stdout; ``--json PATH`` writes the figures too; progress on stderr.
``--py-spy PATH`` runs the second rmail (cheap Argon2: every row but the default-Argon2
logins) under ``py-spy record`` (raw collapsed stacks, GIL holder only unless
``--py-spy-idle``); use it with ``--only`` to profile one group of rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imap as imap_bench  # bench/imap.py: the realistic messages

from common import (
    CHEAP_AUTH,
    DOMAIN,
    HOST,
    PASSWORD,
    REPO,
    USER,
    Process,
    cpu_model,
    cpu_seconds,
    load_average,
    machine_busy,
    rmail_commit,
    rmail_config,
    say,
    scratch_dir,
    spawn_rmail,
    stop_process,
    stop_rmail,
    wait_ports,
    write_config,
    write_json,
)

LIMIT: Final = 50
TARGET_LIST_P50_MS: Final = 20.0  # issue #6
# Share of the machine used by other processes above which a row is flagged as noisy.
NOISY: Final = 0.25
APPEND_BATCH: Final = 500
START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 30.0
SCRIPT: Final = os.path.abspath(__file__)
KINDS: Final = ("plain", "alternative", "attachments")
GROUPS: Final = ("login", "list", "message", "search")

# -- the peer (child process) -------------------------------------------------------------------


async def _peer_main(bodies_file: Path) -> None:
    """Serve each saved JSON document at ``/{name}``; print the port; run until SIGTERM."""
    documents: dict[str, Any] = json.loads(await asyncio.to_thread(bodies_file.read_text))

    def handler(doc: Any) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request) -> web.Response:
            return web.json_response(doc)

        return answer

    app = web.Application()
    for name, doc in documents.items():
        app.router.add_route("*", f"/{name}", handler(doc))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    server = site._server  # the port picked for 0
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    print(sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


class Peer:
    def __init__(self, proc: Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @classmethod
    async def start(cls, bodies: Path) -> Peer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, SCRIPT, "--peer", str(bodies), stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT))
        return cls(proc, port)

    async def stop(self) -> None:
        await stop_process(self.proc, STOP_TIMEOUT)


class Rmail:
    """``rmail serve`` on one data directory; started once per Argon2 setting."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "mail"
        self.log = base / "rmail.log"
        self.proc: Process | None = None  # what we started: rmail, or py-spy running it
        self.pid = 0  # rmail's own pid
        self.port = 0

    def write_config(self, auth: dict[str, int] | None) -> Path:
        path = self.base / ("config-cheap.json" if auth else "config-default.json")
        return write_config(path, rmail_config(self.root, auth=auth))

    async def start(
        self, auth: dict[str, int] | None, py_spy: Path | None = None, idle: bool = False
    ) -> None:
        config = self.write_config(auth)
        with contextlib.suppress(FileNotFoundError):
            (self.root / "run" / "ports.json").unlink()
        self.proc, self.pid = await spawn_rmail(
            config, self.log, py_spy=py_spy, idle=idle, append=True, start_timeout=START_TIMEOUT
        )
        ports = await wait_ports(self.root, self.proc, self.log, limit=START_TIMEOUT)
        self.port = int(ports["http"])

    async def stop(self) -> list[str]:
        if self.proc is None:
            return []
        return await stop_rmail(self.proc, self.pid, self.log, STOP_TIMEOUT)


# -- the data -----------------------------------------------------------------------------------


def _kind(data: bytes) -> str:
    head = data[: data.find(b"\r\n\r\n")]
    if b"multipart/mixed" in head:
        return "attachments"
    if b"multipart/alternative" in head:
        return "alternative"
    return "plain"


@dataclass(slots=True)
class Dataset:
    uids: dict[str, list[int]] = field(default_factory=dict)  # kind -> uids
    from_hits: int = 0
    megabytes: float = 0.0
    fill_seconds: float = 0.0
    default_users: list[str] = field(default_factory=list)
    cheap_users: list[str] = field(default_factory=list)


def fill(root: Path, args: argparse.Namespace) -> Dataset:
    """alice with ``--messages`` messages in INBOX, plus the users of the first-login rows."""
    from rmail.config import AuthConfig
    from rmail.store import Store

    say(f"generating {args.messages:,} messages")
    messages = imap_bench.make_messages(args.messages, args.seed)
    data = Dataset(from_hits=sum(m.from_hit for m in messages))
    data.megabytes = sum(len(m.data) for m in messages) / 1e6
    say(f"appending {data.megabytes:.0f} MB with the store API")
    store = Store.open(
        root, fsync=False, auth=AuthConfig(**CHEAP_AUTH), hostname="mail.example.test"
    )
    start = time.perf_counter()
    try:
        store.create_user(USER, PASSWORD, quota_mb=100_000)
        folder = store.mailbox(USER).folder("INBOX")
        for i in range(0, len(messages), APPEND_BATCH):
            batch = messages[i : i + APPEND_BATCH]
            metas = folder.append_many(
                [(m.data, m.flags, int(m.date.timestamp())) for m in batch], check_quota=False
            )
            for m, meta in zip(batch, metas, strict=True):
                data.uids.setdefault(_kind(m.data), []).append(meta.uid)
        data.fill_seconds = time.perf_counter() - start
        for n in range(args.login_users * 2):
            address = f"cheap{n}@{DOMAIN}"
            store.create_user(address, PASSWORD)
            data.cheap_users.append(address)
    finally:
        store.close()
    say(f"creating {args.default_users * 2} users with the default Argon2 settings")
    store = Store.open(root, fsync=False, auth=AuthConfig(), hostname="mail.example.test")
    try:
        for n in range(args.default_users * 2):
            address = f"default{n}@{DOMAIN}"
            store.create_user(address, PASSWORD)
            data.default_users.append(address)
    finally:
        store.close()
    return data


# -- the load -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    name: str
    target: str  # rmail or peer
    clients: int
    requests: int = 0
    wall: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    first_ms: float = 0.0
    body_bytes: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    other_cpu: float = 0.0
    machine_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.wall if self.wall else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


@dataclass(frozen=True, slots=True)
class Call:
    """One request: method, path, JSON body, and a check of the decoded answer."""

    method: str
    path: str
    body: Any = None
    check: Callable[[Any], str | None] | None = None


async def _send(
    session: aiohttp.ClientSession, base: str, call: Call, headers: dict[str, str]
) -> tuple[float, bytes, str | None]:
    start = time.perf_counter()
    async with session.request(
        call.method, base + call.path, json=call.body, headers=headers
    ) as resp:
        raw = await resp.read()
        status = resp.status
    took = (time.perf_counter() - start) * 1000
    problem = None
    if status != 200:
        problem = f"{call.method} {call.path}: HTTP {status}: {raw[:200]!r}"
    elif call.check is not None:
        problem = call.check(json.loads(raw))
    return took, raw, problem


async def run_row(
    *,
    name: str,
    target: str,
    port: int,
    calls: Sequence[Call],
    clients: int,
    headers: dict[str, str],
    server_pid: int,
    warm: Call | None,
) -> tuple[Row, bytes]:
    """``calls`` spread over ``clients`` connections; ``warm`` is sent first, untimed."""
    row = Row(name, target, clients, requests=len(calls))
    base = f"http://{HOST}:{port}"
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        first_body = b""
        if warm is not None:
            row.first_ms, first_body, problem = await _send(session, base, warm, headers)
            if problem:
                row.errors.append(problem)
        todo = list(reversed(calls))

        async def worker() -> None:
            while todo:
                call = todo.pop()
                took, raw, problem = await _send(session, base, call, headers)
                row.latencies_ms.append(took)
                row.body_bytes = max(row.body_bytes, len(raw))
                if problem:
                    row.errors.append(problem)

        busy0, server0, client0 = machine_busy(), cpu_seconds(server_pid)[0], time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        row.wall = time.perf_counter() - start
        row.server_cpu = cpu_seconds(server_pid)[0] - server0
        row.client_cpu = time.process_time() - client0
        busy = machine_busy() - busy0
        row.other_cpu = max(0.0, busy - row.server_cpu - row.client_cpu)
        row.machine_seconds = row.wall * len(os.sched_getaffinity(0))
    return row, first_body


def _has_token(doc: Any) -> str | None:
    return None if isinstance(doc, dict) and doc.get("token") else "login: no token"


def _listed(count: int) -> Callable[[Any], str | None]:
    def check(doc: Any) -> str | None:
        got = len(doc.get("messages", []))
        return None if got == count else f"listing: {got} messages, expected {count}"

    return check


def _is_uid(uid: int) -> Callable[[Any], str | None]:
    def check(doc: Any) -> str | None:
        return None if doc.get("uid") == uid else f"message {uid}: got uid {doc.get('uid')}"

    return check


def _total(total: int) -> Callable[[Any], str | None]:
    def check(doc: Any) -> str | None:
        got = doc.get("total")
        return None if got == total else f"search: total {got}, expected {total}"

    return check


@dataclass(frozen=True, slots=True)
class Workload:
    """One row's name and its requests for each concurrency."""

    name: str
    group: str
    calls: Callable[[int, int], list[Call]]  # (clients, how many) -> calls
    warm: Call | None
    requests: int
    peer_name: str


def login_call(user: str) -> Call:
    return Call("POST", "/auth/login", {"username": user, "password": PASSWORD}, _has_token)


def workloads(
    data: Dataset, args: argparse.Namespace, users: list[str], argon: str
) -> list[Workload]:
    """The rows to run against one rmail start (``argon``: "default" or "cheap")."""
    per = len(users) // 2
    rows = [
        Workload(
            f"login first ({argon} Argon2)",
            "login",
            lambda c, n: [login_call(u) for u in (users[:per] if c == 1 else users[per:])],
            None,
            per,
            "login",
        ),
        Workload(
            f"login repeated ({argon} Argon2)",
            "login",
            lambda c, n: [login_call(USER)] * n,
            login_call(USER),
            args.requests if argon == "cheap" else args.requests // 2,
            "login",
        ),
    ]
    if argon == "default":
        return rows
    total = args.messages
    deep = total // 2
    rows += [
        Workload(
            "list first page",
            "list",
            lambda c, n: (
                [Call("GET", f"/folders/INBOX/messages?limit={LIMIT}", None, _listed(LIMIT))] * n
            ),
            Call("GET", f"/folders/INBOX/messages?limit={LIMIT}"),
            args.requests,
            "list",
        ),
        Workload(
            f"list offset {deep}",
            "list",
            lambda c, n: (
                [
                    Call(
                        "GET",
                        f"/folders/INBOX/messages?limit={LIMIT}&offset={deep}",
                        None,
                        _listed(LIMIT),
                    )
                ]
                * n
            ),
            Call("GET", f"/folders/INBOX/messages?limit={LIMIT}&offset={deep}"),
            args.requests,
            "list-deep",
        ),
    ]
    for kind in KINDS:
        uids = data.uids.get(kind, [])
        if not uids:
            continue

        def message_calls(c: int, n: int, uids: list[int] = uids) -> list[Call]:
            return [
                Call("GET", f"/folders/INBOX/messages/{u}?format=json", None, _is_uid(u))
                for u in (uids[i % len(uids)] for i in range(n))
            ]

        rows.append(
            Workload(
                f"message {kind}",
                "message",
                message_calls,
                Call("GET", f"/folders/INBOX/messages/{uids[-1]}?format=json"),
                args.requests,
                f"message-{kind}",
            )
        )
    query = f"/folders/INBOX/messages?from={imap_bench.SEARCH_FROM.lower()}&limit={LIMIT}"
    rows.append(
        Workload(
            f"search from={imap_bench.SEARCH_FROM.lower()}",
            "search",
            lambda c, n: [Call("GET", query, None, _total(data.from_hits))] * n,
            Call("GET", query),
            args.search_requests,
            "search",
        )
    )
    return rows


async def token_for(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://{HOST}:{port}/auth/login", json={"username": USER, "password": PASSWORD}
        ) as resp,
    ):
        doc = await resp.json()
        return str(doc["token"])


async def run_phase(
    *,
    rmail: Rmail,
    loads: list[Workload],
    args: argparse.Namespace,
    rows: list[Row],
    bodies: dict[str, Any],
    headers: dict[str, str],
) -> None:
    for load in loads:
        if args.only and load.group != args.only:
            continue
        for clients in sorted({1, args.clients}):
            say(f"rmail: {load.name}, {clients} client{'s' if clients > 1 else ''}")
            row, first = await run_row(
                name=load.name,
                target="rmail",
                port=rmail.port,
                calls=load.calls(clients, load.requests),
                clients=clients,
                headers=headers,
                server_pid=rmail.pid,
                warm=load.warm,
            )
            rows.append(row)
            if first and (load.peer_name not in bodies or load.group == "login"):
                bodies[load.peer_name] = json.loads(first)
            elif load.group == "login" and load.peer_name not in bodies:
                bodies[load.peer_name] = {
                    "token": "x" * 180,
                    "username": "alice",
                    "domain": DOMAIN,
                    "expires_in": 86400,
                }


async def run_peer(
    base: Path, loads: list[Workload], args: argparse.Namespace, bodies: dict[str, Any]
) -> list[Row]:
    path = base / "peer-bodies.json"
    path.write_text(json.dumps(bodies))
    peer = await Peer.start(path)
    rows: list[Row] = []
    try:
        seen: set[str] = set()
        for load in loads:
            if load.peer_name in seen or load.peer_name not in bodies:
                continue
            seen.add(load.peer_name)
            method = "POST" if load.group == "login" else "GET"
            body = {"username": USER, "password": PASSWORD} if method == "POST" else None
            count = max(load.requests, args.requests) if load.group != "login" else args.requests
            for clients in sorted({1, args.clients}):
                say(f"peer: {load.peer_name}, {clients} client{'s' if clients > 1 else ''}")
                call = Call(method, f"/{load.peer_name}", body)
                row, _ = await run_row(
                    name=load.peer_name,
                    target="peer",
                    port=peer.port,
                    calls=[call] * count,
                    clients=clients,
                    headers={},
                    server_pid=peer.proc.pid,
                    warm=call,
                )
                rows.append(row)
    finally:
        await peer.stop()
    return rows


# -- report -------------------------------------------------------------------------------------


def machine(base: Path) -> list[str]:
    return [
        f"- CPU: {cpu_model()}; nproc {len(os.sched_getaffinity(0))}; kernel {platform.release()}; "
        f"Python {platform.python_version()}; aiohttp {aiohttp.__version__}",
        f"- rmail commit {rmail_commit()}; load average at start {load_average()}",
    ]


def peer_name_of(name: str) -> str:
    if name.startswith("login"):
        return "login"
    if name == "list first page":
        return "list"
    if name.startswith("list offset"):
        return "list-deep"
    if name.startswith("message "):
        return "message-" + name.split()[1]
    return "search"


def table(rows: Sequence[Row]) -> list[str]:
    peers = {(r.name, r.clients): r for r in rows if r.target == "peer"}
    lines = [
        "| row | clients | requests | req/s | p50 ms | p99 ms | 1st ms | body KB "
        "| peer req/s | peer p50 ms | p50 ratio | req/s ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r.target != "rmail":
            continue
        p = peers.get((peer_name_of(r.name), r.clients))
        first = f"{r.first_ms:.1f}" if r.first_ms else "-"
        cells = [
            r.name,
            str(r.clients),
            str(r.requests),
            f"{r.rate:.0f}",
            f"{r.p50:.1f}",
            f"{r.pct(99):.1f}",
            first,
            f"{r.body_bytes / 1024:.1f}",
        ]
        if p is not None and p.p50 and p.rate:
            cells += [
                f"{p.rate:.0f}",
                f"{p.p50:.2f}",
                f"{r.p50 / p.p50:.1f}x",
                f"{p.rate / r.rate:.1f}x" if r.rate else "-",
            ]
        else:
            cells += ["-", "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| row | target | clients | server CPU s | server CPU per request ms | client CPU s "
        "| other processes CPU s (of machine s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        per = r.server_cpu / r.requests * 1000 if r.requests else 0.0
        lines.append(
            f"| {r.name} | {r.target} | {r.clients} | {r.server_cpu:.2f} | {per:.2f} | "
            f"{r.client_cpu:.2f} | {r.other_cpu:.2f} ({r.machine_seconds:.1f}) |"
        )
    return lines


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages in INBOX")
    parser.add_argument("--requests", type=int, default=1000, help="requests per row")
    parser.add_argument(
        "--search-requests", type=int, default=20, help="requests of the search rows"
    )
    parser.add_argument(
        "--login-users", type=int, default=200, help="users per first-login row (cheap Argon2)"
    )
    parser.add_argument(
        "--default-users", type=int, default=16, help="users per first-login row (default Argon2)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated messages")
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 200 requests")
    parser.add_argument("--only", choices=GROUPS, help="run one group of rows")
    parser.add_argument("--no-peer", action="store_true", help="rmail rows only")
    parser.add_argument("--dir", help="parent of the temp dir (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--py-spy", metavar="PATH", help="run rmail under py-spy (cheap phase)")
    parser.add_argument(
        "--py-spy-idle", action="store_true", help="with --py-spy: sample waiting threads too"
    )
    parser.add_argument("--peer", metavar="BODIES", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 2000)
        args.requests = min(args.requests, 200)
        args.search_requests = min(args.search_requests, 10)
        args.login_users = min(args.login_users, 50)
        args.default_users = min(args.default_users, 4)
    if args.messages < 2 * LIMIT or args.requests < 1 or args.clients < 1:
        parser.error(f"--messages must be >= {2 * LIMIT}, --requests and --clients >= 1")
    return args


async def amain(args: argparse.Namespace) -> int:
    rows: list[Row] = []
    problems: list[str] = []
    with scratch_dir("rmail-bench-api-", args.dir, args.keep) as base:
        info = machine(base)
        sys.path.insert(0, str(REPO))
        rmail = Rmail(base)
        data = await asyncio.to_thread(fill, rmail.root, args)
        bodies: dict[str, Any] = {}
        loads: list[Workload] = []
        if args.only in (None, "login"):
            say("rmail with the default Argon2 settings")
            await rmail.start(None)
            try:
                default_loads = workloads(data, args, data.default_users, "default")
                loads += default_loads
                await run_phase(
                    rmail=rmail,
                    loads=default_loads,
                    args=args,
                    rows=rows,
                    bodies=bodies,
                    headers={},
                )
            finally:
                problems += await rmail.stop()
        say("rmail with cheap Argon2")
        await rmail.start(CHEAP_AUTH, Path(args.py_spy) if args.py_spy else None, args.py_spy_idle)
        try:
            headers = {"Authorization": f"Bearer {await token_for(rmail.port)}"}
            cheap_loads = workloads(data, args, data.cheap_users, "cheap")
            loads += cheap_loads
            await run_phase(
                rmail=rmail, loads=cheap_loads, args=args, rows=rows, bodies=bodies, headers=headers
            )
        finally:
            problems += await rmail.stop()
        if not args.no_peer:
            rows += await run_peer(base, loads, args, bodies)
        print("# JSON API benchmark (bench/api.py)\n")
        print("\n".join(info))
        kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(data.uids.items()))
        print(
            f"- workload: {args.messages:,} messages in INBOX ({data.megabytes:.0f} MB; {kinds}; "
            f"{data.from_hits} from {imap_bench.SEARCH_FROM}), filled in "
            f"{data.fill_seconds:.1f} s; "
            f"1 and {args.clients} concurrent connections; store.fsync true\n"
        )
        print("\n".join(table(rows)))
        print()
        lists = [r for r in rows if r.target == "rmail" and r.name.startswith("list")]
        if lists:
            worst = max(r.p50 for r in lists)
            verdict = "met" if worst < TARGET_LIST_P50_MS else "**missed**"
            print(
                f"- listing target (p50 under {TARGET_LIST_P50_MS:.0f} ms): {verdict} "
                f"(worst p50 {worst:.1f} ms)"
            )
        cpus = len(os.sched_getaffinity(0))
        other = sum(r.other_cpu for r in rows)
        available = sum(r.machine_seconds for r in rows)
        noisy = [
            f"{r.target} {r.name} x{r.clients}"
            for r in rows
            if r.machine_seconds >= 1 and r.other_cpu > NOISY * r.machine_seconds
        ]
        print(
            f"- other processes used {other:.1f} of {available:.1f} CPU s ({cpus} CPUs) over "
            "the timed rows"
            + (
                f"; over {NOISY:.0%} of the machine during {len(noisy)} of {len(rows)} rows"
                + (f" ({', '.join(noisy)})" if len(noisy) <= 5 else "")
                + ": figures there are pessimistic"
                if noisy
                else ""
            )
        )
        for r in rows:
            for e in r.errors[:3]:
                problems.append(f"{r.target} {r.name} x{r.clients}: {e}")
        for p in problems:
            print(f"- PROBLEM: {p}")
        if args.json:
            out = {
                "machine": info,
                "rows": [dataclasses.asdict(r) for r in rows],
                "problems": problems,
            }
            await asyncio.to_thread(write_json, args.json, out)
        return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peer:
        asyncio.run(_peer_main(Path(args.peer)))
        return 0
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
