"""REPORT bodies: calendar-query and addressbook-query filters, expansion, free-busy.

Filters follow RFC 4791 §9.7 (comp-filter, prop-filter, param-filter, text-match,
time-range, is-not-defined) and RFC 6352 §10.5 (prop-filter with test="anyof|allof").
A calendar-query first narrows the candidates with the index (component kind and the span
each object covers), then parses only those.
"""

from __future__ import annotations

import datetime
import functools
import xml.etree.ElementTree as ET
from typing import Any

import icalendar

from rmail.errors import InvalidInput
from rmail.ical import UTC, epoch, occurrences, overlaps, span
from rmail.store.dav import ObjectMeta
from rmail.web.davxml import CALDAV, CARDDAV

__all__ = [
    "TimeRange",
    "card_matches",
    "expand",
    "freebusy",
    "index_decides",
    "index_prefilter",
    "limit_recurrence_set",
    "matches",
    "parse_time_range",
    "plain_event_range",
]

TimeRange = tuple[float, float]
_FAR_PAST = -62135596800.0  # 0001-01-01
_FAR_FUTURE = 253402300799.0  # 9999-12-31T23:59:59


@functools.lru_cache(maxsize=256)  # a query tests the same range against every object
def _when(text: str) -> float:
    try:
        value = datetime.datetime.strptime(text.strip(), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"bad time {text!r}: use the UTC form 20260101T000000Z") from None
    return value.timestamp()


def parse_time_range(node: ET.Element) -> TimeRange:
    start = node.get("start")
    end = node.get("end")
    if start is None and end is None:
        raise InvalidInput("time-range needs start or end")
    low = _when(start) if start else _FAR_PAST
    high = _when(end) if end else _FAR_FUTURE
    if high <= low:
        raise InvalidInput("time-range end must be after start")
    return low, high


def _comp_filters(filter_node: ET.Element) -> ET.Element:
    top = filter_node.find(f"{{{CALDAV}}}comp-filter")
    if top is None or top.get("name", "").upper() != "VCALENDAR":
        raise InvalidInput("the filter must start with comp-filter name=VCALENDAR")
    return top


def index_prefilter(filter_node: ET.Element, meta: ObjectMeta) -> bool:
    """Whether an object may match, judged from its index entry alone (never wrongly False)."""
    top = _comp_filters(filter_node)
    for comp in top.findall(f"{{{CALDAV}}}comp-filter"):
        name = comp.get("name", "").upper()
        negated = comp.find(f"{{{CALDAV}}}is-not-defined") is not None
        if negated:
            if meta.component == name:
                return False
            continue
        if meta.component != name:
            return False
        time_range = comp.find(f"{{{CALDAV}}}time-range")
        if time_range is not None:
            low, high = parse_time_range(time_range)
            if meta.start is None:
                if name != "VTODO":
                    return False
            elif (
                meta.end is not None
                and not overlaps((meta.start, meta.end), low, high, name)
                and not meta.start == meta.end == low
            ):
                # The index span covers every occurrence: no overlap there, none anywhere.
                return False
    return True


def plain_event_range(filter_node: ET.Element) -> TimeRange | None:
    """The time range of a filter that is exactly VCALENDAR > VEVENT > time-range (what
    clients send to fill a month view), None for any other filter.

    For such a filter, an object whose index entry is ``simple`` (one VEVENT, no
    recurrence) matches exactly when :func:`index_prefilter` passes: the index span is the
    span of its only instance, computed by the same rules (``rmail.ical.span``) the full
    evaluation applies to each instance. Only recurring or multi-component objects need
    parsing and expansion.
    """
    top = _comp_filters(filter_node)
    if len(filter_node) != 1 or len(top) != 1 or top.attrib.keys() - {"name"}:
        return None
    comp = top[0]
    if comp.tag != f"{{{CALDAV}}}comp-filter" or comp.get("name", "").upper() != "VEVENT":
        return None
    if comp.attrib.keys() - {"name"} or len(comp) != 1:
        return None
    time_range = comp[0]
    if time_range.tag != f"{{{CALDAV}}}time-range":
        return None
    return parse_time_range(time_range)


def index_decides(filter_node: ET.Element, meta: ObjectMeta, *, plain: bool) -> bool | None:
    """Whether an object matches, judged from its index entry, or None when only parsing
    the object can tell. ``plain``: the filter is one :func:`plain_event_range` accepts."""
    if not index_prefilter(filter_node, meta):
        return False
    if plain and meta.simple:
        return True
    return None


