"""iCalendar and vCard objects as the calendar and contacts services see them.

Parsing and checking (icalendar), the facts an index keeps about each object (UID, kind of
component, the span of time it covers), and time-range tests with recurrence expanded
(recurring-ical-events, on python-dateutil: RRULE, RDATE, EXDATE and RECURRENCE-ID
overrides in the same resource). Nothing here knows HTTP or WebDAV.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypedDict

import icalendar
import recurring_ical_events

from rmail.errors import InvalidInput

__all__ = [
    "COMPONENTS",
    "UTC",
    "Alarm",
    "CalendarInfo",
    "CardInfo",
    "IndexFields",
    "InvalidCalendar",
    "alarms",
    "epoch",
    "load_calendar",
    "occurrences",
    "overlaps",
    "parse_calendar",
    "parse_card",
    "span",
]

UTC: Final = datetime.UTC
COMPONENTS: Final = ("VEVENT", "VTODO", "VJOURNAL")
# A recurrence with no end is indexed as reaching this far (seconds since the epoch).
FOREVER: Final = 253402300799.0  # 9999-12-31T23:59:59Z
# How many occurrences are looked at to find where a long recurrence ends.
_EXPANSION_LIMIT: Final = 5000


class InvalidCalendar(InvalidInput):
    """Not valid calendar data; ``condition`` names the CalDAV precondition it breaks."""

    def __init__(self, message: str, condition: str = "valid-calendar-data") -> None:
        super().__init__(message)
        self.condition = condition


@dataclass(frozen=True, slots=True)
class CalendarInfo:
    uid: str
    component: str  # VEVENT, VTODO or VJOURNAL
    start: float | None  # first moment covered (epoch seconds), None: no time at all
    end: float | None  # last moment covered; FOREVER for an endless recurrence
    recurring: bool
    # One component and no recurrence: (start, end) is exactly the span of its only
    # instance, so a time-range test on the index alone is the RFC 4791 §9.9 answer.
    simple: bool
    method: str | None  # iTIP METHOD (REQUEST, REPLY, CANCEL), for scheduling messages

    @property
    def index_fields(self) -> IndexFields:
        """What a calendar collection indexes of the object: ``put(name, data, **these)``."""
        return IndexFields(
            uid=self.uid,
            component=self.component,
            start=self.start,
            end=self.end,
            recurring=self.recurring,
            simple=self.simple,
        )


class IndexFields(TypedDict):
    """The keyword arguments of ``Collection.put`` that describe a calendar object."""

    uid: str
    component: str
    start: float | None
    end: float | None
    recurring: bool
    simple: bool


@dataclass(frozen=True, slots=True)
class Alarm:
    """One VALARM of a component (RFC 5545 §3.6.6), its TRIGGER made numeric."""

    index: int  # position among the component's VALARMs: with the UID, names the alarm
    action: str  # DISPLAY, EMAIL, AUDIO, ...
    offset: float | None  # seconds from the anchor (negative: before); None when absolute
    related_end: bool  # TRIGGER;RELATED=END: the anchor is the end, not the start
    at: float | None  # an absolute trigger (epoch seconds)
    summary: str
    description: str


@dataclass(frozen=True, slots=True)
class CardInfo:
    uid: str
    version: str
    name: str


def epoch(value: Any, *, end_of_day: bool = False) -> float:
    """A DATE or DATE-TIME as epoch seconds (floating times are taken as UTC)."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return float(value.timestamp())
    if isinstance(value, datetime.date):
        moment = datetime.datetime.combine(value, datetime.time(), UTC)
        if end_of_day:
            moment += datetime.timedelta(days=1)
        return moment.timestamp()
    raise InvalidCalendar(f"not a date or time: {value!r}")


