"""The iCalendar side of the webmail calendar: the event form and the VEVENT it writes, the
instances a page shows, and invitations (iTIP METHOD:REQUEST, RFC 5546) found in mail.

Pure: bytes and values in, bytes and values out. No HTTP, no store, no clock of its own
(the caller passes ``now``). Times typed in a form are wall times in the user's time zone;
an event is written with that ``TZID`` (and its VTIMEZONE), or in UTC when the zone is UTC.
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args
from zoneinfo import ZoneInfo

import icalendar

from rmail import __version__
from rmail.errors import InvalidInput
from rmail.ical import InvalidCalendar, occurrences, parse_calendar

__all__ = [
    "PARTSTATS",
    "REPEATS",
    "EventForm",
    "Instance",
    "Invitation",
    "PartStat",
    "Repeat",
    "accept_invitation",
    "form_of",
    "instances",
    "invitation_of",
    "new_event",
    "parse_form",
    "partstat_of",
    "update_event",
]

Repeat = Literal["none", "daily", "weekly", "monthly", "yearly"]
REPEATS: Final[tuple[Repeat, ...]] = get_args(Repeat)
PartStat = Literal["ACCEPTED", "TENTATIVE", "DECLINED"]
PARTSTATS: Final[tuple[PartStat, ...]] = get_args(PartStat)
PRODID: Final = f"-//rmail//webmail {__version__}//EN"
MAX_TITLE: Final = 500
MAX_TEXT: Final = 20_000
MAX_ATTENDEES: Final = 100
# A reminder at most four weeks before: what common clients offer as their longest choice.
MAX_REMINDER_MINUTES: Final = 4 * 7 * 24 * 60
MAX_COUNT: Final = 1000


@dataclass(frozen=True, slots=True)
class EventForm:
    """What the event form says. ``start``/``end`` are wall times in the user's zone; for an
    all-day event only their dates count and ``end`` is the last day (inclusive)."""

    title: str
    all_day: bool
    start: datetime.datetime
    end: datetime.datetime
    location: str = ""
    description: str = ""
    repeat: Repeat = "none"
    count: int | None = None
    until: datetime.date | None = None
    reminder: int | None = None  # minutes before the start
    attendees: tuple[str, ...] = ()

    @property
    def recurrence(self) -> tuple[Repeat, int | None, datetime.date | None]:
        return self.repeat, self.count, self.until


@dataclass(frozen=True, slots=True)
class Instance:
    """One occurrence as a page shows it, in the user's zone."""

    calendar: str
    name: str
    uid: str
    title: str
    location: str
    start: datetime.datetime
    end: datetime.datetime
    all_day: bool
    recurring: bool
    partstat: str | None  # the user's, when the event has attendees

    @property
    def first_day(self) -> datetime.date:
        return self.start.date()

    @property
    def last_day(self) -> datetime.date:
        """The last day it covers (an end at midnight belongs to the day before)."""
        if self.end <= self.start:
            return self.start.date()
        return (self.end - datetime.timedelta(microseconds=1)).date()

    def on(self, day: datetime.date) -> bool:
        return self.first_day <= day <= self.last_day


@dataclass(frozen=True, slots=True)
class Invitation:
    uid: str
    title: str
    start: datetime.datetime
    all_day: bool
    location: str
    organizer: str
    sequence: int
    attendees: tuple[str, ...] = field(default_factory=tuple)


# -- the form ---------------------------------------------------------------------------------


def _field(form: Mapping[str, str], name: str, limit: int = MAX_TITLE) -> str:
    value = str(form.get(name, "")).strip()
    if len(value) > limit:
        raise InvalidInput(f"{name.replace('_', ' ')} is too long (at most {limit} characters)")
    return value


