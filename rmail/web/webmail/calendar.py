"""Webmail calendar pages: month, week, day and agenda views of the user's calendars, the
event form (create, edit, delete), calendar visibility and colours, the time zone, and
answers to invitations found in mail.

Events are written through the same :class:`~rmail.store.dav.DavStore` as CalDAV, so
CalDAV clients see every change (and the pages see theirs). The iCalendar work is in
:mod:`.calendar_ics`. A calendar's colour is its CalDAV colour property (Apple
``calendar-color``, which clients show too); which calendars are hidden and the time zone
are webmail preferences (:class:`~rmail.store.prefs.Preferences`, section ``calendar``).

Paths are looked up in the session user's own calendars only, so another user's event is
simply not found (404). Every page works without JavaScript; colours come from a small
per-user stylesheet, since the CSP allows no inline style.

Scheduling (iMIP, RFC 6047) is not done here: events with attendees are stored with
ORGANIZER and ATTENDEE;PARTSTAT=NEEDS-ACTION, and answers to invitations with the user's
PARTSTAT; the e-mails (REQUEST, CANCEL, REPLY) are the scheduling service's work, see
:data:`SCHEDULING`.
"""

from __future__ import annotations

import asyncio
import calendar as stdcalendar
import contextlib
import datetime
import hashlib
import re
import secrets
import uuid
import zoneinfo
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal, Protocol, get_args

import aiohttp_jinja2
from aiohttp import web

from rmail.errors import InvalidInput, NotFound, QuotaExceeded, RmailError
from rmail.ical import COMPONENTS, InvalidCalendar, parse_calendar
from rmail.message import ParsedMessage, attachment_bytes
from rmail.scheduling import is_scheduling_object
from rmail.store.accounts import Account
from rmail.store.dav import Collection, DavStore, PreconditionFailed
from rmail.store.prefs import Preferences
from rmail.web.api import API
from rmail.web.webmail import AREAS, PREFIX, base_url, page
from rmail.web.webmail.calendar_ics import (
    PARTSTATS,
    REPEATS,
    EventForm,
    Instance,
    Invitation,
    accept_invitation,
    form_of,
    instances,
    invitation_of,
    new_event,
    parse_form,
    partstat_of,
    update_event,
)
from rmail.web.webmail.mail import _context, _url
from rmail.web.webmail.session import Session

__all__ = ["SCHEDULING", "Scheduling", "invitation_for", "setup"]

View = Literal["month", "week", "day", "agenda"]
VIEWS: Final[tuple[View, ...]] = get_args(View)
AGENDA_DAYS: Final = 30
SECTION: Final = "calendar"  # of webmail.json
DEFAULT_ZONE: Final = "UTC"
# The calendar every user gets on first use: the same as CalDAV's (rmail.web.dav).
DEFAULT_CALENDAR: Final = "default"
_DEFAULT_PROPS: Final[Mapping[str, Any]] = {
    "displayname": "Calendar",
    "components": list(COMPONENTS),
}
PALETTE: Final = ("#1f5fd1", "#2e7d32", "#c62828", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457")
_COLOR = re.compile(r"^#([0-9A-Fa-f]{6})([0-9A-Fa-f]{2})?$")
_NAME_CHARS = re.compile(r"[^a-z0-9-]+")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=~-]{0,150}$")
_PARTSTAT_LABELS: Final = {
    "ACCEPTED": "Accepted",
    "TENTATIVE": "Tentative",
    "DECLINED": "Declined",
    "NEEDS-ACTION": "No answer yet",
}


class Scheduling(Protocol):
    """The scheduling service's entry point (iMIP, being written elsewhere): called after
    the webmail stored an event with attendees (``action`` "request" or "cancel") or an
    answer to an invitation ("reply"), with the object as stored (or, for "cancel", as it
    was). It sends the mails; the webmail does not wait for them."""

    def __call__(
        self, account: Account, action: Literal["request", "cancel", "reply"], data: bytes
    ) -> Awaitable[None]: ...


# Set by the scheduling service when it is there; without it nothing is mailed.
SCHEDULING: web.AppKey[Scheduling] = web.AppKey("webmail_scheduling")


