"""Calendar reminders: a background task that mails each user the alarms that fell due.

Every ``calendar.reminder_interval`` seconds it looks at every calendar of every enabled
user for VALARMs (RFC 5545 §3.6.6) with ACTION DISPLAY or EMAIL whose TRIGGER, relative to
the start or end of an occurrence (recurrences expanded with ``rmail.ical.occurrences``) or
absolute, lies in ``(now - CATCH_UP, now]``, and delivers one reminder message per alarm
occurrence to the owner's INBOX (EMAIL alarms too go to the owner only, not to the alarm's
ATTENDEEs). What was sent is kept per calendar in ``reminders.json``
(``Collection.state``), so a restart does not send it again; records older than the window
are dropped, which bounds the file.

Cost per tick: only the index is read for objects without alarms (which alarms an object has
is parsed once per ETag and cached); an object whose indexed span cannot reach the window,
given its alarms' largest offsets, is skipped without being read.

Order: the reminder is delivered first and recorded after, so a crash in between sends it
again on restart rather than never.

Must not: block the event loop (the scan runs in a thread), or stop on one bad object.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.policy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Final

from rmail.delivery import Delivery
from rmail.errors import NotFound, RmailError
from rmail.ical import UTC, Alarm, InvalidCalendar, alarms, occurrences, parse_calendar, span
from rmail.store import Store
from rmail.store.dav import Collection, ObjectMeta

__all__ = ["CATCH_UP", "DueReminder", "Reminders"]

logger = logging.getLogger(__name__)

# An alarm missed while the server was down (or due between two ticks) is still sent when
# it is at most this late; older ones are dropped, and so are their records.
CATCH_UP: Final = 3600.0
# Records of sent alarms are kept this long past their trigger (past the window: bounded).
_KEEP: Final = 2 * CATCH_UP
_ACTIONS: Final = ("DISPLAY", "EMAIL")
# Parsed objects with alarms kept in memory (one entry per calendar object).
_CACHE_MAX: Final = 4096


@dataclass(frozen=True, slots=True)
class DueReminder:
    """One reminder to deliver, and where to record that it was."""

    address: str
    collection: Collection
    key: str  # uid/occurrence start/alarm index: names the alarm occurrence
    trigger: float
    message: bytes


@dataclass(frozen=True, slots=True)
class _Alarms:
    """What an object's alarms need from the clock, parsed once per ETag."""

    calendar: Any
    back: float  # largest positive offset: the anchor may lie this far before the window
    ahead: float  # largest negative offset, as seconds: the anchor may lie this far after
    relative: bool
    absolute: tuple[tuple[str, int, float, Any], ...]  # (uid, alarm index, trigger, component)