def _date(text: str, what: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{what} is not a date (YYYY-MM-DD)") from None


def _time(text: str, what: str) -> datetime.time:
    try:
        return datetime.time.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{what} is not a time (HH:MM)") from None


def _int(text: str, what: str, low: int, high: int) -> int | None:
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(f"{what} is not a number") from None
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low} and {high}")
    return value


def parse_form(form: Mapping[str, str]) -> EventForm:
    """Read the event form (fields ``title``, ``all_day``, ``start_date``, ``start_time``,
    ``end_date``, ``end_time``, ``location``, ``description``, ``repeat``, ``count``,
    ``until``, ``reminder``, ``attendees``).

    Raises:
        InvalidInput: with a message to show next to the form.
    """
    title = _field(form, "title")
    if not title:
        raise InvalidInput("the event needs a title")
    all_day = bool(form.get("all_day"))
    start_day = _date(_field(form, "start_date"), "the start date")
    end_text = _field(form, "end_date")
    end_day = _date(end_text, "the end date") if end_text else start_day
    if all_day:
        start = datetime.datetime.combine(start_day, datetime.time())
        end = datetime.datetime.combine(end_day, datetime.time())
        if end < start:
            raise InvalidInput("the event ends before it starts")
    else:
        start = datetime.datetime.combine(
            start_day, _time(_field(form, "start_time") or "09:00", "the start time")
        )
        end_time = _field(form, "end_time")
        if end_time:
            end = datetime.datetime.combine(end_day, _time(end_time, "the end time"))
        else:
            end = start + datetime.timedelta(hours=1)
        if end <= start:
            raise InvalidInput("the event ends before it starts")
    repeat = _field(form, "repeat") or "none"
    if repeat not in REPEATS:
        raise InvalidInput("repeat is none, daily, weekly, monthly or yearly")
    count = _int(_field(form, "count"), "the number of times", 1, MAX_COUNT)
    until_text = _field(form, "until")
    until = _date(until_text, "the repeat-until date") if until_text else None
    if count is not None and until is not None:
        raise InvalidInput("repeat either a number of times or until a date, not both")
    if until is not None and until < start_day:
        raise InvalidInput("the repeat-until date is before the start")
    reminder = _int(_field(form, "reminder"), "the reminder", 0, MAX_REMINDER_MINUTES)
    attendees = _attendees(_field(form, "attendees", MAX_TEXT))
    return EventForm(
        title=title,
        all_day=all_day,
        start=start,
        end=end,
        location=_field(form, "location"),
        description=_field(form, "description", MAX_TEXT),
        repeat=repeat,
        count=count if repeat != "none" else None,
        until=until if repeat != "none" else None,
        reminder=reminder,
        attendees=attendees,
    )


def _attendees(text: str) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for _, given in email.utils.getaddresses([text.replace(";", ",")]):
        address = given.strip()
        if not address:
            continue
        local, at, domain = address.rpartition("@")
        if not at or not local or "." not in domain or any(c.isspace() for c in address):
            raise InvalidInput(f"{address!r} is not an e-mail address")
        found[address.lower()] = None
    if len(found) > MAX_ATTENDEES:
        raise InvalidInput(f"at most {MAX_ATTENDEES} attendees")
    return tuple(found)


# -- writing ----------------------------------------------------------------------------------


def _when(form: EventForm, zone: ZoneInfo) -> tuple[Any, Any]:
    """DTSTART and DTEND values: dates (DTEND exclusive) or aware datetimes."""
    if form.all_day:
        return form.start.date(), form.end.date() + datetime.timedelta(days=1)
    return form.start.replace(tzinfo=zone), form.end.replace(tzinfo=zone)


def _rrule(form: EventForm, zone: ZoneInfo) -> dict[str, Any] | None:
    if form.repeat == "none":
        return None
    rule: dict[str, Any] = {"FREQ": form.repeat.upper()}
    if form.count is not None:
        rule["COUNT"] = form.count
    elif form.until is not None:
        if form.all_day:
            rule["UNTIL"] = form.until
        else:
            # RFC 5545 §3.3.10: with a zoned DTSTART, UNTIL is in UTC. The whole last day counts.
            last = datetime.datetime.combine(form.until, datetime.time(23, 59, 59), zone)
            rule["UNTIL"] = last.astimezone(datetime.UTC)
    return rule


