"""Benchmark of CalDAV: rmail against a private Radicale, same requests, one run.

Run from the repository root::

    .venv/bin/python bench/caldav.py                   # 2,000 events, median of 3 per read step
    .venv/bin/python bench/caldav.py --quick           # 500 events, 1 run per read step
    .venv/bin/python bench/caldav.py --json /tmp/caldav.json
    .venv/bin/python bench/caldav.py --only rmail --py-spy /tmp/spy.txt   # profile rmail

Servers (each in its own process, on 127.0.0.1, started and stopped by this script):

1. ``rmail``: ``python -m rmail serve`` with a fresh config in a temp dir (every port 0,
   cheap Argon2 as in tests/conftest.py, log level WARNING, ``store.fsync`` at its default,
   true); ``alice@example.test`` is created with ``Store.create_user`` before the start and
   the HTTP port is read from ``run/ports.json``. Calendars live at
   ``/dav/calendars/alice@example.test/{cal}/``.
2. ``radicale``: ``python -m radicale --config FILE`` (the Radicale in this venv) with its
   own config: a free port, ``auth.type = htpasswd`` with a plain-text htpasswd holding
   ``alice@example.test``, no auth delay, ``rights.type = owner_only``, its own
   ``filesystem_folder``, ``_filesystem_fsync`` at its default (true), logging at warning.
   Calendars live at ``/alice@example.test/{cal}/``. Its built-in server (wsgiref) answers
   HTTP/1.0 and closes the connection after each request; rmail keeps it open.

Workload, the same request bodies for both (only the path prefix differs), HTTP Basic auth,
raw HTTP with aiohttp from this process (``--seed`` fixes the events):

- MKCALENDAR ``bench-1`` and ``bench-8`` (not timed);
- PUT ``--events`` (2,000) events, ``If-None-Match: *``, into ``bench-1`` from 1 client,
  then the same events into ``bench-8`` from 8 concurrent clients. 10 % of them recur
  weekly (RRULE with COUNT, UNTIL or no end, TZID Europe/Berlin with its VTIMEZONE), about
  half of those with 1-3 EXDATEs and about a third with 1-2 RECURRENCE-ID overrides in the
  same resource (moved by a few hours or a day); the others are single UTC events spread
  over 2026, a few all-day or spanning days;
- on ``bench-1``: a calendar-query REPORT (Depth 1) for VEVENTs overlapping March 2026
  (comp-filter VCALENDAR / VEVENT with time-range), asking for getetag and calendar-data;
- a calendar-multiget REPORT of 100 hrefs (random, fixed by the seed) asking for getetag
  and calendar-data;
- sync-collection: the current token from PROPFIND (DAV:sync-token, Depth 0), then 10
  events changed by PUT (their SUMMARY and SEQUENCE), both untimed; the timed figure is the
  sync-collection REPORT with that token (getetag), which must list exactly those 10;
- every read step runs ``--repeat`` (3) times, the median is shown; each sync round
  changes 10 other events.

Checks: every PUT answers 201, every REPORT 207 with 200 propstats; both servers must give
the same set of UIDs for the month, the multiget must return 100 bodies and the sync the 10
changed hrefs. A mismatch is printed under the table and the exit status is 1.

Throughput: PUT in events/s; calendar-query and multiget in events returned per second;
sync in requests per second (one REPORT). The ratio is rmail's throughput over Radicale's;
the target (issue #7) is 2x or more on every step. The client shares the machine with the
server: its CPU seconds, the server's and everyone else's (other engineers share this
2-core machine) are reported.

Output: Markdown on stdout; ``--json PATH`` writes the figures as JSON too. Progress goes
to stderr. ``--py-spy PATH`` samples rmail (raw collapsed stacks, py-spy from the venv).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import random
import re
import signal
import statistics
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp

from common import (
    HOST,
    PASSWORD,
    USER,
    attach_py_spy,
    child_env,
    cpu_model,
    cpu_of,
    create_user,
    filesystem_of,
    free_port,
    load_average,
    log_problems,
    log_tail,
    machine_busy,
    rmail_commit,
    rmail_config,
    rss_mb,
    say,
    scratch_dir,
    spawn_rmail,
    stop_process,
    stop_py_spy,
    wait_ports,
    write_config,
    write_json,
)

TARGET_RATIO: Final = 2.0
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 20.0
CLIENTS: Final = 8
MULTIGET: Final = 100
CHANGES: Final = 10
RECURRING_SHARE: Final = 0.1  # 200 of 2,000 (issue #7)
DAV: Final = "DAV:"
CALDAV: Final = "urn:ietf:params:xml:ns:caldav"
MONTH_START: Final = "20260301T000000Z"
MONTH_END: Final = "20260401T000000Z"
YEAR: Final = datetime(2026, 1, 1, tzinfo=UTC)

# -- events ---------------------------------------------------------------------------------

BERLIN: Final = (
    "BEGIN:VTIMEZONE\r\n"
    "TZID:Europe/Berlin\r\n"
    "BEGIN:DAYLIGHT\r\n"
    "TZOFFSETFROM:+0100\r\n"
    "TZOFFSETTO:+0200\r\n"
    "TZNAME:CEST\r\n"
    "DTSTART:19700329T020000\r\n"
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n"
    "END:DAYLIGHT\r\n"
    "BEGIN:STANDARD\r\n"
    "TZOFFSETFROM:+0200\r\n"
    "TZOFFSETTO:+0100\r\n"
    "TZNAME:CET\r\n"
    "DTSTART:19701025T030000\r\n"
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n"
    "END:STANDARD\r\n"
    "END:VTIMEZONE\r\n"
)
SUMMARIES: Final = (
    "Team stand-up",
    "1:1 with {name}",
    "Quarterly planning",
    "Dentist",
    "Lunch with {name}",
    "Release review",
    "Customer call: {name}",
    "Budget meeting",
    "Flight to Lisbon",
    "Yoga",
    "Board meeting",
    "Interview: {name}",
    "Sprint retrospective",
    "Parents' evening",
    "Architecture review",
)
NAMES: Final = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan")
PLACES: Final = ("Room 4.12", "Café Central", "https://meet.example.org/abc-defg", "Office", "")


@dataclass(frozen=True, slots=True)
class Event:
    name: str  # resource name, e.g. ev-00042.ics
    uid: str
    recurring: bool
    start: datetime
    lines: tuple[str, ...]  # the VEVENT(s) and VTIMEZONE, without the VCALENDAR wrapper

    def body(self, summary_suffix: str = "", sequence: int = 0) -> bytes:
        lines = [
            line.replace("SUMMARY:", "SUMMARY:" + summary_suffix, 1)
            if line.startswith("SUMMARY:")
            else line
            for line in self.lines
        ]
        if sequence:
            lines = [f"SEQUENCE:{sequence}" if ln.startswith("SEQUENCE:") else ln for ln in lines]
        return (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//rmail//bench-caldav//EN\r\n"
            + "".join(line + "\r\n" for line in lines)
            + "END:VCALENDAR\r\n"
        ).encode()


def _utc(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _local(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%S")


def make_events(count: int, seed: int) -> list[Event]:
    """``count`` deterministic events: 10 % weekly recurring, the rest single, over 2026."""
    rng = random.Random(seed)
    recurring_ids = set(rng.sample(range(count), round(count * RECURRING_SHARE)))
    stamp = "20251201T090000Z"
    out: list[Event] = []
    for n in range(count):
        uid = f"{seed}-{n:05d}-{rng.getrandbits(40):010x}@bench.example.test"
        summary = rng.choice(SUMMARIES).format(name=rng.choice(NAMES))
        place = rng.choice(PLACES)
        common = [
            f"UID:{uid}",
            f"DTSTAMP:{stamp}",
            f"SUMMARY:{summary}",
            "SEQUENCE:0",
        ]
        if place:
            common.append(f"LOCATION:{place}")
        if rng.random() < 0.5:
            common.append(
                "DESCRIPTION:Agenda: "
                + " ".join(
                    rng.choice(("review", "plan", "notes", "actions", "risks")) for _ in range(12)
                )
            )
        if n in recurring_ids:
            # Weekly, in local time, starting between mid-2025 and the end of 2026.
            first = datetime(2025, 6, 2, 8, 0) + timedelta(
                days=rng.randrange(0, 540), hours=rng.randrange(0, 10), minutes=rng.choice((0, 30))
            )
            length = timedelta(minutes=rng.choice((30, 45, 60, 90)))
            kind = rng.random()
            if kind < 0.4:
                rule = f"FREQ=WEEKLY;COUNT={rng.randint(4, 52)}"
            elif kind < 0.7:
                until = first + timedelta(weeks=rng.randint(4, 40))
                rule = f"FREQ=WEEKLY;UNTIL={_utc(until.replace(tzinfo=UTC))}"
            else:
                rule = "FREQ=WEEKLY"
            master = [
                "BEGIN:VEVENT",
                *common,
                f"DTSTART;TZID=Europe/Berlin:{_local(first)}",
                f"DTEND;TZID=Europe/Berlin:{_local(first + length)}",
                f"RRULE:{rule}",
            ]
            if rng.random() < 0.5:
                skipped = sorted({rng.randint(1, 6) for _ in range(rng.randint(1, 3))})
                master.append(
                    "EXDATE;TZID=Europe/Berlin:"
                    + ",".join(_local(first + timedelta(weeks=k)) for k in skipped)
                )
            else:
                skipped = []
            master.append("END:VEVENT")
            overrides: list[str] = []
            if rng.random() < 0.35:
                moved = [
                    k for k in sorted({rng.randint(1, 8) for _ in range(2)}) if k not in skipped
                ]
                for k in moved[: rng.randint(1, 2)]:
                    original = first + timedelta(weeks=k)
                    shifted = original + rng.choice((timedelta(hours=2), timedelta(days=1)))
                    overrides += [
                        "BEGIN:VEVENT",
                        f"UID:{uid}",
                        f"DTSTAMP:{stamp}",
                        f"RECURRENCE-ID;TZID=Europe/Berlin:{_local(original)}",
                        f"SUMMARY:{summary} (moved)",
                        "SEQUENCE:1",
                        f"DTSTART;TZID=Europe/Berlin:{_local(shifted)}",
                        f"DTEND;TZID=Europe/Berlin:{_local(shifted + length)}",
                        "END:VEVENT",
                    ]
            lines = tuple(BERLIN.rstrip("\r\n").split("\r\n")) + tuple(master) + tuple(overrides)
            out.append(Event(f"ev-{n:05d}.ics", uid, True, first.replace(tzinfo=UTC), lines))
            continue
        start = YEAR + timedelta(
            days=rng.randrange(0, 365), hours=rng.randrange(6, 20), minutes=rng.choice((0, 15, 30))
        )
        shape = rng.random()
        if shape < 0.05:  # all day
            day = start.date()
            times = [
                f"DTSTART;VALUE=DATE:{day:%Y%m%d}",
                f"DTEND;VALUE=DATE:{day + timedelta(days=1):%Y%m%d}",
            ]
        elif shape < 0.08:  # several days
            times = [f"DTSTART:{_utc(start)}", f"DTEND:{_utc(start + timedelta(days=3))}"]
        else:
            minutes = rng.choice((15, 30, 30, 60, 60, 90, 120))
            times = [f"DTSTART:{_utc(start)}", f"DTEND:{_utc(start + timedelta(minutes=minutes))}"]
        lines = ("BEGIN:VEVENT", *common, *times, "END:VEVENT")
        out.append(Event(f"ev-{n:05d}.ics", uid, False, start, lines))
    return out


# -- request bodies --------------------------------------------------------------------------

CALENDAR_QUERY: Final = f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="{CALDAV}">
  <D:prop><D:getetag/><C:calendar-data/></D:prop>
  <C:filter>
    <C:comp-filter name="VCALENDAR">
      <C:comp-filter name="VEVENT">
        <C:time-range start="{MONTH_START}" end="{MONTH_END}"/>
      </C:comp-filter>
    </C:comp-filter>
  </C:filter>
</C:calendar-query>
""".encode()