def matches(filter_node: ET.Element, calendar: Any) -> bool:
    """RFC 4791 §9.7 on a parsed VCALENDAR."""
    top = _comp_filters(filter_node)
    return _comp_matches(top, [calendar], calendar)


def _comp_matches(node: ET.Element, components: list[Any], calendar: Any) -> bool:
    if node.find(f"{{{CALDAV}}}is-not-defined") is not None:
        return not components
    if not components:
        return False
    time_range = node.find(f"{{{CALDAV}}}time-range")
    candidates = components
    if time_range is not None:
        low, high = parse_time_range(time_range)
        in_range = {str(c.get("UID")) for c in occurrences(calendar, low, high)}
        candidates = [c for c in components if str(c.get("UID")) in in_range]
        if not candidates:
            return False
    for component in candidates:
        ok = True
        for prop in node.findall(f"{{{CALDAV}}}prop-filter"):
            if not _prop_matches(prop, component):
                ok = False
                break
        if not ok:
            continue
        for sub in node.findall(f"{{{CALDAV}}}comp-filter"):
            name = sub.get("name", "").upper()
            children = [c for c in component.subcomponents if c.name == name]
            if not _comp_matches(sub, children, calendar):
                ok = False
                break
        if ok:
            return True
    return False


def _text_match(node: ET.Element, value: str) -> bool:
    needle = (node.text or "").strip()
    collation = node.get("collation", "i;ascii-casemap")
    match_type = node.get("match-type", "contains")
    if collation in ("i;ascii-casemap", "i;unicode-casemap"):
        needle, value = needle.casefold(), value.casefold()
    elif collation != "i;octet":
        raise InvalidInput(f"unsupported collation {collation}")
    if match_type == "equals":
        found = value == needle
    elif match_type == "starts-with":
        found = value.startswith(needle)
    elif match_type == "ends-with":
        found = value.endswith(needle)
    else:
        found = needle in value
    return found != (node.get("negate-condition") == "yes")


def _prop_matches(node: ET.Element, component: Any) -> bool:
    name = node.get("name", "").upper()
    values = component.get(name)
    present = values is not None
    if node.find(f"{{{CALDAV}}}is-not-defined") is not None:
        return not present
    if not present:
        return False
    items = values if isinstance(values, list) else [values]
    time_range = node.find(f"{{{CALDAV}}}time-range")
    text = node.find(f"{{{CALDAV}}}text-match")
    params = node.findall(f"{{{CALDAV}}}param-filter")
    for item in items:
        if time_range is not None:
            low, high = parse_time_range(time_range)
            moment = getattr(item, "dt", None)
            if moment is None:
                continue
            if isinstance(moment, datetime.date) and not isinstance(moment, datetime.datetime):
                moment = datetime.datetime.combine(moment, datetime.time(), UTC)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            if not low <= moment.timestamp() < high:
                continue
        if text is not None and not _text_match(text, str(item)):
            continue
        if params and not all(_param_matches(p, item) for p in params):
            continue
        return True
    return False


def _param_matches(node: ET.Element, item: Any) -> bool:
    name = node.get("name", "").upper()
    value = getattr(item, "params", {}).get(name)
    if node.find(f"{{{CALDAV}}}is-not-defined") is not None:
        return value is None
    if value is None:
        return False
    text = node.find(f"{{{CALDAV}}}text-match")
    return text is None or _text_match(text, str(value))


def expand(calendar: Any, low: float, high: float) -> bytes:
    """RFC 4791 §9.6.5: the instances in [low, high) as separate components in UTC, each
    with a RECURRENCE-ID, and no RRULE/RDATE/EXDATE."""
    out = icalendar.Calendar()
    for key, value in calendar.items():
        out.add(key, value)
    for instance in occurrences(calendar, low, high):
        component = instance.copy() if hasattr(instance, "copy") else instance
        for prop in ("RRULE", "RDATE", "EXDATE"):
            component.pop(prop, None)
        for prop in ("DTSTART", "DTEND", "DUE", "RECURRENCE-ID"):
            value = component.get(prop)
            if value is not None and isinstance(value.dt, datetime.datetime):
                moment = value.dt if value.dt.tzinfo else value.dt.replace(tzinfo=UTC)
                component.pop(prop)
                component.add(prop, moment.astimezone(UTC))
        if component.get("RECURRENCE-ID") is None and _is_recurring(calendar):
            start = component.get("DTSTART")
            if start is not None:
                component.add("RECURRENCE-ID", start.dt)
        out.add_component(component)
    return bytes(out.to_ical())