def _mailto(address: str) -> str:
    return f"mailto:{address}"


def _address_of(value: Any) -> str:
    text = str(value)
    if text.lower().startswith("mailto:"):
        text = text[7:]
    return text.strip().lower()


def _listed(component: Any, name: str) -> list[Any]:
    value = component.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _set(component: Any, name: str, value: Any) -> None:
    component.pop(name, None)
    if value not in (None, ""):
        component.add(name, value)


def _apply(
    event: Any,
    form: EventForm,
    *,
    organizer: str,
    zone: ZoneInfo,
    now: datetime.datetime,
    keep_rrule: bool,
) -> None:
    start, end = _when(form, zone)
    _set(event, "SUMMARY", form.title)
    _set(event, "DTSTART", start)
    event.pop("DURATION", None)
    _set(event, "DTEND", end)
    _set(event, "LOCATION", form.location)
    _set(event, "DESCRIPTION", form.description)
    if not keep_rrule:
        _set(event, "RRULE", _rrule(form, zone))
    _set(event, "DTSTAMP", now)
    _set(event, "LAST-MODIFIED", now)
    event.subcomponents = [c for c in event.subcomponents if c.name != "VALARM"]
    if form.reminder is not None:
        alarm = icalendar.Alarm()
        alarm.add("ACTION", "DISPLAY")
        alarm.add("DESCRIPTION", form.title)
        alarm.add("TRIGGER", -datetime.timedelta(minutes=form.reminder))
        event.add_component(alarm)
    # Attendees: those kept keep their parameters (their PARTSTAT above all).
    before = {_address_of(a): a for a in _listed(event, "ATTENDEE")}
    event.pop("ATTENDEE", None)
    for address in form.attendees:
        attendee = before.get(address)
        if attendee is None:
            attendee = icalendar.vCalAddress(_mailto(address))
            attendee.params["ROLE"] = "REQ-PARTICIPANT"
            attendee.params["PARTSTAT"] = "NEEDS-ACTION"
            attendee.params["RSVP"] = "TRUE"
        event.add("ATTENDEE", attendee)
    if form.attendees and event.get("ORGANIZER") is None:
        event.add("ORGANIZER", icalendar.vCalAddress(_mailto(organizer)))
    elif not form.attendees and _address_of(event.get("ORGANIZER", "")) == organizer.lower():
        event.pop("ORGANIZER", None)


def _finish(calendar: Any) -> bytes:
    calendar.add_missing_timezones()
    data: bytes = calendar.to_ical()
    parse_calendar(data, ("VEVENT",))  # what CalDAV would refuse, the webmail never writes
    return data


def new_event(
    form: EventForm, *, uid: str, organizer: str, zone: ZoneInfo, now: datetime.datetime
) -> bytes:
    """A new VCALENDAR with one VEVENT (SEQUENCE 0)."""
    calendar = icalendar.Calendar()
    calendar.add("VERSION", "2.0")
    calendar.add("PRODID", PRODID)
    event = icalendar.Event()
    event.add("UID", uid)
    event.add("SEQUENCE", 0)
    event.add("CREATED", now)
    _apply(event, form, organizer=organizer, zone=zone, now=now, keep_rrule=False)
    calendar.add_component(event)
    return _finish(calendar)


def _master(calendar: Any) -> Any:
    for component in calendar.walk("VEVENT"):
        if component.get("RECURRENCE-ID") is None:
            return component
    raise InvalidCalendar("the object has no event to edit")