@dataclass(frozen=True, slots=True)
class CalendarRow:
    name: str
    title: str
    color: str
    visible: bool


# -- per-user state -----------------------------------------------------------------------------


def _user_dir(request: web.Request, account: Account) -> Path:
    return request.app[API].store.accounts.user_dir(account.address)


def _calendars(request: web.Request, account: Account) -> DavStore:
    """The user's calendars, with the default one made on first use (as CalDAV does)."""
    store = request.app[API].store
    calendars = DavStore(_user_dir(request, account), "calendars", fsync=store.fsync)
    if not calendars.names():
        # RmailError: made meanwhile by CalDAV or another request, which is as good.
        with contextlib.suppress(RmailError):
            calendars.create(DEFAULT_CALENDAR, _DEFAULT_PROPS)
    return calendars


def _prefs(request: web.Request, account: Account) -> Preferences:
    return Preferences(_user_dir(request, account), fsync=request.app[API].store.fsync)


def _zone_of(section: Mapping[str, Any]) -> zoneinfo.ZoneInfo:
    name = section.get("timezone")
    if isinstance(name, str) and name in _zones():
        return zoneinfo.ZoneInfo(name)
    return zoneinfo.ZoneInfo(DEFAULT_ZONE)


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _color(value: Any, index: int) -> str:
    """A CSS colour (#rrggbb) for a stored colour (#RRGGBB or #RRGGBBAA), else the palette."""
    match = _COLOR.match(value) if isinstance(value, str) else None
    if match is None:
        return PALETTE[index % len(PALETTE)]
    return "#" + match.group(1).lower()


def _rows(calendars: DavStore, section: Mapping[str, Any]) -> list[CalendarRow]:
    hidden = set(section.get("hidden", []))
    rows = []
    for index, collection in enumerate(calendars.collections()):
        try:
            info = collection.info()
        except NotFound:
            continue
        if "VEVENT" not in info.props.get("components", COMPONENTS):
            continue
        rows.append(
            CalendarRow(
                name=collection.name,
                title=str(info.props.get("displayname") or collection.name),
                color=_color(info.props.get("color"), index),
                visible=collection.name not in hidden,
            )
        )
    return rows


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _check_quota(request: web.Request, account: Account, size: int) -> None:
    """The same rule as a CalDAV PUT: calendars count against the mail quota."""
    used = request.app[API].store.mailbox(account.address).usage_bytes()
    if used + size > account.quota_mb * 1024 * 1024:
        raise QuotaExceeded("your mailbox is full: the event was not saved")


# -- dates and views ----------------------------------------------------------------------------


def _day(request: web.Request, zone: zoneinfo.ZoneInfo) -> datetime.date:
    text = request.query.get("date", "")
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return datetime.datetime.now(zone).date()


def _add_months(day: datetime.date, months: int) -> datetime.date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    year = min(max(year, 1), 9999)
    last = stdcalendar.monthrange(year, month)[1]
    return day.replace(year=year, month=month, day=min(day.day, last))


def _span(view: View, day: datetime.date) -> tuple[datetime.date, datetime.date]:
    """The first day shown and the day after the last."""
    if view == "month":
        first = day.replace(day=1)
        start = first - datetime.timedelta(days=first.weekday())
        last = _add_months(first, 1) - datetime.timedelta(days=1)
        end = last + datetime.timedelta(days=7 - last.weekday())
        return start, end
    if view == "week":
        start = day - datetime.timedelta(days=day.weekday())
        return start, start + datetime.timedelta(days=7)
    if view == "day":
        return day, day + datetime.timedelta(days=1)
    return day, day + datetime.timedelta(days=AGENDA_DAYS)


def _step(view: View, day: datetime.date, sign: int) -> datetime.date:
    if view == "month":
        return _add_months(day, sign)
    days = {"week": 7, "day": 1, "agenda": AGENDA_DAYS}[view]
    try:
        return day + datetime.timedelta(days=sign * days)
    except OverflowError:
        return day


def _heading(view: View, day: datetime.date, start: datetime.date, end: datetime.date) -> str:
    if view == "month":
        return day.strftime("%B %Y")
    if view == "day":
        return day.strftime("%A %d %B %Y")
    last = end - datetime.timedelta(days=1)
    return f"{start.strftime('%d %b %Y')} \N{EN DASH} {last.strftime('%d %b %Y')}"