MKCALENDAR: Final = f"""<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="{CALDAV}">
  <D:set><D:prop><D:displayname>Bench</D:displayname></D:prop></D:set>
</C:mkcalendar>
""".encode()

SYNC_TOKEN_PROPFIND: Final = b"""<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:sync-token/></D:prop></D:propfind>
"""


def multiget_body(hrefs: Sequence[str]) -> bytes:
    refs = "".join(f"  <D:href>{h}</D:href>\n" for h in hrefs)
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<C:calendar-multiget xmlns:D="DAV:" '
        f'xmlns:C="{CALDAV}">\n  <D:prop><D:getetag/><C:calendar-data/></D:prop>\n{refs}'
        "</C:calendar-multiget>\n"
    ).encode()


def sync_body(token: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<D:sync-collection xmlns:D="DAV:">\n'
        f"  <D:sync-token>{token}</D:sync-token>\n  <D:sync-level>1</D:sync-level>\n"
        "  <D:prop><D:getetag/></D:prop>\n</D:sync-collection>\n"
    ).encode()


class DavError(Exception):
    """An answer the benchmark did not expect."""


@dataclass(frozen=True, slots=True)
class Item:
    href: str
    status: int  # of the response or of its first propstat
    etag: str | None
    uid: str | None  # from calendar-data