def update_event(
    data: bytes,
    form: EventForm,
    *,
    organizer: str,
    zone: ZoneInfo,
    now: datetime.datetime,
) -> bytes:
    """``data`` changed to say what ``form`` says, other properties kept, SEQUENCE bumped.

    A recurrence the form cannot show (BYDAY, INTERVAL, ...) is kept when the form's
    repeat fields were left as shown. When the start or the recurrence changes, moved or
    cancelled single occurrences (RECURRENCE-ID, EXDATE) no longer line up and are dropped.

    Raises:
        InvalidCalendar: ``data`` is not an event.
    """
    calendar, _ = parse_calendar(data, ("VEVENT",))
    event = _master(calendar)
    shown = form_of(calendar, zone)
    keep_rrule = shown.recurrence == form.recurrence
    if not keep_rrule or shown.start != form.start or shown.all_day != form.all_day:
        event.pop("EXDATE", None)
        calendar.subcomponents = [
            c
            for c in calendar.subcomponents
            if not (c.name == "VEVENT" and c.get("RECURRENCE-ID") is not None)
        ]
    sequence = int(event.get("SEQUENCE", 0)) + 1
    _set(event, "SEQUENCE", sequence)
    _apply(event, form, organizer=organizer, zone=zone, now=now, keep_rrule=keep_rrule)
    return _finish(calendar)


# -- reading ----------------------------------------------------------------------------------


def _local(value: Any, zone: ZoneInfo) -> datetime.datetime:
    """A DATE, floating or zoned DATE-TIME as an aware time in ``zone``."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # floating: the same wall time wherever the user is
            return value.replace(tzinfo=zone)
        return value.astimezone(zone)
    return datetime.datetime.combine(value, datetime.time(), zone)


def _span_of(component: Any, zone: ZoneInfo) -> tuple[datetime.datetime, datetime.datetime, bool]:
    start_value = component["DTSTART"].dt
    all_day = not isinstance(start_value, datetime.datetime)
    start = _local(start_value, zone)
    if component.get("DTEND") is not None:
        end = _local(component["DTEND"].dt, zone)
    elif component.get("DURATION") is not None:
        end = start + component["DURATION"].dt
    else:
        end = start + datetime.timedelta(days=1) if all_day else start
    return start, max(start, end), all_day


def form_of(calendar: Any, zone: ZoneInfo) -> EventForm:
    """The event form, filled from the master VEVENT of ``calendar``."""
    event = _master(calendar)
    start, end, all_day = _span_of(event, zone)
    if all_day:
        last = max(start.date(), (end - datetime.timedelta(days=1)).date())
        end = datetime.datetime.combine(last, datetime.time(), zone)
    repeat: Repeat = "none"
    count: int | None = None
    until: datetime.date | None = None
    rule = event.get("RRULE")
    if rule is not None:
        freq = str((rule.get("FREQ") or ["none"])[0]).lower()
        repeat = freq if freq in REPEATS else "none"
        if rule.get("COUNT"):
            count = int(rule["COUNT"][0])
        elif rule.get("UNTIL"):
            until = _local(rule["UNTIL"][0], zone).date()
    reminder: int | None = None
    for alarm in event.walk("VALARM"):
        trigger = alarm.get("TRIGGER")
        value = getattr(trigger, "dt", None)
        if isinstance(value, datetime.timedelta) and value <= datetime.timedelta(0):
            reminder = int(-value.total_seconds() // 60)
            break
    return EventForm(
        title=str(event.get("SUMMARY", "")),
        all_day=all_day,
        start=start.replace(tzinfo=None),
        end=end.replace(tzinfo=None),
        location=str(event.get("LOCATION", "")),
        description=str(event.get("DESCRIPTION", "")),
        repeat=repeat,
        count=count,
        until=until,
        reminder=reminder,
        attendees=tuple(_address_of(a) for a in _listed(event, "ATTENDEE")),
    )


def partstat_of(component: Any, address: str) -> str | None:
    """The PARTSTAT of ``address`` among the component's attendees (None: not one)."""
    for attendee in _listed(component, "ATTENDEE"):
        if _address_of(attendee) == address.lower():
            return str(attendee.params.get("PARTSTAT", "NEEDS-ACTION")).upper()
    return None