class Reminders:
    """The reminder task of one server."""

    def __init__(
        self,
        store: Store,
        delivery: Delivery,
        interval: float,
        hostname: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.interval = interval
        self.hostname = hostname
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._cache: dict[tuple[str, str], tuple[str, _Alarms | None]] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reminders")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            # One broad except: a tick that fails is logged and the next one tries again.
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reminder scan failed")
            await asyncio.sleep(self.interval)

    async def tick(self) -> int:
        """Deliver the reminders due now; returns how many were sent."""
        now = self.clock()
        due = await asyncio.to_thread(self.due, now)
        sent: list[DueReminder] = []
        for reminder in due:
            report = await self.delivery.deliver(reminder.message, [reminder.address], mail_from="")
            if report.failed:
                logger.warning(
                    "reminder not delivered to=%s key=%s error=%s",
                    reminder.address,
                    reminder.key,
                    report.failed[reminder.address],
                )
                continue
            logger.info("reminder sent to=%s key=%s", reminder.address, reminder.key)
            sent.append(reminder)
        if sent:
            await asyncio.to_thread(self._record, sent, now)
        logger.debug("reminder scan done due=%d sent=%d", len(due), len(sent))
        return len(sent)

    # -- finding what is due -----------------------------------------------------------------

    def due(self, now: float) -> list[DueReminder]:
        """Every alarm occurrence with a trigger in ``(now - CATCH_UP, now]`` not sent yet."""
        out: list[DueReminder] = []
        for account in self.store.accounts.list_users():
            if not account.enabled:
                continue
            try:
                calendars = self.store.dav(account.address, "calendars")
                collections = list(calendars.collections())
            except NotFound:
                continue
            for collection in collections:
                try:
                    out.extend(self._due_in(account.address, collection, now))
                except NotFound:
                    continue  # the calendar went away meanwhile
        return out

    def _due_in(self, address: str, collection: Collection, now: float) -> list[DueReminder]:
        low = now - CATCH_UP
        sent: dict[str, Any] = collection.state("reminders").get("sent", {})
        out: list[DueReminder] = []
        for meta in collection.objects():
            info = self._alarms(collection, meta)
            if info is None:
                continue
            found: list[
                tuple[str, float, Any, Alarm | None]
            ] = []  # (key, trigger, component, alarm)
            for uid, index, trigger, component in info.absolute:
                if low < trigger <= now:
                    found.append((f"{uid}/at/{index}", trigger, component, None))
            if info.relative and _may_reach(meta, low - info.back - 1, now + info.ahead + 1):
                found.extend(_relative_due(meta, info, low, now))
            for key, trigger, component, alarm in found:
                if key in sent:
                    continue
                message = _reminder(address, component, alarm, trigger, self.hostname)
                out.append(DueReminder(address, collection, key, trigger, message))
        return out

    def _alarms(self, collection: Collection, meta: ObjectMeta) -> _Alarms | None:
        """The object's alarms, from the cache while its ETag is the same."""
        cache_key = (str(collection.path), meta.name)
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] == meta.etag:
            return cached[1]
        info = self._parse(collection, meta)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[cache_key] = (meta.etag, info)
        return info

    def _parse(self, collection: Collection, meta: ObjectMeta) -> _Alarms | None:
        try:
            data, _ = collection.read(meta.name)
            calendar, _ = parse_calendar(data)
        except (NotFound, InvalidCalendar):
            return None
        offsets: list[float] = []
        absolute: list[tuple[str, int, float, Any]] = []
        for component in calendar.subcomponents:
            for alarm in alarms(component):
                if alarm.action not in _ACTIONS:
                    continue
                if alarm.offset is not None:
                    offsets.append(alarm.offset)
                elif alarm.at is not None:
                    absolute.append((meta.uid, alarm.index, alarm.at, component))
        if not offsets and not absolute:
            return None
        return _Alarms(
            calendar=calendar,
            back=max([0.0, *offsets]),
            ahead=max([0.0, *(-o for o in offsets)]),
            relative=bool(offsets),
            absolute=tuple(absolute),
        )

    # -- recording -------------------------------------------------------------------------

    def _record(self, sent: list[DueReminder], now: float) -> None:
        by_collection: dict[str, tuple[Collection, list[DueReminder]]] = {}
        for reminder in sent:
            entry = by_collection.setdefault(
                str(reminder.collection.path), (reminder.collection, [])
            )
            entry[1].append(reminder)
        for collection, reminders in by_collection.values():
            try:
                record = collection.state("reminders").get("sent", {})
                record = {k: t for k, t in record.items() if float(t) > now - _KEEP}
                for reminder in reminders:
                    record[reminder.key] = reminder.trigger
                collection.set_state("reminders", {"sent": record})
            except (RmailError, OSError) as exc:
                logger.error("reminders not recorded calendar=%s error=%s", collection.path, exc)


def _may_reach(meta: ObjectMeta, low: float, high: float) -> bool:
    """Whether the indexed span of the object meets [low, high]."""
    if meta.start is None:
        return False
    end = meta.end if meta.end is not None else meta.start
    return end >= low and meta.start <= high


def _relative_due(
    meta: ObjectMeta, info: _Alarms, low: float, now: float
) -> list[tuple[str, float, Any, Alarm | None]]:
    out: list[tuple[str, float, Any, Alarm | None]] = []
    window = occurrences(info.calendar, low - info.back - 1, now + info.ahead + 1)
    for occurrence in window:
        start, end = span(occurrence)
        if start is None:
            continue
        for alarm in alarms(occurrence):
            if alarm.action not in _ACTIONS or alarm.offset is None:
                continue
            anchor = end if alarm.related_end and end is not None else start
            trigger = anchor + alarm.offset
            if low < trigger <= now:
                out.append((f"{meta.uid}/{int(start)}/{alarm.index}", trigger, occurrence, alarm))
    return out


def _reminder(
    address: str, component: Any, alarm: Alarm | None, trigger: float, hostname: str
) -> bytes:
    summary = str(component.get("SUMMARY", "")) or "(no title)"
    start, _ = span(component)
    when = (
        datetime.datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M UTC")
        if start is not None
        else ""
    )
    lines = [summary]
    if when:
        lines.append(f"When: {when}")
    if component.get("LOCATION"):
        lines.append(f"Where: {component['LOCATION']}")
    description = (alarm.description if alarm is not None else "") or str(
        component.get("DESCRIPTION", "")
    )
    if description:
        lines += ["", description]
    message = EmailMessage()
    message["From"] = f"Calendar <calendar@{hostname}>"
    message["To"] = address
    message["Subject"] = f"Reminder: {summary}" + (f" @ {when}" if when else "")
    message["Date"] = formatdate(trigger, usegmt=True)
    message["Message-ID"] = make_msgid(domain=hostname)
    message["X-Rmail-Reminder"] = str(component.get("UID", ""))
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    message.set_content("\n".join(lines) + "\n")
    return message.as_bytes(policy=email.policy.SMTP)