_UID_LINE: Final = re.compile(r"^UID:(.*?)\r?$", re.MULTILINE)


def parse_multistatus(body: bytes) -> tuple[list[Item], str | None]:
    """The responses of a 207 and its sync-token."""
    root = ET.fromstring(body)
    items: list[Item] = []
    for response in root.findall(f"{{{DAV}}}response"):
        # Radicale sends "@" as %40: compare hrefs decoded.
        href = urllib.parse.unquote((response.findtext(f"{{{DAV}}}href") or "").strip())
        status_text = response.findtext(f"{{{DAV}}}status")
        etag: str | None = None
        uid: str | None = None
        status = 0
        for propstat in response.findall(f"{{{DAV}}}propstat"):
            code = int((propstat.findtext(f"{{{DAV}}}status") or "HTTP/1.1 0").split()[1])
            if code != 200:
                continue
            status = 200
            etag = propstat.findtext(f"{{{DAV}}}prop/{{{DAV}}}getetag")
            data = propstat.findtext(f"{{{DAV}}}prop/{{{CALDAV}}}calendar-data")
            if data:
                found = _UID_LINE.search(data)
                uid = found.group(1).strip() if found else None
        if status_text and not status:
            status = int(status_text.split()[1])
        items.append(Item(href, status, etag, uid))
    return items, root.findtext(f"{{{DAV}}}sync-token")