def instances(
    calendar: Any,
    *,
    collection: str,
    name: str,
    user: str,
    zone: ZoneInfo,
    start: datetime.datetime,
    end: datetime.datetime,
) -> list[Instance]:
    """The occurrences of the events in ``calendar`` that overlap [start, end) (aware
    times), recurrence expanded (:func:`rmail.ical.occurrences`)."""
    # A day more each side: all-day and floating events are placed by wall time, which the
    # expansion (in UTC) may put on the other side of the edge.
    margin = datetime.timedelta(days=1)
    found = occurrences(calendar, (start - margin).timestamp(), (end + margin).timestamp())
    recurring = any(c.get("RRULE") is not None for c in calendar.walk("VEVENT"))
    out = []
    for component in found:
        if component.name != "VEVENT" or component.get("DTSTART") is None:
            continue
        first, last, all_day = _span_of(component, zone)
        if not (first < end and (last > start or (last == first and first >= start))):
            continue
        out.append(
            Instance(
                calendar=collection,
                name=name,
                uid=str(component.get("UID", "")),
                title=str(component.get("SUMMARY", "")) or "(no title)",
                location=str(component.get("LOCATION", "")),
                start=first,
                end=last,
                all_day=all_day,
                recurring=recurring,
                partstat=partstat_of(component, user),
            )
        )
    return out


# -- invitations (RFC 5546 §3.2.2 REQUEST, answered as the attendee) -----------------------------


def invitation_of(data: bytes, zone: ZoneInfo) -> Invitation | None:
    """The invitation in a text/calendar part, or None when it is not a VEVENT REQUEST."""
    try:
        calendar, info = parse_calendar(data, ("VEVENT",))
    except InvalidCalendar:
        return None
    if info.method != "REQUEST":
        return None
    event = _master(calendar)
    if event.get("DTSTART") is None:
        return None
    start, _, all_day = _span_of(event, zone)
    return Invitation(
        uid=info.uid,
        title=str(event.get("SUMMARY", "")) or "(no title)",
        start=start,
        all_day=all_day,
        location=str(event.get("LOCATION", "")),
        organizer=_address_of(event.get("ORGANIZER", "")),
        sequence=int(event.get("SEQUENCE", 0)),
        attendees=tuple(_address_of(a) for a in _listed(event, "ATTENDEE")),
    )


def accept_invitation(
    data: bytes, address: str, partstat: PartStat, now: datetime.datetime
) -> tuple[bytes, str]:
    """The calendar object to store for an invitation answered with ``partstat``: METHOD
    removed (RFC 4791 §4.1 forbids it in a stored object), the user's ATTENDEE (added when
    the organizer listed the user under another address) carrying the answer in every
    instance. Returns (data, UID).

    Raises:
        InvalidCalendar: not a VEVENT REQUEST.
    """
    calendar, info = parse_calendar(data, ("VEVENT",))
    if info.method != "REQUEST":
        raise InvalidCalendar("this is not an invitation (METHOD:REQUEST)")
    calendar.pop("METHOD", None)
    for event in calendar.walk("VEVENT"):
        attendees = _listed(event, "ATTENDEE")
        mine = [a for a in attendees if _address_of(a) == address.lower()]
        if not mine:
            added = icalendar.vCalAddress(_mailto(address))
            added.params["ROLE"] = "REQ-PARTICIPANT"
            event.add("ATTENDEE", added)
            mine = [added]
        for attendee in mine:
            attendee.params["PARTSTAT"] = partstat
            attendee.params.pop("RSVP", None)
        _set(event, "DTSTAMP", now)
    return _finish(calendar), info.uid
