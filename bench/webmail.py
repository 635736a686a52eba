"""Benchmark of the webmail: the inbox page of a 10,000-message folder and a message view,
against a bare aiohttp + jinja2 server rendering pages of the same size (the floor).

Run from the repository root::

    .venv/bin/python bench/webmail.py                  # 10,000 messages, 300 requests each
    .venv/bin/python bench/webmail.py --quick          # 2,000 messages, 100 requests each
    .venv/bin/python bench/webmail.py --json /tmp/webmail.json
    .venv/bin/python bench/webmail.py --py-spy /tmp/spy.txt   # sample rmail while it runs

Servers (each its own process on 127.0.0.1, started and stopped by this script):

1. ``rmail``: ``python -m rmail serve`` with a fresh config in a temp dir (every port 0, log
   level WARNING, cheap argon2, ``store.fsync`` at its default, true); ``alice@example.test``
   is made with ``Store.create_user`` and her INBOX filled with ``--messages`` realistic
   messages (``Folder.append_many``, untimed) before the start; the HTTP port is read from
   ``run/ports.json``. The client logs in through the login form and keeps the cookie.
2. ``floor``: this script with ``--floor-server``: aiohttp with aiohttp-jinja2, one template
   per page made of the same markup as rmail's (50 message rows of the same messages, the
   same sidebar; a message page with the same headers and body), no session, no store: what
   any aiohttp + jinja2 page of that size costs on this machine.

Workload, the same for both: ``--requests`` GETs one after another on one keep-alive
connection, after ``--warmup`` untimed ones: the inbox page (first page, 50 newest of the
folder) and a message view (a random message of the folder each time; rmail marks it seen,
which is a store write with fsync). Figures: p50/p99/max of the wall time from sending the
request to the last byte read, and the server's CPU time per request (from /proc, so it does
not count time the server waited for a CPU the other load on this shared machine had).

Output: Markdown on stdout (machine, CPU used by other processes during the run, table with
``rmail | floor``, target: inbox p50 under 50 ms); ``--json PATH`` writes the figures too.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any, Final

import aiohttp

from common import (
    CHEAP_AUTH,
    HOST,
    PASSWORD,
    REPO,
    USER,
    child_env,
    cpu_model,
    cpu_of,
    free_port,
    load_average,
    log_tail,
    machine_busy,
    py_spy_exe,
    rmail_config,
    scratch_dir,
    wait_ports,
    write_config,
    write_json,
)

TARGET_P50_MS: Final = 50.0
START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 20.0
ROW: Final = b'class="message-row'
DETAIL: Final = b'class="msg-detail"'


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


WORDS: Final = _words(
    "meeting report budget travel invoice review draft plan schedule update notes lunch project "
    "deadline release server backup contract offer holiday photos agenda minutes"
)
NAMES: Final = _words("Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- messages --------------------------------------------------------------------------------


def make_message(rng: random.Random, i: int) -> bytes:
    msg = EmailMessage()
    name = rng.choice(NAMES)
    msg["From"] = f"{name} {rng.choice(NAMES)}son <{name.lower()}{i % 97}@example.org>"
    msg["To"] = USER
    msg["Subject"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))).capitalize()
    msg["Date"] = "Mon, 2 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<bench-{i}@example.org>"
    body = "\n\n".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) for _ in range(4)
    )
    msg.set_content(body)
    if i % 3 == 0:
        msg.add_alternative(f"<p>{body.replace(chr(10), '<br>')}</p>", subtype="html")
    if i % 10 == 0:
        msg.add_attachment(
            rng.randbytes(4000), maintype="application", subtype="pdf", filename="doc.pdf"
        )
    return msg.as_bytes(policy=SMTP)


def fill_store(root: Path, count: int, seed: int) -> list[int]:
    sys.path.insert(0, str(REPO))
    from rmail.config import AuthConfig
    from rmail.store import Store

    store = Store.open(root, fsync=False, auth=AuthConfig(**CHEAP_AUTH))
    try:
        store.create_user(USER, PASSWORD)
        inbox = store.mailbox(USER).folder("INBOX")
        rng = random.Random(seed)
        uids: list[int] = []
        start = 1_700_000_000
        for first in range(0, count, 1000):
            batch = [
                (make_message(rng, i), ["\\Seen"] if rng.random() < 0.7 else [], start + i * 60)
                for i in range(first, min(count, first + 1000))
            ]
            uids += [m.uid for m in inbox.append_many(batch)]
        return uids
    finally:
        store.close()


# -- processes -------------------------------------------------------------------------------


def spawn(cmd: Sequence[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs
        )


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def wait_http(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {log_tail(log, 2000)}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"http://{HOST}:{port}/health") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server did not answer within {START_TIMEOUT}s")


async def start_rmail(base: Path) -> Server:
    root = base / "data"
    path = write_config(base / "config.json", rmail_config(root))
    log = base / "rmail.log"
    (root / "run" / "ports.json").unlink(missing_ok=True)
    proc = spawn(
        [sys.executable, "-m", "rmail", "serve", "--config", str(path)],
        log,
        cwd=base,
        env=child_env(),
    )
    try:
        ports = await wait_ports(root, proc, log, limit=START_TIMEOUT, poll=0.1)
    except RuntimeError:
        proc.kill()
        raise
    port = int(ports["http"])
    await wait_http(port, proc, log)
    return Server("rmail", proc, port, log)


async def start_floor(base: Path, pages: Path) -> Server:
    log = base / "floor.log"
    port = free_port()
    proc = spawn(
        [sys.executable, __file__, "--floor-server", str(port), "--floor-pages", str(pages)], log
    )
    await wait_http(port, proc, log)
    return Server("floor", proc, port, log)


# -- the floor: bare aiohttp + jinja2 --------------------------------------------------------

FLOOR_LIST: Final = """<!DOCTYPE html><html><head><meta charset="utf-8">
<title>INBOX</title>
<link rel="stylesheet" href="http://{{ host }}/static/style.css"></head><body>
<header class="topbar"><span class="current-user">{{ user }}</span></header>
<aside class="sidebar"><ul>{% for f in folders %}<li class="folder-item" data-folder="{{ f }}">
<a href="http://{{ host }}/webmail/mail/{{ f }}">{{ f }}</a></li>{% endfor %}</ul></aside>
<main class="content"><section class="message-list"><form method="post"><table><tbody>
{% for row in rows %}<tr class="message-row{% if row.unread %} unread{% endif %}"
data-uid="{{ row.uid }}" data-folder="INBOX" data-flags="{{ row.flags|join(' ') }}">
<td class="sel"><input type="checkbox" name="uid" value="{{ row.uid }}"
aria-label="Select message from {{ row.sender }}"></td>
<td class="message-from" title="{{ row.address }}">{{ row.sender }}</td>
<td class="message-subject">
<a class="message-link" href="http://{{ host }}/webmail/mail/INBOX/{{ row.uid }}">
{{ row.subject }}</a><span class="preview">{{ row.preview }}</span></td>
<td class="date"><time class="message-date" datetime="{{ row.date }}">{{ row.label }}</time>
</td></tr>
{% endfor %}</tbody></table></form></section>{{ pad }}</main></body></html>"""
FLOOR_MESSAGE: Final = """<!DOCTYPE html><html><head><meta charset="utf-8">
<title>{{ subject }}</title></head><body><aside class="sidebar"><ul>
{% for f in folders %}<li class="folder-item" data-folder="{{ f }}">
<a href="http://{{ host }}/webmail/mail/{{ f }}">{{ f }}</a></li>
{% endfor %}</ul></aside><main class="content"><article class="msg-detail">
<h1 class="msg-subject">{{ subject }}</h1><dl><dt>From</dt><dd class="msg-from">{{ sender }}</dd>
</dl><div class="msg-body"><pre>{{ body }}</pre></div></article>{{ pad }}</main></body></html>"""


def floor_server(port: int, pages: Path) -> None:
    """The floor: aiohttp + aiohttp-jinja2 rendering pages of rmail's size from memory."""
    import aiohttp_jinja2
    import jinja2
    from aiohttp import web

    data = json.loads(pages.read_text())
    app = web.Application()
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.DictLoader({"list.html": FLOOR_LIST, "message.html": FLOOR_MESSAGE}),
        autoescape=True,
    )

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def inbox(request: web.Request) -> web.Response:
        return aiohttp_jinja2.render_template("list.html", request, data["list"])

    async def message(request: web.Request) -> web.Response:
        return aiohttp_jinja2.render_template("message.html", request, data["message"])

    app.router.add_get("/health", health)
    app.router.add_get("/webmail/mail/INBOX", inbox)
    app.router.add_get("/webmail/mail/INBOX/{uid}", message)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None)


