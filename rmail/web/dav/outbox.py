"""The scheduling Outbox (RFC 6638 §5): POST of an iTIP VFREEBUSY REQUEST.

The answer is a ``CALDAV:schedule-response`` with one ``response`` per recipient: for a user
of this server, ``2.0;Success`` and a VFREEBUSY REPLY made from all their calendars (those
marked ``schedule-calendar-transp`` transparent left out; transparent and cancelled events
too, as in the free-busy-query REPORT); ``3.7;Invalid calendar user`` for an address of
this server that is nobody's, and ``5.3;No scheduling support for user`` for a remote one
(their free-busy is not asked for by mail).

Implicit scheduling (RFC 6638 §3) makes the other iTIP methods unnecessary here: a POST of
REQUEST, REPLY or CANCEL for an event is refused with ``CALDAV:valid-scheduling-message``.

Must not: know aiohttp (the handler in ``__init__`` calls :func:`schedule_response`).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, Final

import icalendar

from rmail.errors import NotFound, RmailError
from rmail.ical import UTC
from rmail.scheduling import STATUS_DELIVERED, STATUS_INVALID_USER, Scheduling
from rmail.store import Store
from rmail.store.dav import Collection
from rmail.web.davxml import CALDAV, DAV, element, to_bytes

__all__ = ["OutboxRefused", "schedule_response"]

# RFC 5546 §3.6 request-status codes used in the answer.
_SUCCESS: Final = "2.0;Success"
_INVALID_USER: Final = "3.7;Invalid calendar user"
_NO_SCHEDULING: Final = "5.3;No scheduling support for user"
# Recipients answered in one POST: each costs a scan of their calendars.
MAX_RECIPIENTS: Final = 100

Busy = Callable[[Collection, float, float], list[tuple[float, float, str]]]
Render = Callable[..., bytes]


class OutboxRefused(Exception):
    """A POST the Outbox does not take: HTTP ``status`` with the CALDAV ``condition``."""

    def __init__(self, status: int, condition: str) -> None:
        super().__init__(condition)
        self.status = status
        self.condition = condition


def _address(value: Any) -> str | None:
    text = str(value).strip()
    if text.lower().startswith("mailto:") and len(text) > 7:
        return text[7:].strip().lower()
    return None


def _moment(prop: Any) -> float:
    value = prop.dt
    if not isinstance(value, datetime.datetime):
        value = datetime.datetime.combine(value, datetime.time(), UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def schedule_response(
    store: Store,
    scheduling: Scheduling,
    owner: str,
    body: bytes,
    *,
    busy: Busy,
    render: Render,
) -> bytes:
    """The schedule-response to a POSTed VFREEBUSY request of ``owner`` (blocking).

    ``busy(collection, low, high)`` gives the busy periods of one calendar and ``render``
    the VFREEBUSY text (both shared with the free-busy-query REPORT).

    Raises:
        OutboxRefused: not a VFREEBUSY REQUEST (403 valid-scheduling-message), bad data
            (400 valid-calendar-data), or the ORGANIZER is not one of the owner's addresses
            (403 organizer-allowed).
    """
    try:
        calendar = icalendar.Calendar.from_ical(body.decode("utf-8", "replace"))
    except (ValueError, IndexError, KeyError, TypeError):
        raise OutboxRefused(400, "valid-calendar-data") from None
    requests = [c for c in calendar.subcomponents if c.name == "VFREEBUSY"]
    if str(calendar.get("METHOD", "")).upper() != "REQUEST" or len(requests) != 1:
        raise OutboxRefused(403, "valid-scheduling-message")
    request = requests[0]
    organizer = _address(request.get("ORGANIZER", ""))
    if organizer is None or organizer not in scheduling.addresses(owner):
        raise OutboxRefused(403, "organizer-allowed")
    start, end = request.get("DTSTART"), request.get("DTEND")
    attendees = request.get("ATTENDEE")
    if start is None or end is None or attendees is None:
        raise OutboxRefused(403, "valid-scheduling-message")
    low, high = _moment(start), _moment(end)
    if high <= low:
        raise OutboxRefused(403, "valid-scheduling-message")
    recipients = list(attendees) if isinstance(attendees, list) else [attendees]
    if len(recipients) > MAX_RECIPIENTS:
        raise OutboxRefused(403, "valid-scheduling-message")
    uid = str(request.get("UID", ""))
    root = element(f"{{{CALDAV}}}schedule-response")
    for recipient in recipients:
        address = _address(recipient)
        answer = element(f"{{{CALDAV}}}response")
        answer.append(
            element(f"{{{CALDAV}}}recipient", None, element(f"{{{DAV}}}href", str(recipient)))
        )
        status = scheduling.recipient_status(address) if address is not None else None
        if address is None or status == STATUS_INVALID_USER:
            answer.append(element(f"{{{CALDAV}}}request-status", _INVALID_USER))
        elif status != STATUS_DELIVERED:
            answer.append(element(f"{{{CALDAV}}}request-status", _NO_SCHEDULING))
        else:
            periods = _user_busy(store, address, low, high, busy)
            extra = (
                *((f"UID:{uid}",) if uid else ()),
                f"ORGANIZER:mailto:{organizer}",
                f"ATTENDEE:mailto:{address}",
            )
            data = render(periods, low, high, method="REPLY", extra=extra)
            answer.append(element(f"{{{CALDAV}}}request-status", _SUCCESS))
            answer.append(element(f"{{{CALDAV}}}calendar-data", data.decode("utf-8")))
        root.append(answer)
    return to_bytes(root)


def _user_busy(
    store: Store, address: str, low: float, high: float, busy: Busy
) -> list[tuple[float, float, str]]:
    """Busy periods of the users ``address`` delivers to, over all their opaque calendars."""
    periods: list[tuple[float, float, str]] = []
    try:
        users = [r.address for r in store.accounts.resolve(address) if r.local]
    except RmailError:
        return periods
    for user in users:
        try:
            collections = list(store.dav(user, "calendars").collections())
        except NotFound:
            continue
        for collection in collections:
            try:
                # RFC 6638 §9.1: a transparent calendar does not count for free-busy.
                if collection.info().props.get("transp") == "transparent":
                    continue
                periods += busy(collection, low, high)
            except NotFound:
                continue
    return sorted(periods)
