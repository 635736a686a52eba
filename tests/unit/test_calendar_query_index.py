"""The calendar-query shortcut (reports.index_decides) gives the same answer as the full
RFC 4791 §9.7/§9.9 evaluation (reports.matches on the parsed object) for varied objects and
many time ranges, boundaries included."""

from __future__ import annotations

import datetime
import itertools
import xml.etree.ElementTree as ET

import pytest

from rmail.ical import UTC, parse_calendar
from rmail.store.dav import ObjectMeta
from rmail.web.dav import reports

C = "urn:ietf:params:xml:ns:caldav"


def _cal(body: str) -> bytes:
    text = f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//test//EN\n{body.strip()}\nEND:VCALENDAR\n"
    return text.replace("\n", "\r\n").encode()


def _ev(uid: str, lines: str) -> str:
    return f"BEGIN:VEVENT\nUID:{uid}\nDTSTAMP:20260101T000000Z\n{lines.strip()}\nEND:VEVENT"


OBJECTS: dict[str, bytes] = {
    "single": _cal(_ev("single", "DTSTART:20260310T090000Z\nDTEND:20260310T100000Z")),
    "all-day": _cal(_ev("all-day", "DTSTART;VALUE=DATE:20260310\nDTEND;VALUE=DATE:20260312")),
    "all-day-no-end": _cal(_ev("all-day-no-end", "DTSTART;VALUE=DATE:20260311")),
    "all-day-duration": _cal(_ev("all-day-duration", "DTSTART;VALUE=DATE:20260309\nDURATION:P1D")),
    "zero-no-end": _cal(_ev("zero-no-end", "DTSTART:20260310T120000Z")),
    "zero-equal-end": _cal(
        _ev("zero-equal-end", "DTSTART:20260310T100000Z\nDTEND:20260310T100000Z")
    ),
    "floating": _cal(_ev("floating", "DTSTART:20260310T083000\nDTEND:20260310T093000")),
    "floating-date-time-no-end": _cal(_ev("floating-date-time-no-end", "DTSTART:20260310T230000")),
    "duration": _cal(_ev("duration", "DTSTART:20260310T110000Z\nDURATION:PT90M")),
    "tzid": _cal(
        _ev(
            "tzid",
            "DTSTART;TZID=Europe/Berlin:20260310T100000\nDTEND;TZID=Europe/Berlin:20260310T110000",
        )
    ),
    "spanning-days": _cal(_ev("spanning-days", "DTSTART:20260309T220000Z\nDTEND:20260311T020000Z")),
    "recurring": _cal(
        _ev(
            "recurring",
            "DTSTART:20260302T100000Z\nDTEND:20260302T110000Z\nRRULE:FREQ=WEEKLY;COUNT=4\n"
            "EXDATE:20260309T100000Z",
        )
        + "\n"
        + _ev(
            "recurring",
            "RECURRENCE-ID:20260316T100000Z\nDTSTART:20260317T150000Z\nDTEND:20260317T160000Z",
        )
    ),
    "recurring-date": _cal(
        _ev("recurring-date", "DTSTART;VALUE=DATE:20260301\nRRULE:FREQ=DAILY;COUNT=3")
    ),
    "override-only": _cal(
        _ev(
            "override-only",
            "RECURRENCE-ID:20260310T100000Z\nDTSTART:20260310T130000Z\nDTEND:20260310T140000Z",
        )
        + "\n"
        + _ev(
            "override-only",
            "RECURRENCE-ID:20260311T100000Z\nDTSTART:20260311T130000Z\nDTEND:20260311T140000Z",
        )
    ),
    "todo-due": _cal(
        "BEGIN:VTODO\nUID:todo-due\nDTSTAMP:20260101T000000Z\nDUE:20260310T100000Z\nEND:VTODO"
    ),
    "todo-undated": _cal("BEGIN:VTODO\nUID:todo-undated\nDTSTAMP:20260101T000000Z\nEND:VTODO"),
}


def _stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")


def _filter(low: float, high: float) -> ET.Element:
    return ET.fromstring(
        f'<C:filter xmlns:C="{C}"><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        f'<C:time-range start="{_stamp(low)}" end="{_stamp(high)}"/>'
        "</C:comp-filter></C:comp-filter></C:filter>"
    )


def _ranges() -> list[tuple[float, float]]:
    points: set[float] = set()
    for data in OBJECTS.values():
        _, info = parse_calendar(data)
        for t in (info.start, info.end):
            if t is not None and t < 4e9:
                points.update((t - 1, t, t + 1))
    day = datetime.datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    points.update(day + k * 43200 for k in range(0, 50))
    ordered = sorted(points)
    return [(a, b) for a, b in itertools.combinations(ordered, 2)]


def test_index_shortcut_equals_the_full_evaluation() -> None:
    parsed = {}
    metas = {}
    for name, data in OBJECTS.items():
        calendar, info = parse_calendar(data)
        parsed[name] = calendar
        metas[name] = ObjectMeta(
            name,
            info.uid,
            '"x"',
            len(data),
            info.component,
            info.start,
            info.end,
            info.recurring,
            1,
            info.simple,
        )
    assert metas["single"].simple and metas["all-day"].simple and metas["floating"].simple
    assert not metas["recurring"].simple and not metas["override-only"].simple
    ranges = _ranges()
    assert len(ranges) > 1000
    decided = 0
    for low, high in ranges:
        filter_node = _filter(low, high)
        plain = reports.plain_event_range(filter_node) is not None
        assert plain
        fast: set[str] = set()
        full: set[str] = set()
        for name, meta in metas.items():
            answer = reports.index_decides(filter_node, meta, plain=plain)
            if answer is None:
                answer = reports.matches(filter_node, parsed[name])
            else:
                decided += 1
            if answer:
                fast.add(name)
            if reports.matches(filter_node, parsed[name]):
                full.add(name)
        assert fast == full, (_stamp(low), _stamp(high))
    assert decided > len(ranges) * 10  # the shortcut does the work for plain events


@pytest.mark.parametrize(
    "body",
    [
        '<C:comp-filter name="VCALENDAR"><C:comp-filter name="VTODO">'
        '<C:time-range start="20260301T000000Z" end="20260401T000000Z"/>'
        "</C:comp-filter></C:comp-filter>",
        '<C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        '<C:time-range start="20260301T000000Z" end="20260401T000000Z"/>'
        '<C:prop-filter name="SUMMARY"><C:text-match>x</C:text-match></C:prop-filter>'
        "</C:comp-filter></C:comp-filter>",
        '<C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter>',
        '<C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        '<C:time-range start="20260301T000000Z" end="20260401T000000Z"/>'
        '<C:comp-filter name="VALARM"/></C:comp-filter></C:comp-filter>',
    ],
)
def test_other_filters_take_the_full_evaluation(body: str) -> None:
    node = ET.fromstring(f'<C:filter xmlns:C="{C}">{body}</C:filter>')
    assert reports.plain_event_range(node) is None