def floor_pages(list_html: str, message_html: str, path: Path) -> None:
    """Data for the floor's templates, taken from rmail's pages, padded to the same size."""
    rows = []
    for match in re.finditer(
        r'data-uid="(\d+)".*?data-flags="([^"]*)".*?title="([^"]*)">([^<]*)<.*?'
        r'class="message-link"[^>]*>([^<]*)<.*?class="preview">([^<]*)<.*?datetime="([^"]*)">'
        r"([^<]*)<",
        list_html,
        re.DOTALL,
    ):
        uid, flags, address, sender, subject, preview, date, label = match.groups()
        rows.append(
            {
                "uid": uid,
                "flags": flags.split(),
                "unread": "\\Seen" not in flags,
                "address": address,
                "sender": sender,
                "subject": subject,
                "preview": preview,
                "date": date,
                "label": label,
            }
        )
    folders = re.findall(r'class="folder-item[^"]*" data-folder="([^"]*)"', list_html)
    body = re.search(r"<pre[^>]*>(.*?)</pre>", message_html, re.DOTALL)
    common = {"host": "127.0.0.1:9002", "user": USER, "folders": folders, "pad": ""}
    data = {
        "list": {**common, "rows": rows},
        "message": {
            **common,
            "subject": "subject",
            "sender": "sender",
            "body": body.group(1) if body else "",
        },
    }
    # Pad each to the byte size of rmail's page, so that both send as much.
    import jinja2

    env = jinja2.Environment(autoescape=True)
    for key, template, target in (
        ("list", FLOOR_LIST, list_html),
        ("message", FLOOR_MESSAGE, message_html),
    ):
        size = len(env.from_string(template).render(data[key]).encode())
        data[key]["pad"] = " " * max(0, len(target.encode()) - size)
    path.write_text(json.dumps(data))