def _collect(
    calendars: DavStore,
    *,
    rows: list[CalendarRow],
    user: str,
    zone: zoneinfo.ZoneInfo,
    first: datetime.date,
    after: datetime.date,
) -> list[Instance]:
    """The instances of the visible calendars between the two days (blocking)."""
    start = datetime.datetime.combine(first, datetime.time(), zone)
    end = datetime.datetime.combine(after, datetime.time(), zone)
    # The index says which objects may overlap (a day's margin for floating times).
    low, high = start.timestamp() - 86400, end.timestamp() + 86400
    found: list[Instance] = []
    for row in rows:
        if not row.visible:
            continue
        try:
            collection = calendars.collection(row.name)
            metas = collection.objects()
        except NotFound:
            continue
        for meta in metas:
            if meta.component != "VEVENT" or meta.start is None or meta.end is None:
                continue
            if meta.start >= high or meta.end < low:
                continue
            try:
                data, _ = collection.read(meta.name)
                parsed, _ = parse_calendar(data)
                found += instances(
                    parsed,
                    collection=row.name,
                    name=meta.name,
                    user=user,
                    zone=zone,
                    start=start,
                    end=end,
                )
            except (NotFound, InvalidCalendar):
                continue  # deleted meanwhile, or stored by a client in a form we cannot read
    found.sort(key=lambda i: (not i.all_day, i.start, i.title))
    return found


def _form_values(form: EventForm | None, day: datetime.date) -> dict[str, str]:
    if form is None:
        return {
            # No end date: the form takes the start's (a prefilled one is easily left stale).
            "start_date": day.isoformat(),
            "start_time": "09:00",
            "end_time": "10:00",
            "repeat": "none",
        }
    return {
        "title": form.title,
        "all_day": "1" if form.all_day else "",
        "start_date": form.start.date().isoformat(),
        "start_time": form.start.strftime("%H:%M"),
        "end_date": form.end.date().isoformat(),
        "end_time": form.end.strftime("%H:%M"),
        "location": form.location,
        "description": form.description,
        "repeat": form.repeat,
        "count": "" if form.count is None else str(form.count),
        "until": "" if form.until is None else form.until.isoformat(),
        "reminder": "" if form.reminder is None else str(form.reminder),
        "attendees": ", ".join(form.attendees),
    }