def limit_recurrence_set(calendar: Any, low: float, high: float) -> bytes:
    """RFC 4791 §9.6.6: the master components, and only the overridden instances that
    impact [low, high): their own time overlaps it, the time they replace does, or they
    carry RANGE=THISANDFUTURE from a point before ``high``."""
    out = icalendar.Calendar()
    for key, value in calendar.items():
        out.add(key, value)
    masters = {
        (c.name, str(c.get("UID", ""))): c
        for c in calendar.subcomponents
        if c.get("RECURRENCE-ID") is None
    }
    for component in calendar.subcomponents:
        recurrence = component.get("RECURRENCE-ID")
        if recurrence is None or _impacts(component, recurrence, masters, low, high):
            out.add_component(component)
    return bytes(out.to_ical())


def _impacts(
    component: Any, recurrence: Any, masters: dict[tuple[str, str], Any], low: float, high: float
) -> bool:
    if overlaps(span(component), low, high, component.name):
        return True
    original = epoch(recurrence.dt)
    if str(recurrence.params.get("RANGE", "")).upper() == "THISANDFUTURE" and original < high:
        return True
    master = masters.get((component.name, str(component.get("UID", ""))))
    first, last = span(master) if master is not None else (None, None)
    length = (last - first) if first is not None and last is not None else 0.0
    return overlaps((original, original + length), low, high, component.name)


def _is_recurring(calendar: Any) -> bool:
    return any(
        c.get("RRULE") is not None or c.get("RDATE") is not None for c in calendar.subcomponents
    )


def freebusy(calendars: list[Any], low: float, high: float) -> list[tuple[float, float, str]]:
    """Busy periods in [low, high): (start, end, FBTYPE), events not transparent or cancelled."""
    periods: list[tuple[float, float, str]] = []
    for calendar in calendars:
        for instance in occurrences(calendar, low, high):
            if instance.name != "VEVENT":
                continue
            if str(instance.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT":
                continue
            status = str(instance.get("STATUS", "CONFIRMED")).upper()
            if status == "CANCELLED":
                continue
            start = instance.get("DTSTART")
            if start is None or not isinstance(start.dt, datetime.datetime):
                continue  # all-day events do not block time (RFC 4791 §7.10)
            begin = start.dt if start.dt.tzinfo else start.dt.replace(tzinfo=UTC)
            end_prop = instance.get("DTEND")
            duration = instance.get("DURATION")
            if end_prop is not None:
                finish = end_prop.dt if end_prop.dt.tzinfo else end_prop.dt.replace(tzinfo=UTC)
            elif duration is not None:
                finish = begin + duration.dt
            else:
                continue
            kind = "BUSY-TENTATIVE" if status == "TENTATIVE" else "BUSY"
            periods.append((max(begin.timestamp(), low), min(finish.timestamp(), high), kind))
    return sorted(p for p in periods if p[1] > p[0])


def card_matches(filter_node: ET.Element | None, data: bytes) -> bool:
    """RFC 6352 §10.5 on one vCard (prop-filter on property names, text-match on values)."""
    if filter_node is None:
        return True
    props = filter_node.findall(f"{{{CARDDAV}}}prop-filter")
    if not props:
        return True
    fields: dict[str, list[str]] = {}
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    lines: list[str] = []
    for raw in text.split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += raw[1:]
        elif raw:
            lines.append(raw)
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            key = name.split(";", 1)[0].rpartition(".")[2].upper()
            fields.setdefault(key, []).append(value)
    results = [_card_prop(p, fields) for p in props]
    if filter_node.get("test", "anyof") == "allof":
        return all(results)
    return any(results)


def _card_prop(node: ET.Element, fields: dict[str, list[str]]) -> bool:
    values = fields.get(node.get("name", "").upper())
    if node.find(f"{{{CARDDAV}}}is-not-defined") is not None:
        return not values
    if not values:
        return False
    matches_ = [
        any(_card_text(t, v) for v in values) for t in node.findall(f"{{{CARDDAV}}}text-match")
    ]
    if not matches_:
        return True
    return all(matches_) if node.get("test") == "allof" else any(matches_)


def _card_text(node: ET.Element, value: str) -> bool:
    needle = (node.text or "").strip().casefold()
    value = value.casefold()
    match_type = node.get("match-type", "contains")
    found = {
        "equals": value == needle,
        "starts-with": value.startswith(needle),
        "ends-with": value.endswith(needle),
    }.get(match_type, needle in value)
    return found != (node.get("negate-condition") == "yes")