# -- the workload ----------------------------------------------------------------------------


@dataclass
class Figure:
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms: float
    bytes: int
    n: int


async def login(session: aiohttp.ClientSession, port: int) -> None:
    async with session.post(
        f"http://{HOST}:{port}/webmail/login",
        data={"username": USER, "password": PASSWORD},
        allow_redirects=False,
    ) as response:
        if response.status != 303:
            raise RuntimeError(f"login answered {response.status}: {await response.text()}")


async def measure(
    session: aiohttp.ClientSession,
    server: Server,
    paths: Sequence[str],
    warmup: int,
    expect: bytes,
) -> Figure:
    """Time GETs of ``paths`` (the first ``warmup`` untimed); each answer must hold ``expect``."""
    times: list[float] = []
    size = 0
    for i, path in enumerate(paths):
        if i == warmup:
            cpu0 = cpu_of(server.proc.pid)
        t0 = time.perf_counter()
        async with session.get(f"http://{HOST}:{server.port}{path}") as response:
            body = await response.read()
            if response.status != 200 or expect not in body:
                raise RuntimeError(f"{server.name} {path}: {response.status} {body[:300]!r}")
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            size = len(body)
    cpu = cpu_of(server.proc.pid) - cpu0
    times.sort()
    return Figure(
        p50_ms=statistics.median(times) * 1000,
        p99_ms=times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        max_ms=times[-1] * 1000,
        cpu_ms=cpu / len(times) * 1000,
        bytes=size,
        n=len(times),
    )