def _span(component: Any) -> tuple[float | None, float | None]:
    """The time one instance covers: RFC 4791 §9.9's table, simplified but safe."""
    start = component.get("DTSTART")
    if component.name == "VTODO":
        due = component.get("DUE")
        if start is None and due is None:
            return None, None
        first = epoch(start.dt) if start is not None else epoch(due.dt)
        last = epoch(due.dt) if due is not None else first
        return first, max(first, last)
    if start is None:
        return None, None
    first = epoch(start.dt)
    end = component.get("DTEND")
    duration = component.get("DURATION")
    if end is not None:
        last = epoch(end.dt)
    elif duration is not None:
        last = first + duration.dt.total_seconds()
    elif isinstance(start.dt, datetime.datetime):
        last = first
    else:
        last = epoch(start.dt, end_of_day=True)
    return first, max(first, last)


def span(component: Any) -> tuple[float | None, float | None]:
    """The (start, end) one instance covers, in epoch seconds (RFC 4791 §9.9)."""
    return _span(component)


def alarms(component: Any) -> list[Alarm]:
    """The VALARMs of one component (an occurrence), skipping those with no usable TRIGGER."""
    out: list[Alarm] = []
    for index, alarm in enumerate(c for c in component.subcomponents if c.name == "VALARM"):
        trigger = alarm.get("TRIGGER")
        if trigger is None:
            continue
        value = getattr(trigger, "dt", None)
        related_end = str(trigger.params.get("RELATED", "START")).upper() == "END"
        offset: float | None = None
        at: float | None = None
        if isinstance(value, datetime.timedelta):
            offset = value.total_seconds()
        elif isinstance(value, datetime.date):
            at = epoch(value)
        else:
            continue
        out.append(
            Alarm(
                index=index,
                action=str(alarm.get("ACTION", "DISPLAY")).upper(),
                offset=offset,
                related_end=related_end,
                at=at,
                summary=str(alarm.get("SUMMARY", "")),
                description=str(alarm.get("DESCRIPTION", "")),
            )
        )
    return out


def load_calendar(data: bytes) -> Any:
    """Parse iCalendar data without the checks and the extent of :func:`parse_calendar`
    (which expands every occurrence of a bounded recurrence): for objects that were checked
    when they were stored and are only read now.

    Raises:
        InvalidCalendar: not iCalendar.
    """
    try:
        return icalendar.Calendar.from_ical(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, IndexError, KeyError, TypeError) as exc:
        raise InvalidCalendar(f"not valid iCalendar data: {exc}") from None


def parse_calendar(data: bytes, allowed: Iterable[str] = COMPONENTS) -> tuple[Any, CalendarInfo]:
    """Parse and check one calendar object resource (RFC 4791 §4.1).

    One UID, one kind of component (with its RECURRENCE-ID overrides), VTIMEZONEs allowed.

    Raises:
        InvalidCalendar: not iCalendar, no or several UIDs, several component kinds, or a
            component kind not in ``allowed`` (condition supported-calendar-component).
    """
    calendar = load_calendar(data)
    if getattr(calendar, "name", None) != "VCALENDAR":
        raise InvalidCalendar("the object is not a VCALENDAR")
    parts = [c for c in calendar.subcomponents if c.name != "VTIMEZONE"]
    kinds = {c.name for c in parts}
    if not parts:
        raise InvalidCalendar("the calendar holds no event, to-do or journal entry")
    if len(kinds) != 1:
        raise InvalidCalendar(
            "one calendar object holds one kind of component", "valid-calendar-object-resource"
        )
    (kind,) = kinds
    if kind not in COMPONENTS or kind not in set(allowed):
        raise InvalidCalendar(f"{kind} is not stored here", "supported-calendar-component")
    uids = {str(c.get("UID", "")) for c in parts}
    if len(uids) != 1 or not next(iter(uids)):
        raise InvalidCalendar(
            "every component of an object has the same, non-empty UID",
            "valid-calendar-object-resource",
        )
    masters = [c for c in parts if c.get("RECURRENCE-ID") is None]
    recurring = any(c.get("RRULE") is not None or c.get("RDATE") is not None for c in masters)
    try:
        start, end = _extent(calendar, parts, recurring)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidCalendar(f"bad date or recurrence: {exc}") from None
    method = calendar.get("METHOD")
    return calendar, CalendarInfo(
        uid=next(iter(uids)),
        component=kind,
        start=start,
        end=end,
        recurring=recurring,
        simple=len(parts) == 1 and not recurring,
        method=str(method).upper() if method is not None else None,
    )