# -- the servers -----------------------------------------------------------------------------


class Server:
    """A started server: its name, base URL, the path of a calendar, its process and log."""

    name: str
    base_url: str
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def calendar_path(self, cal: str) -> str:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        await stop_process(self.proc, STOP_TIMEOUT)

    def log_tail(self, chars: int = 3000) -> str:
        return log_tail(self.log, chars)

    async def _wait(self, ready: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if await ready():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start in time:\n{self.log_tail()}")


class Rmail(Server):
    name = "rmail"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "mail"
        self.log = base / "rmail.log"

    def calendar_path(self, cal: str) -> str:
        return f"/dav/calendars/{USER}/{cal}/"

    def prepare(self) -> Path:
        path = write_config(self.base / "config.json", rmail_config(self.root))
        create_user(self.root)
        return path

    async def start(self) -> None:
        config = await asyncio.to_thread(self.prepare)
        self.proc, _pid = await spawn_rmail(config, self.log)
        ports = await wait_ports(self.root, self.proc, self.log, limit=START_TIMEOUT, poll=0.05)
        self.base_url = f"http://{HOST}:{ports['http']}"

    def version(self) -> str:
        return f"commit {rmail_commit()}"


class Radicale(Server):
    name = "radicale"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.log = base / "radicale.log"

    def calendar_path(self, cal: str) -> str:
        return f"/{USER}/{cal}/"

    def prepare(self) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "collections").mkdir()
        users = self.base / "users"
        users.write_text(f"{USER}:{PASSWORD}\n")
        port = free_port()
        self.base_url = f"http://{HOST}:{port}"
        conf = self.base / "config"
        conf.write_text(
            f"""[server]
hosts = {HOST}:{port}
max_connections = {4 * CLIENTS}

[auth]
type = htpasswd
htpasswd_filename = {users}
htpasswd_encryption = plain
delay = 0

[rights]
type = owner_only

[storage]
filesystem_folder = {self.base / "collections"}

[web]
type = none

[logging]
level = warning
mask_passwords = True
"""
        )
        return conf

    async def start(self) -> None:
        conf = await asyncio.to_thread(self.prepare)
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "radicale", "--config", str(conf)),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=child_env(),
                cwd=self.base,
            )
        port = int(self.base_url.rsplit(":", 1)[1])

        async def ready() -> bool:
            try:
                _reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                return False
            writer.close()
            return True

        await self._wait(ready)

    def version(self) -> str:
        import radicale

        return f"Radicale {radicale.VERSION} (_filesystem_fsync true)"