def _posted(form: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _common(
    request: web.Request,
    session: Session,
    *,
    rows: list[CalendarRow],
    zone: zoneinfo.ZoneInfo,
    day: datetime.date,
    view: View,
    **extra: Any,
) -> dict[str, Any]:
    return _context(
        request,
        session,
        area="calendar",
        calendars=rows,
        zone=zone.key,
        zones=sorted(_zones()),
        day=day,
        view=view,
        views=VIEWS,
        repeats=REPEATS,
        partstat_labels=_PARTSTAT_LABELS,
        colors_url=_url(request, "calendar", "colors.css", v=_colors_version(rows)),
        **extra,
    )


def _colors_version(rows: list[CalendarRow]) -> str:
    text = "|".join(f"{r.name}={r.color}" for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- pages ----------------------------------------------------------------------------------


@page
async def home(request: web.Request, session: Session) -> web.StreamResponse:
    raise web.HTTPSeeOther(_url(request, "calendar", "month", **request.query))


@page
async def view_page(request: web.Request, session: Session) -> web.StreamResponse:
    view = request.match_info["view"]
    if view not in VIEWS:
        raise web.HTTPNotFound(text="No such calendar view.")
    return await _render_view(request, session, view)


async def _render_view(
    request: web.Request,
    session: Session,
    view: View,
    *,
    values: Mapping[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> web.StreamResponse:
    account = session.account

    def work() -> tuple[list[CalendarRow], zoneinfo.ZoneInfo, datetime.date, list[Instance]]:
        calendars = _calendars(request, account)
        section = _prefs(request, account).section(SECTION)
        zone = _zone_of(section)
        rows = _rows(calendars, section)
        day = _day(request, zone)
        first, after = _span(view, day)
        return (
            rows,
            zone,
            day,
            _collect(
                calendars, rows=rows, user=account.address, zone=zone, first=first, after=after
            ),
        )

    rows, zone, day, found = await asyncio.to_thread(work)
    first, after = _span(view, day)
    days = [first + datetime.timedelta(days=n) for n in range((after - first).days)]
    by_day = {d: [i for i in found if i.on(d)] for d in days}
    today = datetime.datetime.now(zone).date()
    context = _common(
        request,
        session,
        rows=rows,
        zone=zone,
        day=day,
        view=view,
        days=days,
        weeks=[days[n : n + 7] for n in range(0, len(days), 7)],
        by_day=by_day,
        agenda=[(d, by_day[d]) for d in days if by_day[d]],
        today=today,
        heading=_heading(view, day, first, after),
        prev_url=_url(request, "calendar", view, date=_step(view, day, -1).isoformat()),
        next_url=_url(request, "calendar", view, date=_step(view, day, 1).isoformat()),
        today_url=_url(request, "calendar", view, date=today.isoformat()),
        here=_url(request, "calendar", view, date=day.isoformat()),
        form=dict(values) if values is not None else _form_values(None, day),
        form_open=values is not None or request.query.get("new") == "1",
        error=error,
        page_title=f"Calendar · {_heading(view, day, first, after)}",
    )
    return aiohttp_jinja2.render_template("calendar_view.html", request, context, status=status)


@page
async def colors_css(request: web.Request, session: Session) -> web.StreamResponse:
    """Each calendar's colour as a CSS variable on the elements that carry its name."""
    account = session.account

    def work() -> list[CalendarRow]:
        section = _prefs(request, account).section(SECTION)
        return _rows(_calendars(request, account), section)

    rows = await asyncio.to_thread(work)
    # Names are [A-Za-z0-9._@+=~-] (rmail.store.dav), safe in a quoted attribute selector;
    # colours were checked by _color.
    css = "".join(f'[data-calendar="{r.name}"] {{ --cal-color: {r.color}; }}\n' for r in rows)
    return web.Response(text=css, content_type="text/css")


# -- events ---------------------------------------------------------------------------------


def _back_day(values: Mapping[str, str]) -> str:
    try:
        return datetime.date.fromisoformat(values.get("start_date", "")).isoformat()
    except ValueError:
        return ""


@page
async def create_event(request: web.Request, session: Session) -> web.StreamResponse:
    account = session.account
    values = _posted(await request.post())
    view = values.get("view", "month")
    view = view if view in VIEWS else "month"
    try:
        form = parse_form(values)
    except InvalidInput as exc:
        return await _render_view(request, session, view, values=values, error=str(exc), status=400)
    hostname = request.app[API].hostname
    uid = f"{uuid.uuid4()}@{hostname}"
    name = uuid.uuid4().hex + ".ics"

    def work() -> bytes:
        calendars = _calendars(request, account)
        section = _prefs(request, account).section(SECTION)
        target = values.get("calendar") or DEFAULT_CALENDAR
        collection = _writable(calendars, target)
        data = new_event(
            form, uid=uid, organizer=account.address, zone=_zone_of(section), now=_now()
        )
        _check_quota(request, account, len(data))
        collection.put(name, data, **_index_facts(data))
        return data

    try:
        data = await asyncio.to_thread(work)
    except (InvalidInput, QuotaExceeded, NotFound) as exc:
        return await _render_view(request, session, view, values=values, error=str(exc), status=400)
    if form.attendees:
        _schedule(request, account, "request", data)
    raise web.HTTPSeeOther(_url(request, "calendar", view, date=form.start.date().isoformat()))


def _writable(calendars: DavStore, name: str) -> Collection:
    """A calendar of the user that takes events. Raises NotFound."""
    collection = calendars.collection(name)
    if "VEVENT" not in collection.info().props.get("components", COMPONENTS):
        raise NotFound(f"the calendar {name!r} takes no events")
    return collection


def _index_facts(data: bytes) -> dict[str, Any]:
    """What :meth:`Collection.put` indexes, as a CalDAV PUT computes it. A scheduling object
    (an ORGANIZER and attendees) gets a new Schedule-Tag: every webmail save is the user's
    own change (RFC 6638 §3.2.10), as the same save over CalDAV would be."""
    calendar, info = parse_calendar(data, ("VEVENT",))
    return {**info.index_fields, "schedule_tag": "new" if is_scheduling_object(calendar) else None}


def _schedule(
    request: web.Request,
    account: Account,
    action: Literal["request", "cancel", "reply"],
    data: bytes,
) -> None:
    """Hand the change to the scheduling service, if there is one (it mails attendees or
    the organizer); the page does not wait for it."""
    scheduling = request.app.get(SCHEDULING)
    if scheduling is None:
        return
    task = asyncio.ensure_future(scheduling(account, action, data))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


_TASKS: set[asyncio.Future[None]] = set()


@page
async def event_page(request: web.Request, session: Session) -> web.StreamResponse:
    return await _render_event(request, session)


async def _render_event(
    request: web.Request,
    session: Session,
    *,
    values: Mapping[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> web.StreamResponse:
    account = session.account
    cal_name, name = request.match_info["calendar"], request.match_info["name"]

    def work() -> tuple[list[CalendarRow], zoneinfo.ZoneInfo, Any, str]:
        calendars = _calendars(request, account)
        section = _prefs(request, account).section(SECTION)
        data, meta = calendars.collection(cal_name).read(name)
        parsed, _ = parse_calendar(data)
        return _rows(calendars, section), _zone_of(section), parsed, meta.etag

    try:
        rows, zone, parsed, etag = await asyncio.to_thread(work)
        form = form_of(parsed, zone)
    except (NotFound, InvalidCalendar):
        raise web.HTTPNotFound(text="No such event.") from None
    master = next(c for c in parsed.walk("VEVENT") if c.get("RECURRENCE-ID") is None)
    attendees = [
        (address, partstat_of(master, address) or "NEEDS-ACTION") for address in form.attendees
    ]
    organizer = str(master.get("ORGANIZER", ""))
    day = form.start.date()
    context = _common(
        request,
        session,
        rows=rows,
        zone=zone,
        day=day,
        view="month",
        calendar_name=cal_name,
        name=name,
        uid=str(master.get("UID", "")),
        etag=etag,
        event=form,
        sequence=int(master.get("SEQUENCE", 0)),
        organizer=organizer[7:] if organizer.lower().startswith("mailto:") else organizer,
        attendees=attendees,
        my_partstat=partstat_of(master, account.address),
        form=dict(values) if values is not None else _form_values(form, day),
        error=error,
        back_url=_url(request, "calendar", "month", date=day.isoformat()),
        page_title=form.title or "Event",
    )
    return aiohttp_jinja2.render_template("calendar_event.html", request, context, status=status)


@page
async def change_event(request: web.Request, session: Session) -> web.StreamResponse:
    """Save (``action=save``, maybe into another calendar) or delete (``action=delete``)."""
    account = session.account
    cal_name, name = request.match_info["calendar"], request.match_info["name"]
    values = _posted(await request.post())
    action = values.get("action", "save")
    etag = values.get("etag") or None

    if action == "delete":

        def remove() -> bytes:
            collection = _calendars(request, account).collection(cal_name)
            data, _ = collection.read(name)
            collection.delete(name, if_match=etag)
            return data

        try:
            old = await asyncio.to_thread(remove)
        except NotFound:
            raise web.HTTPNotFound(text="No such event.") from None
        except PreconditionFailed:
            return await _render_event(request, session, error=_CHANGED_ELSEWHERE, status=409)
        if b"ATTENDEE" in old:
            _schedule(request, account, "cancel", old)
        raise web.HTTPSeeOther(_url(request, "calendar", "month", date=_back_day(values)))

    try:
        form = parse_form(values)
    except InvalidInput as exc:
        return await _render_event(request, session, values=values, error=str(exc), status=400)
    target = values.get("calendar") or cal_name

    def save() -> bytes:
        calendars = _calendars(request, account)
        section = _prefs(request, account).section(SECTION)
        collection = calendars.collection(cal_name)
        before, _ = collection.read(name)
        data = update_event(
            before, form, organizer=account.address, zone=_zone_of(section), now=_now()
        )
        _check_quota(request, account, len(data) - len(before))
        facts = _index_facts(data)
        if target == cal_name:
            collection.put(name, data, if_match=etag, **facts)
        else:  # moved: written there first, so a crash between leaves a copy, not nothing
            _writable(calendars, target).put(name, data, **facts)
            collection.delete(name, if_match=etag)
        return data

    try:
        data = await asyncio.to_thread(save)
    except NotFound as exc:
        if target != cal_name:
            return await _render_event(request, session, values=values, error=str(exc), status=400)
        raise web.HTTPNotFound(text="No such event.") from None
    except PreconditionFailed:
        return await _render_event(
            request, session, values=values, error=_CHANGED_ELSEWHERE, status=409
        )
    except (InvalidInput, QuotaExceeded) as exc:
        return await _render_event(request, session, values=values, error=str(exc), status=400)
    if form.attendees:
        _schedule(request, account, "request", data)
    raise web.HTTPSeeOther(_url(request, "calendar", "event", target, name))


_CHANGED_ELSEWHERE: Final = (
    "The event was changed elsewhere (another window or a calendar app) since this page "
    "was loaded. Reload it and try again."
)


# -- calendars and preferences ----------------------------------------------------------------


def _back(request: web.Request, values: Mapping[str, str]) -> str:
    back = values.get("back", "")
    if back.startswith(base_url(request) + PREFIX + "/calendar"):
        return back
    return _url(request, "calendar", "month")


@page
async def calendars_action(request: web.Request, session: Session) -> web.StreamResponse:
    """Form POST: ``show``/``hide`` a calendar, set its ``color``, ``create`` one, or set
    the ``timezone``."""
    account = session.account
    values = _posted(await request.post())
    action = values.get("action", "")
    name = values.get("calendar", "")

    def work() -> None:
        calendars = _calendars(request, account)
        prefs = _prefs(request, account)
        if action in ("show", "hide"):
            calendars.collection(name)  # NotFound for a calendar that is not the user's

            def visibility(section: dict[str, Any]) -> None:
                hidden = {h for h in section.get("hidden", []) if isinstance(h, str)}
                hidden.discard(name) if action == "show" else hidden.add(name)
                section["hidden"] = sorted(hidden)

            prefs.update(SECTION, visibility)
        elif action == "color":
            color = values.get("color", "")
            if not _COLOR.match(color):
                raise InvalidInput("a colour is #rrggbb")
            calendars.collection(name).set_props({"color": color.upper()})
        elif action == "create":
            title = values.get("title", "").strip()[:200] or "Calendar"
            color = values.get("color", "")
            slug = _NAME_CHARS.sub("-", title.lower()).strip("-")[:40] or "calendar"
            props = dict(_DEFAULT_PROPS, displayname=title)
            props["components"] = ["VEVENT"]
            if _COLOR.match(color):
                props["color"] = color.upper()
            calendars.create(f"{slug}-{secrets.token_hex(3)}", props)
        elif action == "timezone":
            zone = values.get("timezone", "")
            if zone not in _zones():
                raise InvalidInput("no such time zone")
            prefs.update(SECTION, lambda section: section.update(timezone=zone))

    try:
        await asyncio.to_thread(work)
    except NotFound:
        raise web.HTTPNotFound(text="No such calendar.") from None
    except RmailError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    raise web.HTTPSeeOther(_back(request, values))


# -- invitations --------------------------------------------------------------------------------


def _calendar_parts(parsed: ParsedMessage) -> list[str]:
    return [a.id for a in parsed.attachments if a.content_type == "text/calendar"]


def _find_uid(calendars: DavStore, uid: str) -> tuple[Collection, str] | None:
    for collection in calendars.collections():
        try:
            metas = collection.objects()
        except NotFound:
            continue
        for meta in metas:
            if meta.uid == uid:
                return collection, meta.name
    return None


async def invitation_for(
    request: web.Request, account: Account, raw: bytes, parsed: ParsedMessage
) -> dict[str, Any] | None:
    """What the message view shows for an invitation (a text/calendar METHOD:REQUEST part):
    the event, the part to answer, the user's answer so far and the event's page. None for
    any other message."""
    parts = _calendar_parts(parsed)
    if not parts:
        return None

    def work() -> dict[str, Any] | None:
        section = _prefs(request, account).section(SECTION)
        zone = _zone_of(section)
        for part in parts:
            found = attachment_bytes(raw, part)
            invitation: Invitation | None = invitation_of(found[0], zone) if found else None
            if invitation is None:
                continue
            answer: str | None = None
            event_url: str | None = None
            stored = _find_uid(_calendars(request, account), invitation.uid)
            if stored is not None:
                collection, name = stored
                try:
                    data, _ = collection.read(name)
                    calendar, _ = parse_calendar(data)
                except (NotFound, InvalidCalendar):
                    calendar = None
                if calendar is not None:
                    master = [c for c in calendar.walk("VEVENT") if c.get("RECURRENCE-ID") is None]
                    answer = partstat_of(master[0], account.address) if master else None
                    event_url = _url(request, "calendar", "event", collection.name, name)
            return {
                "event": invitation,
                "part": part,
                "answer": answer,
                "event_url": event_url,
                "partstats": PARTSTATS,
            }
        return None

    return await asyncio.to_thread(work)


@page
async def respond(request: web.Request, session: Session) -> web.StreamResponse:
    """Answer an invitation from a message (fields ``folder``, ``uid``, ``part``,
    ``partstat``): the event goes into the user's calendar (the one that already has its
    UID, else the default) with the user's PARTSTAT. The REPLY to the organizer is the
    scheduling service's (:data:`SCHEDULING`)."""
    account = session.account
    values = _posted(await request.post())
    partstat = values.get("partstat", "").upper()
    if partstat not in PARTSTATS:
        raise web.HTTPBadRequest(text="Answer ACCEPTED, TENTATIVE or DECLINED.")
    folder, part = values.get("folder", ""), values.get("part", "")
    try:
        uid = int(values.get("uid", ""))
    except ValueError:
        raise web.HTTPNotFound(text="No such message.") from None

    def work() -> tuple[str, str, bytes]:
        raw = request.app[API].store.mailbox(account.address).folder(folder).read(uid)
        found = attachment_bytes(raw, part)
        if found is None or found[1] != "text/calendar":
            raise NotFound("no invitation in that message")
        data, event_uid = accept_invitation(found[0], account.address, partstat, _now())
        calendars = _calendars(request, account)
        stored = _find_uid(calendars, event_uid)
        if stored is not None:
            collection, name = stored
        else:
            names = calendars.names()
            target = DEFAULT_CALENDAR if DEFAULT_CALENDAR in names else names[0]
            collection, name = _writable(calendars, target), _object_name(event_uid)
        _check_quota(request, account, len(data))
        collection.put(name, data, **_index_facts(data))
        return collection.name, name, data

    try:
        cal_name, name, data = await asyncio.to_thread(work)
    except NotFound:
        raise web.HTTPNotFound(text="No such invitation.") from None
    except (InvalidInput, QuotaExceeded) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    _schedule(request, account, "reply", data)
    raise web.HTTPSeeOther(_url(request, "calendar", "event", cal_name, name))


def _object_name(uid: str) -> str:
    """A resource name for a UID chosen by someone else: itself when it is a safe name."""
    if _SAFE_NAME.match(uid) and ".." not in uid:
        return uid + ".ics"
    return hashlib.sha256(uid.encode()).hexdigest()[:40] + ".ics"


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(PREFIX + "/calendar", home, name="calendar")
    r.add_get(PREFIX + "/calendar/colors.css", colors_css)
    r.add_post(PREFIX + "/calendar/events", create_event)
    r.add_post(PREFIX + "/calendar/calendars", calendars_action)
    r.add_post(PREFIX + "/calendar/invitation", respond)
    r.add_get(PREFIX + "/calendar/event/{calendar}/{name}", event_page)
    r.add_post(PREFIX + "/calendar/event/{calendar}/{name}", change_event)
    r.add_get(PREFIX + "/calendar/{view}", view_page)
    app[AREAS].append(("calendar", "Calendar", False))