def _extent(calendar: Any, parts: list[Any], recurring: bool) -> tuple[float | None, float | None]:
    spans = [_span(c) for c in parts]
    starts = [s for s, _ in spans if s is not None]
    ends = [e for _, e in spans if e is not None]
    if not starts:
        return None, None
    first, last = min(starts), max(ends)
    if not recurring:
        return first, last
    unbounded = any(
        c.get("RRULE") is not None and "UNTIL" not in c["RRULE"] and "COUNT" not in c["RRULE"]
        for c in parts
        if c.get("RECURRENCE-ID") is None
    )
    if unbounded:
        return first, FOREVER
    for count, occurrence in enumerate(_all_occurrences(calendar)):
        if count >= _EXPANSION_LIMIT:
            return first, FOREVER
        s, e = _span(occurrence)
        if s is not None:
            first = min(first, s)
        if e is not None:
            last = max(last, e)
    return first, last


def _all_occurrences(calendar: Any) -> Iterator[Any]:
    query = recurring_ical_events.of(calendar, components=list(COMPONENTS))
    yield from query.all()


def occurrences(calendar: Any, start: float, end: float) -> list[Any]:
    """The instances (components, recurrence expanded) overlapping [start, end)."""
    query = recurring_ical_events.of(calendar, components=list(COMPONENTS))
    low = datetime.datetime.fromtimestamp(start, UTC)
    high = datetime.datetime.fromtimestamp(end, UTC)
    return [c for c in query.between(low, high) if overlaps(_span(c), start, end, c.name)]


def overlaps(span: tuple[float | None, float | None], start: float, end: float, kind: str) -> bool:
    """RFC 4791 §9.9: whether an instance covering ``span`` overlaps [start, end)."""
    first, last = span
    if first is None or last is None:
        return kind == "VTODO"  # a to-do without dates matches every range
    if first == last:
        return start <= first < end
    return first < end and last > start


def parse_card(data: bytes) -> CardInfo:
    """Check one vCard 3.0 or 4.0 (RFC 6350 / 2426): BEGIN/END, VERSION, UID, FN.

    Raises:
        InvalidCalendar: with condition ``valid-address-data``.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCalendar("a vCard must be UTF-8", "valid-address-data") from None
    lines = _unfold(text)
    if not lines or lines[0].upper() != "BEGIN:VCARD" or lines[-1].upper() != "END:VCARD":
        raise InvalidCalendar("not a vCard (BEGIN:VCARD ... END:VCARD)", "valid-address-data")
    if sum(1 for line in lines if line.upper() == "BEGIN:VCARD") != 1:
        raise InvalidCalendar("one vCard per resource", "valid-address-data")
    fields: dict[str, str] = {}
    for line in lines[1:-1]:
        name, sep, value = line.partition(":")
        if not sep:
            raise InvalidCalendar(f"malformed vCard line {line[:40]!r}", "valid-address-data")
        key = name.split(";", 1)[0].upper()
        key = key.rpartition(".")[2]  # group.PROPERTY
        fields.setdefault(key, value)
    version = fields.get("VERSION", "")
    if version not in ("3.0", "4.0"):
        raise InvalidCalendar("VERSION must be 3.0 or 4.0", "supported-address-data")
    uid = fields.get("UID", "").strip()
    if not uid:
        raise InvalidCalendar("the vCard has no UID", "valid-address-data")
    return CardInfo(uid=uid, version=version, name=fields.get("FN", ""))


def _unfold(text: str) -> list[str]:
    out: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and out:
            out[-1] += raw[1:]
        elif raw.strip():
            out.append(raw.rstrip())
    return out