# -- the workload ----------------------------------------------------------------------------


@dataclass(slots=True)
class Figure:
    """One step on one server: wall seconds and what it moved."""

    seconds: float | None = None  # None: failed
    items: int = 0  # events stored or returned (requests for sync)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    error: str = ""
    samples: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def summarize(runs: Sequence[Figure]) -> Figure:
    failed = [f for f in runs if f.seconds is None]
    if failed:
        return failed[0]
    mid = sorted(runs, key=lambda f: f.seconds or 0.0)[len(runs) // 2]
    return Figure(
        seconds=mid.seconds,
        items=mid.items,
        server_cpu=statistics.median(f.server_cpu for f in runs),
        client_cpu=statistics.median(f.client_cpu for f in runs),
        samples=[f.seconds or 0.0 for f in runs],
    )


@dataclass(slots=True)
class Results:
    figures: dict[str, dict[str, Figure]] = field(default_factory=dict)  # step -> server -> fig
    month: dict[str, set[str]] = field(default_factory=dict)  # server -> UIDs in the month
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # server -> step -> count
    problems: list[str] = field(default_factory=list)
    cpu: list[str] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)

    def put(self, step: str, server: str, figure: Figure) -> None:
        self.figures.setdefault(step, {})[server] = figure


class Workload:
    """The requests of the benchmark against one server, with their checks."""

    def __init__(
        self,
        server: Server,
        session: aiohttp.ClientSession,
        events: list[Event],
        results: Results,
        args: argparse.Namespace,
    ) -> None:
        self.server = server
        self.session = session
        self.events = events
        self.results = results
        self.args = args
        self.authorization = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.changed = 0  # events changed so far by the sync rounds
        self.counts = results.counts.setdefault(server.name, {})

    def problem(self, text: str) -> None:
        line = f"{self.server.name}: {text}"
        self.results.problems.append(line)
        say("PROBLEM " + line)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> tuple[int, bytes, dict[str, str]]:
        headers = {**(headers or {}), "Authorization": self.authorization}
        async with self.session.request(
            method, self.server.base_url + path, data=body, headers=headers
        ) as response:
            data = await response.read()
            if response.status not in expect:
                raise DavError(f"{method} {path}: {response.status} {data[:300]!r}")
            return response.status, data, dict(response.headers)

    async def report(self, path: str, body: bytes, depth: str = "1") -> list[Item]:
        _, data, _ = await self.request(
            "REPORT",
            path,
            body,
            {"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
            expect=(207,),
        )
        return parse_multistatus(data)[0]

    async def measure(self, step: str, work: Callable[[], Awaitable[int]]) -> Figure:
        figure = Figure()
        cpu0, client0 = cpu_of(self.server.pid), time.process_time()
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.args.timeout):
                figure.items = await work()
            figure.seconds = time.perf_counter() - t0
        except TimeoutError:
            figure.error = f"timed out after {self.args.timeout:.0f} s"
        except (DavError, aiohttp.ClientError, ET.ParseError, OSError) as exc:
            figure.error = f"{type(exc).__name__}: {exc}"
        figure.server_cpu = cpu_of(self.server.pid) - cpu0
        figure.client_cpu = time.process_time() - client0
        shown = (
            f"{figure.seconds:.3f} s, {figure.rate:,.1f}/s"
            if figure.seconds is not None
            else figure.error
        )
        say(f"{self.server.name}: {step}: {shown}")
        if figure.error:
            self.problem(f"{step}: {figure.error}")
        return figure

    # -- steps ---------------------------------------------------------------------------

    async def mkcalendar(self, cal: str) -> None:
        await self.request(
            "MKCALENDAR",
            self.server.calendar_path(cal),
            MKCALENDAR,
            {"Content-Type": "application/xml; charset=utf-8"},
            expect=(201,),
        )

    async def put_all(self, cal: str, clients: int) -> None:
        path = self.server.calendar_path(cal)
        queue = list(reversed(self.events))
        headers = {"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"}

        async def client() -> int:
            done = 0
            while queue:
                event = queue.pop()
                await self.request("PUT", path + event.name, event.body(), headers, expect=(201,))
                done += 1
            return done

        async def work() -> int:
            return sum(await asyncio.gather(*(client() for _ in range(clients))))

        step = f"PUT {len(self.events):,} events, {clients} client{'s' if clients > 1 else ''}"
        self.results.put(step, self.server.name, await self.measure(step, work))

    async def month_query(self, cal: str) -> None:
        path = self.server.calendar_path(cal)
        uids: set[str] = set()

        async def work() -> int:
            items = await self.report(path, CALENDAR_QUERY)
            bad = [i for i in items if i.status != 200 or i.uid is None or not i.etag]
            if bad:
                raise DavError(f"calendar-query: {len(bad)} responses without data, {bad[0]}")
            uids.clear()
            uids.update(i.uid for i in items if i.uid is not None)
            if len(uids) != len(items):
                raise DavError(f"calendar-query: {len(items)} responses, {len(uids)} UIDs")
            return len(items)

        step = "calendar-query REPORT, one month (events returned)"
        await self.repeat(step, work)
        self.results.month[self.server.name] = set(uids)
        self.counts[step] = len(uids)

    async def multiget(self, cal: str) -> None:
        path = self.server.calendar_path(cal)
        rng = random.Random(self.args.seed * 7)
        picks = sorted(rng.sample(range(len(self.events)), min(MULTIGET, len(self.events))))
        body = multiget_body([path + self.events[p].name for p in picks])
        wanted = {self.events[p].uid for p in picks}

        async def work() -> int:
            items = await self.report(path, body)
            got = {i.uid for i in items if i.status == 200 and i.etag}
            if got != wanted:
                raise DavError(f"multiget: {len(got & wanted)} of {len(wanted)} UIDs came back")
            return len(items)

        step = f"calendar-multiget REPORT, {len(picks)} hrefs (events returned)"
        self.counts[step] = await self.repeat(step, work)

    async def sync(self, cal: str) -> None:
        path = self.server.calendar_path(cal)
        step = f"sync-collection REPORT after {CHANGES} changes (requests)"
        runs: list[Figure] = []
        last = 0
        for _ in range(self.args.repeat):
            _, data, _ = await self.request(
                "PROPFIND",
                path,
                SYNC_TOKEN_PROPFIND,
                {"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
                expect=(207,),
            )
            token = ET.fromstring(data).findtext(f".//{{{DAV}}}sync-token")
            if not token:
                self.problem("PROPFIND gave no DAV:sync-token")
                return
            targets = [
                self.events[(self.changed + k) * 37 % len(self.events)] for k in range(CHANGES)
            ]
            self.changed += CHANGES
            for event in targets:
                await self.request(
                    "PUT",
                    path + event.name,
                    event.body(f"[changed {self.changed}] ", sequence=self.changed),
                    {"Content-Type": "text/calendar; charset=utf-8"},
                    expect=(204, 201),
                )
            wanted = {path + e.name for e in targets}
            body = sync_body(token)

            async def work(wanted: set[str] = wanted, body: bytes = body) -> int:
                items = await self.report(path, body)
                got = {i.href for i in items if i.status == 200}
                if got != wanted:
                    raise DavError(
                        f"sync-collection: {len(got)} changed hrefs, {len(got & wanted)} of the "
                        f"{len(wanted)} changed; first extra {sorted(got - wanted)[:2]}"
                    )
                nonlocal last
                last = len(items)
                return 1

            runs.append(await self.measure(step, work))
            if runs[-1].seconds is None:
                break
        self.results.put(step, self.server.name, summarize(runs))
        self.counts[step] = last

    async def repeat(self, step: str, work: Callable[[], Awaitable[int]]) -> int:
        runs = []
        for _ in range(self.args.repeat):
            runs.append(await self.measure(step, work))
            if runs[-1].seconds is None:
                break
        self.results.put(step, self.server.name, summarize(runs))
        return runs[-1].items

    async def run(self) -> None:
        await self.mkcalendar("bench-1")
        await self.mkcalendar("bench-8")
        await self.put_all("bench-1", 1)
        await self.put_all("bench-8", CLIENTS)
        await self.month_query("bench-1")
        await self.multiget("bench-1")
        await self.sync("bench-1")


# -- report ----------------------------------------------------------------------------------


def machine(base: Path) -> str:
    mount, fstype, _dev = filesystem_of(base)
    return (
        f"{cpu_model()}; nproc {len(os.sched_getaffinity(0))}; kernel {platform.release()}; "
        f"Python {platform.python_version()}; aiohttp {aiohttp.__version__}; temp dir on "
        f"{fstype} ({mount}); load average at start {load_average(3)}"
    )


def _cell(f: Figure | None) -> str:
    if f is None:
        return "-"
    if f.seconds is None:
        return "failed"
    return f"{f.seconds:.3f}"


def _rate(f: Figure | None) -> str:
    return f"{f.rate:,.1f}" if f is not None and f.seconds else "-"


def render(results: Results, args: argparse.Namespace, servers: Sequence[str]) -> str:
    out = ["# CalDAV benchmark (bench/caldav.py)\n"]
    out += [f"- {k}: {v}" for k, v in results.info.items()]
    out.append(
        f"- workload: {args.events:,} events (seed {args.seed}, "
        f"{round(args.events * RECURRING_SHARE)} recurring); read steps: median of "
        f"{args.repeat} run{'s' if args.repeat > 1 else ''}; wall seconds; throughput per "
        "second (events for PUT, query and multiget; requests for sync)\n"
    )
    both = "rmail" in servers and "radicale" in servers
    out.append("| step | rmail s | Radicale s | rmail /s | Radicale /s | ratio |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    missed: list[str] = []
    for step, by in results.figures.items():
        r, d = by.get("rmail"), by.get("radicale")
        ratio = ""
        if r is not None and d is not None and r.seconds and d.seconds and d.rate:
            value = r.rate / d.rate
            ratio = f"{value:.1f}x" if value >= TARGET_RATIO else f"**{value:.1f}x**"
            if value < TARGET_RATIO:
                missed.append(step)
        elif both:
            missed.append(step)
        out.append(f"| {step} | {_cell(r)} | {_cell(d)} | {_rate(r)} | {_rate(d)} | {ratio} |")
    out.append("")
    out.append("Samples (seconds, in order) and CPU seconds of the median run:\n")
    out.append("| step | rmail runs | Radicale runs | rmail CPU | Radicale CPU | client CPU |")
    out.append("| --- | --- | --- | ---: | ---: | ---: |")
    for step, by in results.figures.items():
        r, d = by.get("rmail"), by.get("radicale")

        def runs(f: Figure | None) -> str:
            if f is None or not f.samples:
                return _cell(f)
            return ", ".join(f"{s:.3f}" for s in f.samples)

        client = " / ".join(f"{f.client_cpu:.2f}" if f else "-" for f in (r, d))
        out.append(
            f"| {step} | {runs(r)} | {runs(d)} | {r.server_cpu if r else 0:.2f} | "
            f"{d.server_cpu if d else 0:.2f} | {client} |"
        )
    out.append("")
    if both:
        out.append(
            f"- target (rmail at least {TARGET_RATIO:.0f}x Radicale's throughput on every "
            "step): "
            + ("met" if not missed else f"**missed** on {len(missed)}: {'; '.join(missed)}")
        )
        r_month, d_month = results.month.get("rmail"), results.month.get("radicale")
        if r_month is not None and d_month is not None:
            same = r_month == d_month
            out.append(
                f"- month calendar-query: rmail {len(r_month)} UIDs, Radicale {len(d_month)}: "
                + ("the same set" if same else "**different sets**")
            )
            if not same:
                results.problems.append(
                    f"month UIDs differ: only rmail {sorted(r_month - d_month)[:5]}, only "
                    f"Radicale {sorted(d_month - r_month)[:5]}"
                )
        rc, dc = results.counts.get("rmail", {}), results.counts.get("radicale", {})
        for step in sorted(set(rc) & set(dc)):
            if "calendar-query" in step:
                continue
            verdict = "the same" if rc[step] == dc[step] else "**different**"
            out.append(f"- {step}: rmail {rc[step]}, Radicale {dc[step]} responses: {verdict}")
            if rc[step] != dc[step]:
                results.problems.append(f"{step}: rmail {rc[step]}, Radicale {dc[step]}")
    for line in results.cpu:
        out.append(f"- {line}")
    for p in results.problems:
        out.append(f"- problem: {p}")
    return "\n".join(out)


def as_json(results: Results) -> dict[str, Any]:
    def fig(f: Figure) -> dict[str, Any]:
        return {
            "seconds": f.seconds,
            "items": f.items,
            "rate": f.rate,
            "samples": f.samples,
            "server_cpu": f.server_cpu,
            "client_cpu": f.client_cpu,
            "error": f.error,
        }

    return {
        "info": results.info,
        "figures": {s: {n: fig(f) for n, f in by.items()} for s, by in results.figures.items()},
        "month_uids": {n: len(u) for n, u in results.month.items()},
        "counts": results.counts,
        "cpu": results.cpu,
        "problems": results.problems,
    }


# -- main ------------------------------------------------------------------------------------


async def bench_server(
    server: Server, events: list[Event], results: Results, args: argparse.Namespace
) -> None:
    say(f"{server.name}: starting")
    await server.start()
    spy = None
    if args.py_spy and server.name == "rmail":
        spy = await attach_py_spy(server.pid, Path(args.py_spy))
    busy0, server0, client0, t0 = (
        machine_busy(),
        cpu_of(server.pid),
        time.process_time(),
        time.perf_counter(),
    )
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            await Workload(server, session, events, results, args).run()
        busy = machine_busy() - busy0
        used, client = cpu_of(server.pid) - server0, time.process_time() - client0
        wall = time.perf_counter() - t0
        results.cpu.append(
            f"{server.name} run: {wall:.0f} s wall; CPU s: server {used:.1f} (peak RSS "
            f"{rss_mb(server.pid):.0f} MB), client {client:.1f}, other processes "
            f"{max(0.0, busy - used - client):.1f} (of {wall * len(os.sched_getaffinity(0)):.0f}"
            " available)"
        )
    finally:
        if spy is not None:
            await stop_py_spy(spy, STOP_TIMEOUT)
        await server.stop()
    if server.proc.returncode not in (0, -signal.SIGTERM):
        results.problems.append(
            f"{server.name} exited with {server.proc.returncode}: {server.log_tail(1500)}"
        )
    results.problems += log_problems(
        server.name, server.log, r"(?i)\b(error|critical|traceback|exception)\b"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=2000, help="events to PUT")
    parser.add_argument("--quick", action="store_true", help="500 events, 1 run per read step")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated events")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each read step (the median is shown)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds allowed per step (Radicale is slow)"
    )
    parser.add_argument("--only", choices=("rmail", "radicale"), help="run one server")
    parser.add_argument("--dir", help="parent of the temp dir (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--py-spy", metavar="PATH", help="sample rmail with py-spy (raw, GIL)")
    args = parser.parse_args(argv)
    if args.quick:
        args.events = min(args.events, 500)
        args.repeat = 1
    if args.events < MULTIGET or args.events < 10 * CHANGES * args.repeat or args.repeat < 1:
        parser.error(f"--events must be >= {MULTIGET} and >= {10 * CHANGES} x --repeat")
    return args


async def amain(args: argparse.Namespace) -> int:
    results = Results()
    servers = [args.only] if args.only else ["rmail", "radicale"]
    with scratch_dir("rmail-bench-caldav-", args.dir, args.keep) as base:
        results.info["machine"] = machine(base)
        events = make_events(args.events, args.seed)
        size = sum(len(e.body()) for e in events)

        def having(prefix: str) -> int:
            return sum(any(ln.startswith(prefix) for ln in e.lines) for e in events)

        results.info["events"] = (
            f"{len(events):,}, {size / 1e6:.2f} MB, {sum(e.recurring for e in events)} "
            f"recurring (weekly; {having('EXDATE')} with EXDATE, {having('RECURRENCE-ID')} "
            "with RECURRENCE-ID overrides)"
        )
        for name in servers:
            server: Server = (
                Rmail(base / "rmail") if name == "rmail" else Radicale(base / "radicale")
            )
            results.info[name] = server.version()
            try:
                await bench_server(server, events, results, args)
            except (RuntimeError, OSError, DavError, aiohttp.ClientError) as exc:
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