async def start_py_spy(pid: int, out: str) -> subprocess.Popen[bytes] | None:
    exe = py_spy_exe()
    if exe is None:
        say("py-spy not found")
        return None
    proc = spawn(
        [exe, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "-o", out],
        Path(out + ".log"),
    )
    await asyncio.sleep(1.0)
    return proc


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    say(f"filling INBOX with {args.messages:,} messages")
    t0 = time.perf_counter()
    uids = await asyncio.to_thread(fill_store, base / "data", args.messages, args.seed)
    say(f"filled in {time.perf_counter() - t0:.1f} s")
    rng = random.Random(args.seed)
    n = args.warmup + args.requests
    list_paths = ["/webmail/mail/INBOX"] * n
    message_paths = [f"/webmail/mail/INBOX/{rng.choice(uids)}" for _ in range(n)]
    results: dict[str, Any] = {"servers": {}}
    busy0, wall0 = machine_busy(), time.perf_counter()
    own_cpu0 = time.process_time()
    servers_cpu = 0.0
    rmail = await start_rmail(base)
    spy = await start_py_spy(rmail.proc.pid, args.py_spy) if args.py_spy else None
    try:
        # unsafe=True: aiohttp's jar refuses cookies from an IP address otherwise.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            await login(session, rmail.port)
            say("rmail: inbox page")
            inbox = await measure(session, rmail, list_paths, args.warmup, ROW)
            say("rmail: message view")
            message = await measure(session, rmail, message_paths, args.warmup, DETAIL)
            async with session.get(f"http://{HOST}:{rmail.port}{list_paths[0]}") as r:
                list_html = await r.text()
            async with session.get(f"http://{HOST}:{rmail.port}{message_paths[0]}") as r:
                message_html = await r.text()
        results["servers"]["rmail"] = {"inbox": asdict(inbox), "message": asdict(message)}
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        servers_cpu += cpu_of(rmail.proc.pid)
        rmail.stop()
    floor_pages(list_html, message_html, base / "floor.json")
    floor = await start_floor(base, base / "floor.json")
    try:
        async with aiohttp.ClientSession() as session:
            say("floor: inbox page")
            f_inbox = await measure(session, floor, list_paths, args.warmup, ROW)
            say("floor: message view")
            f_message = await measure(session, floor, message_paths, args.warmup, DETAIL)
        results["servers"]["floor"] = {"inbox": asdict(f_inbox), "message": asdict(f_message)}
    finally:
        servers_cpu += cpu_of(floor.proc.pid)
        floor.stop()
    wall = time.perf_counter() - wall0
    busy = machine_busy() - busy0
    own = time.process_time() - own_cpu0
    results["cpu"] = {
        "wall_s": wall,
        "servers_s": servers_cpu,
        "client_s": own,
        "others_s": max(0.0, busy - servers_cpu - own),
        "available_s": wall * len(os.sched_getaffinity(0)),
    }
    return results


def machine() -> str:
    return (
        f"CPU: {cpu_model()}; nproc {len(os.sched_getaffinity(0))}; kernel {platform.release()}; "
        f"Python {platform.python_version()}; load average at start {load_average()}"
    )


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    rm, fl = results["servers"]["rmail"], results["servers"]["floor"]
    lines = [
        f"# Webmail: {args.messages:,} messages in INBOX, {args.requests} requests per page "
        f"after {args.warmup} untimed",
        "",
        f"- {results['machine']}",
        "- CPU during the run: servers {servers_s:.1f} s, client {client_s:.1f} s, other "
        "processes {others_s:.1f} s (of {available_s:.0f} s available in {wall_s:.0f} s)".format(
            **results["cpu"]
        ),
        "",
        "| page | rmail p50 ms | p99 ms | max ms | CPU ms/req | floor p50 ms | p99 ms | "
        "CPU ms/req | bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("inbox", "inbox (first 50 of the folder)"), ("message", "message view")):
        a, b = rm[key], fl[key]
        lines.append(
            f"| {label} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} | {a['max_ms']:.1f} | "
            f"{a['cpu_ms']:.1f} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} | {b['cpu_ms']:.1f} | "
            f"{a['bytes']:,} |"
        )
    ok = rm["inbox"]["p50_ms"] < TARGET_P50_MS
    lines += [
        "",
        f"Target: inbox page p50 under {TARGET_P50_MS:.0f} ms: "
        f"{'met' if ok else 'MISSED'} ({rm['inbox']['p50_ms']:.1f} ms).",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages in INBOX")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first")
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 100 requests")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated messages")
    parser.add_argument("--dir", help="parent of the temp dir (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--py-spy", metavar="PATH", help="sample rmail with py-spy (raw)")
    parser.add_argument("--floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--floor-pages", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 2000)
        args.requests = min(args.requests, 100)
    if args.messages < 50 or args.requests < 1 or args.warmup < 1:
        parser.error("--messages must be >= 50, --requests >= 1, --warmup >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floor_server is not None:
        floor_server(args.floor_server, Path(args.floor_pages))
        return 0
    with scratch_dir("rmail-bench-webmail-", args.dir, args.keep, note=say) as base:
        start_machine = machine()
        results = asyncio.run(run(args, base))
        results["machine"] = start_machine
        print(render(results, args))
        if args.json:
            write_json(args.json, results)
        return 0 if results["servers"]["rmail"]["inbox"]["p50_ms"] < TARGET_P50_MS else 1


if __name__ == "__main__":
    sys.exit(main())
