"""Calendar scheduling: iTIP (RFC 5546) inside the server (CalDAV scheduling, RFC 6638) and
by email (iMIP, RFC 6047).

Owns both directions, for every protocol that changes a calendar or delivers mail:

- Outgoing. Before a calendar object is stored, :meth:`Scheduling.prepare_put` works out
  the iTIP messages the change calls for (RFC 6638 §3.2) and the SCHEDULE-STATUS of each
  attendee scheduled; after it is stored or removed (:meth:`Scheduling.plan_delete`),
  :meth:`Scheduling.send` delivers them: to users of this server directly (their calendar
  and scheduling Inbox are written before the CalDAV request is answered), then by mail
  with ``Delivery.send`` to every recipient (remote ones through the relay queue; local
  ones still get the mail, for mail-only clients). The organizer (ORGANIZER is one of the
  owner's addresses) sends REQUEST to every other attendee when the object is new or a
  scheduling-relevant property changed (see ``_SCHEDULING_PROPERTIES``), and CANCEL to
  attendees removed or on deletion; an attendee whose own PARTSTAT changed sends REPLY to
  the organizer, and one who deletes their copy a declining REPLY. Attendees (or an
  organizer) marked SCHEDULE-AGENT=CLIENT or NONE are left to the client (§7.1).
- Incoming. The same code applies a message from a local user and one found in mail
  (after a message is delivered, :meth:`Scheduling.receive` looks for a ``text/calendar``
  part): REQUEST is imported into the recipient's default calendar (an existing copy, in
  any of their calendars, is updated when the message is newer by SEQUENCE, then DTSTAMP:
  RFC 5546 §2.1.5), CANCEL marks the copy STATUS:CANCELLED (it is kept, so clients show it
  struck through), REPLY sets the attendee's PARTSTAT in the organizer's own copy. Each
  message that changed a calendar is also kept, METHOD and all, in the recipient's
  scheduling Inbox (RFC 6638 §4.1; ``Store.schedule_inbox``), where clients find it and
  delete it. Copies imported before into the old ``schedule-inbox`` calendar are still
  found and updated there; that calendar is no longer made.
- Schedule-Tag (RFC 6638 §3.2.10): changes when a client stores the object or when an
  organizer's message changes an attendee's copy, not when a reply is merged into the
  organizer's copy.

Trust (RFC 6047 §3.2, §6): a REQUEST or CANCEL is applied only when the message's From (and
the envelope sender, when there is one) is the ORGANIZER; a REPLY only when it is the
ATTENDEE it updates. An invitation whose organizer is the recipient is ignored. Alarms of a
remote organizer are not imported, and none are sent out.

Must not: know HTTP, SMTP or IMAP; fail or delay a delivery (incoming work runs after the
message is stored, off the event loop, and every error is logged and dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import email.policy
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any, Final, Literal

import icalendar

from rmail.delivery import Delivery
from rmail.errors import AlreadyExists, NotFound, RmailError
from rmail.ical import COMPONENTS, UTC, InvalidCalendar, parse_calendar
from rmail.store import Store
from rmail.store.accounts import Account
from rmail.store.dav import Collection, ObjectMeta, PreconditionFailed, ScheduleTagChange

__all__ = ["LEGACY_INBOX_CALENDAR", "Itip", "Prepared", "Scheduling", "is_scheduling_object"]

logger = logging.getLogger(__name__)

Method = Literal["REQUEST", "CANCEL", "REPLY"]

# The calendar invitations were imported into before RFC 6638 scheduling: no longer made,
# but copies already in it are still found, updated and cancelled there.
LEGACY_INBOX_CALENDAR: Final = "schedule-inbox"
# Where an invitation goes when the attendee has no copy yet (schedule-default-calendar-URL).
DEFAULT_CALENDAR: Final = "default"
_DEFAULT_PROPS: Final = {"displayname": "Calendar", "components": list(COMPONENTS)}
# RFC 6638 §7.1: SCHEDULE-AGENT values under which the server does not schedule.
_CLIENT_AGENTS: Final = ("CLIENT", "NONE")
# RFC 6638 §7 parameters that belong to the stored object, never to an iTIP message.
_SCHEDULE_PARAMS: Final = ("SCHEDULE-AGENT", "SCHEDULE-STATUS", "SCHEDULE-FORCE-SEND")
# RFC 6638 §3.2.9 (iTIP REQUEST-STATUS codes, RFC 5546 §3.6).
STATUS_PENDING: Final = "1.1"  # sent (to the relay queue), delivery not yet known
STATUS_DELIVERED: Final = "1.2"
STATUS_INVALID_USER: Final = "3.7"
# What makes an organizer's change worth a new REQUEST (RFC 5546 §2.1.4 lists what
# attendees must hear about; DESCRIPTION and alarms alone do not re-invite).
_SCHEDULING_PROPERTIES: Final = (
    "DTSTART",
    "DTEND",
    "DURATION",
    "DUE",
    "RRULE",
    "RDATE",
    "EXDATE",
    "SUMMARY",
    "LOCATION",
    "SEQUENCE",
    "STATUS",
)
_ANSWERS: Final = ("ACCEPTED", "DECLINED", "TENTATIVE", "DELEGATED")
# Outcomes of an iTIP message that changed a calendar (the others leave the Inbox alone).
_APPLIED: Final = ("imported", "updated", "cancelled", "attendee status updated")
_PRODID: Final = "-//rmail//iMIP//EN"
# A calendar part larger than this is not looked at (CalDAV's max-resource-size).
_MAX_CALENDAR: Final = 1024 * 1024
# Messages kept in a scheduling Inbox; past it the oldest are dropped. RFC 6638 sets no
# limit; a client that processes its Inbox keeps it near empty.
INBOX_MAX: Final = 500
# Tries of a read-modify-write of one object when another writer gets in between.
_WRITE_TRIES: Final = 3
_CALENDAR_TYPE = re.compile(rb"text/calendar", re.IGNORECASE)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=~-]{0,150}$")


@dataclass(frozen=True, slots=True)
class Itip:
    """One iTIP message to mail: from whom, to whom, and the finished RFC 5322 bytes."""

    method: Method
    uid: str
    sender: str
    recipients: tuple[str, ...]
    message: bytes
    calendar: bytes = b""  # the iTIP object alone (METHOD included), for CalDAV delivery


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a CalDAV PUT stores and sends (RFC 6638 §3.2).

    Attributes:
        data: the object to store: as sent, or with SCHEDULE-STATUS set on the attendees
            scheduled and the client's SCHEDULE-FORCE-SEND removed.
        changed: ``data`` differs from what the client sent (no ETag in the answer then,
            RFC 4791 §5.3.4).
        scheduling_object: an organizer or attendee scheduling object resource of the
            owner's (RFC 6638 §3.1): it carries a Schedule-Tag.
        itips: the messages to deliver once the object is stored.
    """

    data: bytes
    changed: bool
    scheduling_object: bool
    itips: tuple[Itip, ...]


class Scheduling:
    """iMIP for the calendars of local users."""

    def __init__(self, store: Store, delivery: Delivery | None, hostname: str) -> None:
        self.store = store
        self.delivery = delivery
        self.hostname = hostname
        self._tasks: set[asyncio.Task[None]] = set()

    def addresses(self, owner: str) -> frozenset[str]:
        """The owner's calendar user addresses (own address and exact aliases), lowercase."""
        return frozenset(a.lower() for a in self.store.accounts.own_addresses(owner))

    # -- outgoing ----------------------------------------------------------------------------

    def plan_put(self, owner: str, old: bytes | None, new: bytes) -> list[Itip]:
        """The iTIP messages owed after ``owner`` stored ``new`` over ``old`` (None: created)."""
        return list(self.prepare_put(owner, old, new).itips)

    def prepare_put(self, owner: str, old: bytes | None, new: bytes) -> Prepared:
        """RFC 6638 §3.2: what to store and what to send when ``owner`` PUTs ``new``.

        The organizer's copy gets SCHEDULE-STATUS on each attendee scheduled (§3.2.9):
        1.2 for a user of this server (delivered before the PUT is answered), 1.1 for a
        remote one (mailed through the relay queue), 3.7 for an address that is nobody's.
        Attendees with SCHEDULE-AGENT=CLIENT or NONE are left alone (§7.1).
        """
        owner = owner.lower()
        calendar = _parse(new)
        if calendar is None:
            return Prepared(new, False, False, ())
        if not is_scheduling_object(calendar):
            return Prepared(new, False, False, ())  # the common case
        organizer = _organizer(calendar)
        assert organizer is not None
        mine = self.addresses(owner)
        before = _parse(old) if old is not None else None
        if organizer in mine:
            reset = _reset_partstats(before, calendar, mine) if before is not None else False
            itips = self._organizer_changes(organizer, mine, before, calendar)
            statuses = {
                rcpt: self.recipient_status(rcpt)
                for itip in itips
                if itip.method != "CANCEL" or _cancelled(calendar)
                for rcpt in itip.recipients
            }
            changed = _set_schedule_status(calendar, statuses) or reset
            kept = [self._without(itip, statuses) for itip in itips]
            data = calendar.to_ical() if changed else new
            return Prepared(data, changed, True, tuple(i for i in kept if i is not None))
        me = mine & _attendee_set(calendar)
        if not me:
            return Prepared(new, False, False, ())
        if before is None or _agent(_organizer_property(calendar)) in _CLIENT_AGENTS:
            return Prepared(new, False, True, ())
        attendee = _first(me, calendar)
        return Prepared(
            new, False, True, tuple(self._attendee_reply(attendee, organizer, before, calendar))
        )

    def _without(self, itip: Itip, statuses: dict[str, str]) -> Itip | None:
        """``itip`` without the recipients that are nobody (3.7): nothing to send them."""
        keep = [r for r in itip.recipients if statuses.get(r) != STATUS_INVALID_USER]
        if len(keep) == len(itip.recipients):
            return itip
        if not keep:
            return None
        body = icalendar.Calendar.from_ical(itip.calendar)
        return self._itip(itip.method, itip.sender, keep, body)

    def recipient_status(self, address: str) -> str:
        """RFC 6638 §3.2.9 SCHEDULE-STATUS for a message to ``address`` (blocking)."""
        domain = address.rpartition("@")[2]
        accounts = self.store.accounts
        if not accounts.has_domain(domain):
            return STATUS_PENDING
        try:
            targets = accounts.resolve(address)
        except RmailError:
            return STATUS_INVALID_USER
        return STATUS_DELIVERED if all(t.local for t in targets) else STATUS_PENDING

    def plan_delete(self, owner: str, old: bytes, *, reply: bool = True) -> list[Itip]:
        """The iTIP messages owed after ``owner`` deleted ``old`` (RFC 6638 §3.2.1.3,
        §3.2.2.4): CANCEL from the organizer, a declining REPLY from an attendee (unless
        ``reply`` is false: the client sent ``Schedule-Reply: F``, RFC 6638 §8.1)."""
        owner = owner.lower()
        calendar = _parse(old)
        if calendar is None or _cancelled(calendar):
            return []
        mine = self.addresses(owner)
        organizer = _organizer(calendar)
        if organizer is None:
            return []
        if organizer not in mine:
            if not reply:
                return []
            me = mine & _attendee_set(calendar)
            if not me or _agent(_organizer_property(calendar)) in _CLIENT_AGENTS:
                return []
            attendee = _first(me, calendar)
            declined = copy.deepcopy(calendar)
            changed = False
            for component in _components(declined):
                for value in _attendees(component):
                    if _address(value) == attendee:
                        changed |= str(value.params.get("PARTSTAT", "")).upper() != "DECLINED"
                        value.params["PARTSTAT"] = "DECLINED"
            if not changed:
                return []
            return [self._itip("REPLY", attendee, [organizer], _reply(declined, attendee))]
        attendees = sorted(
            a for a in _scheduled(calendar) if a not in mine and self._deliverable(a)
        )
        if not attendees:
            return []
        return [self._itip("CANCEL", organizer, attendees, _cancel(calendar))]

    def _deliverable(self, address: str) -> bool:
        return self.recipient_status(address) != STATUS_INVALID_USER

    def _organizer_changes(
        self, owner: str, mine: frozenset[str], before: Any | None, calendar: Any
    ) -> list[Itip]:
        out: list[Itip] = []
        attendees = _scheduled(calendar) - mine
        if before is not None and _organizer(before) in mine:
            removed = sorted(_scheduled(before) - mine - _attendee_set(calendar))
            if removed and not _cancelled(before):
                out.append(self._itip("CANCEL", owner, removed, _cancel(before)))
            if _signature(before) == _signature(calendar) and not _forced(calendar):
                return out
        if not attendees:
            return out
        if _cancelled(calendar):
            if before is None or not _cancelled(before):
                out.append(self._itip("CANCEL", owner, sorted(attendees), _cancel(calendar)))
            return out
        out.append(self._itip("REQUEST", owner, sorted(attendees), _request(calendar)))
        return out

    def plan_reply(self, owner: str, data: bytes) -> list[Itip]:
        """The REPLY owed after attendee ``owner`` answered an invitation (webmail's
        Accept/Tentative/Decline), whatever the stored copy said before."""
        owner = owner.lower()
        calendar = _parse(data)
        if calendar is None or _cancelled(calendar):
            return []
        organizer = _organizer(calendar)
        answered = any(_partstat(c, owner) in _ANSWERS for c in _components(calendar))
        if not organizer or organizer == owner or not answered:
            return []
        return [self._itip("REPLY", owner, [organizer], _reply(calendar, owner))]

    async def for_webmail(self, account: Account, action: str, data: bytes) -> None:
        """The webmail calendar's hook: ``request`` (the organizer saved an event with
        attendees), ``cancel`` (deleted it; ``data`` as it was) or ``reply``."""
        if action == "cancel":
            itips = await asyncio.to_thread(self.plan_delete, account.address, data)
        elif action == "reply":
            itips = await asyncio.to_thread(self.plan_reply, account.address, data)
        else:
            itips = await asyncio.to_thread(self.plan_put, account.address, None, data)
        await self.send(itips)

    def _attendee_reply(self, owner: str, organizer: str, before: Any, calendar: Any) -> list[Itip]:
        if _cancelled(calendar):
            return []
        old = {_rid(c): _partstat(c, owner) for c in _components(before)}
        changed = [
            c
            for c in _components(calendar)
            if _partstat(c, owner) in _ANSWERS and old.get(_rid(c)) != _partstat(c, owner)
        ]
        if not changed:
            return []
        return [self._itip("REPLY", owner, [organizer], _reply(calendar, owner))]

    def _itip(self, method: Method, sender: str, recipients: Sequence[str], body: Any) -> Itip:
        master = _components(body)[0]
        uid = str(master.get("UID", ""))
        return Itip(
            method,
            uid,
            sender,
            tuple(recipients),
            _mail(method, sender, recipients, body, self.hostname),
            body.to_ical(),
        )

    async def send(self, messages: Iterable[Itip]) -> None:
        """Deliver each message: into the calendars and scheduling Inbox of the local
        recipients first (RFC 6638 §4, before the caller answers), then by mail to every
        recipient (iMIP: remote ones through the relay queue; local ones still get the
        mail, for mail-only clients, and its import finds the copy already up to date).

        A failure is logged, never raised (the calendar change stands).
        """
        for itip in messages:
            await asyncio.to_thread(self.deliver_local, itip)
            if self.delivery is None:
                continue
            try:
                report, _ = await self.delivery.send(itip.message, itip.sender, itip.recipients)
            except RmailError as exc:
                logger.warning(
                    "imip not sent method=%s uid=%s error=%s", itip.method, itip.uid, exc
                )
                continue
            for rcpt, error in report.failed.items():
                logger.warning(
                    "imip not delivered method=%s uid=%s rcpt=%s error=%s",
                    itip.method,
                    itip.uid,
                    rcpt,
                    error,
                )
            logger.info(
                "imip sent method=%s uid=%s from=%s rcpts=%d",
                itip.method,
                itip.uid,
                itip.sender,
                len(itip.recipients),
            )

    def deliver_local(self, itip: Itip) -> None:
        """Apply ``itip`` for each recipient who is a user here (blocking; never raises).

        The sender is the authenticated owner of the change, so no From check is needed.
        """
        if not itip.calendar:
            return
        # One broad except: a calendar that cannot be changed must not fail the PUT.
        try:
            calendar = icalendar.Calendar.from_ical(itip.calendar)
            users: list[str] = []
            for rcpt in itip.recipients:
                if self.recipient_status(rcpt) != STATUS_DELIVERED:
                    continue
                users += [t.address for t in self.store.accounts.resolve(rcpt) if t.local]
            for user in dict.fromkeys(users):
                outcome = self._apply(
                    itip.method, user, itip.sender, itip.sender, calendar, direct=True
                )
                logger.info(
                    "itip delivered method=%s uid=%s to=%s outcome=%s",
                    itip.method,
                    itip.uid,
                    user,
                    outcome,
                )
        except Exception:
            logger.exception("itip delivery failed method=%s uid=%s", itip.method, itip.uid)

    # -- incoming ----------------------------------------------------------------------------

    def delivered(self, message: bytes, mail_from: str | None, addresses: Sequence[str]) -> None:
        """Delivery's hook (on the event loop): look at the message in a thread, later.

        Cheap when the message has no calendar part: one byte search, no task. (The search
        is on a lowercased copy: about 10x faster than the case-insensitive regular
        expression over a 10 KB message, and the same answer, both being ASCII-only.)
        """
        if not addresses or b"text/calendar" not in message.lower():
            return
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self.receive, message, mail_from, list(addresses))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the incoming messages still being looked at (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def receive(self, message: bytes, mail_from: str | None, addresses: Sequence[str]) -> None:
        """Apply the iTIP message in ``message`` (if any) for each local recipient.

        Blocking. Never raises: the message is delivered already, and a calendar it cannot
        change is only logged.
        """
        if _CALENDAR_TYPE.search(message) is None:
            return
        # One broad except: this runs detached from any request, after the delivery.
        try:
            self._receive(message, mail_from, addresses)
        except Exception:
            logger.exception("imip processing failed; the message stays delivered")

    def _receive(self, message: bytes, mail_from: str | None, addresses: Sequence[str]) -> None:
        parsed = BytesParser(policy=email.policy.default).parsebytes(message)
        found = _itip_part(parsed)
        if found is None:
            return
        method, calendar = found
        sender = parseaddr(str(parsed.get("From", "")))[1].lower()
        envelope = (mail_from or "").lower()
        uid = str(_components(calendar)[0].get("UID", ""))
        for address in dict.fromkeys(a.lower() for a in addresses):
            outcome = self._apply(method, address, sender, envelope, calendar)
            logger.info(
                "imip received method=%s uid=%s to=%s from=%s outcome=%s",
                method,
                uid,
                address,
                sender,
                outcome,
            )

    def _apply(
        self,
        method: str,
        owner: str,
        sender: str,
        envelope: str,
        incoming: Any,
        *,
        direct: bool = False,
    ) -> str:
        """Apply one iTIP message for ``owner``; when it changed their calendar, a copy of
        the message goes to their scheduling Inbox (RFC 6638 §4.1). Returns the outcome.

        ``direct``: delivered in-process, in the order the organizer's changes were stored,
        so a REQUEST as old as the copy (same SEQUENCE, DTSTAMP in the same second) that
        says something else is applied; from mail it could be an older one arriving late.
        """
        try:
            if method == "REQUEST":
                outcome = self._apply_request(owner, sender, envelope, incoming, direct=direct)
            elif method == "CANCEL":
                outcome = self._apply_cancel(owner, sender, envelope, incoming)
            elif method == "REPLY":
                outcome = self._apply_reply(owner, sender, envelope, incoming)
            else:
                return f"method {method} not handled"
            if outcome.startswith(_APPLIED):
                self._to_inbox(owner, incoming, method)
        except (RmailError, ValueError, KeyError, TypeError) as exc:
            return f"error: {exc}"
        return outcome

    def _to_inbox(self, owner: str, incoming: Any, method: str) -> None:
        """Keep the iTIP message, METHOD and all, as a new resource of the owner's Inbox."""
        message = _new_calendar(None, incoming)
        message.add("METHOD", method)
        for component in _components(incoming):
            message.add_component(_without_alarms(component))
        data = message.to_ical()
        inbox = self.store.schedule_inbox(owner)
        stamp = datetime.datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{secrets.token_hex(6)}.ics"
        _, info = parse_calendar(data)
        # The index keys objects by UID, unique in a collection; the Inbox holds several
        # messages about one event, so each is indexed under its own name.
        fields = info.index_fields
        fields["uid"] = name
        inbox.put(name, data, **fields, if_none_match=True)
        # Nobody empties the Inbox of a user who reads invitations only in their mail: the
        # oldest messages go (names start with the time they came).
        names = sorted(m.name for m in inbox.objects())
        for old in names[: max(0, len(names) - INBOX_MAX)]:
            with contextlib.suppress(NotFound):
                inbox.delete(old)

    def _apply_request(
        self, owner: str, sender: str, envelope: str, incoming: Any, *, direct: bool = False
    ) -> str:
        organizer = _organizer(incoming)
        if not organizer:
            return "ignored: no organizer"
        if organizer == owner:
            return "ignored: the recipient is the organizer"
        if not _sent_by(organizer, sender, envelope):
            return "ignored: sender is not the organizer"
        stored = _stored_copy(incoming)
        uid = str(_components(stored)[0]["UID"])
        found = self._find(owner, uid)
        if found is None:
            component = _components(stored)[0].name
            collection = self.default_calendar(owner, component)
            self._write(collection, _object_name(uid), stored, None, "new")
            return f"imported into {collection.name}"
        collection, meta, current = found
        if _organizer(current) != organizer:
            return "ignored: the stored copy has another organizer"
        same = _order(incoming) == _order(current)
        if _order(incoming) < _order(current) or (
            same and (not direct or _signature(incoming) == _signature(current))
        ):
            return "ignored: not newer than the stored copy"
        merged = _merge(current, stored, owner)
        self._write(collection, meta.name, merged, meta.etag, "new")
        return f"updated in {collection.name}"

    def _apply_cancel(self, owner: str, sender: str, envelope: str, incoming: Any) -> str:
        organizer = _organizer(incoming)
        if not organizer or not _sent_by(organizer, sender, envelope):
            return "ignored: sender is not the organizer"
        uid = str(_components(incoming)[0].get("UID", ""))

        def change(current: Any) -> bool:
            if _organizer(current) != organizer:
                return False
            return _mark_cancelled(current, incoming)

        return self._update(owner, uid, change, "cancelled", "new")

    def _apply_reply(self, owner: str, sender: str, envelope: str, incoming: Any) -> str:
        answers: list[tuple[Any, str, str]] = []  # (recurrence id, attendee, partstat)
        for component in _components(incoming):
            for attendee in _attendees(component):
                address = _address(attendee)
                if address is None:
                    continue
                if not _sent_by(address, sender, envelope):
                    return f"ignored: sender is not the attendee {address}"
                partstat = str(attendee.params.get("PARTSTAT", "NEEDS-ACTION")).upper()
                answers.append((_rid(component), address, partstat))
        if not answers:
            return "ignored: no attendee"
        uid = str(_components(incoming)[0].get("UID", ""))

        def change(current: Any) -> bool:
            if _organizer(current) != owner:
                return False
            changed = False
            by_rid = {_rid(c): c for c in _components(current)}
            for rid, address, partstat in answers:
                target = by_rid.get(rid)
                if target is None:
                    continue  # an answer for an instance the organizer has no override of
                for attendee in _attendees(target):
                    if _address(attendee) == address and (
                        str(attendee.params.get("PARTSTAT", "")).upper() != partstat
                    ):
                        attendee.params["PARTSTAT"] = partstat
                        attendee.params.pop("RSVP", None)
                        changed = True
            return changed

        # RFC 6638 §3.2.10: an attendee's answer merged into the organizer's copy keeps its
        # Schedule-Tag, so that the organizer's next If-Schedule-Tag-Match PUT still works.
        return self._update(owner, uid, change, "attendee status updated", "keep")

    # -- the recipient's calendars -------------------------------------------------------

    def _find(self, owner: str, uid: str) -> tuple[Collection, ObjectMeta, Any] | None:
        """The owner's copy of ``uid``: the default calendar first, then the others."""
        calendars = self.store.dav(owner, "calendars")
        names = sorted(calendars.names(), key=lambda n: (n != DEFAULT_CALENDAR, n))
        for name in names:
            try:
                collection = calendars.collection(name)
                meta = collection.by_uid(uid)
                if meta is None:
                    continue
                data, meta = collection.read(meta.name)
            except NotFound:
                continue
            parsed = _parse(data)
            if parsed is not None:
                return collection, meta, parsed
        return None

    def _update(
        self,
        owner: str,
        uid: str,
        change: Callable[[Any], bool],
        done: str,
        schedule_tag: ScheduleTagChange,
    ) -> str:
        """Read-modify-write the owner's copy of ``uid``, again if another writer got in."""
        for _ in range(_WRITE_TRIES):
            found = self._find(owner, uid)
            if found is None:
                return "ignored: no such event"
            collection, meta, current = found
            if not change(current):
                return "nothing to change"
            try:
                self._write(collection, meta.name, current, meta.etag, schedule_tag)
            except PreconditionFailed:
                continue
            return done
        return "gave up: the event kept changing"

    def default_calendar(self, owner: str, component: str = "VEVENT") -> Collection:
        """Where a new invitation goes (RFC 6638 §9.2 schedule-default-calendar-URL): the
        calendar ``default`` when it takes the component, else the first that does; one is
        made when there is none."""
        calendars = self.store.dav(owner, "calendars")
        # The user's choice (PROPPATCH of schedule-default-calendar-URL on the Inbox) first.
        chosen = self.store.schedule_inbox(owner).info().props.get("default_calendar")
        names = sorted(calendars.names(), key=lambda n: (n != chosen, n != DEFAULT_CALENDAR, n))
        for name in names:
            if name == LEGACY_INBOX_CALENDAR and name != chosen:
                continue
            try:
                collection = calendars.collection(name)
                if component in collection.info().props.get("components", COMPONENTS):
                    return collection
            except NotFound:
                continue
        try:
            return calendars.create(DEFAULT_CALENDAR, _DEFAULT_PROPS)
        except AlreadyExists:  # made meanwhile by another request
            return calendars.collection(DEFAULT_CALENDAR)

    def _write(
        self,
        collection: Collection,
        name: str,
        calendar: Any,
        etag: str | None,
        schedule_tag: ScheduleTagChange,
    ) -> None:
        data = calendar.to_ical()
        allowed = collection.info().props.get("components", COMPONENTS)
        _, info = parse_calendar(data, allowed)
        collection.put(
            name,
            data,
            **info.index_fields,
            if_match=etag,
            if_none_match=etag is None,
            schedule_tag=schedule_tag,
        )


# -- iCalendar helpers -------------------------------------------------------------------------


def _parse(data: bytes | None) -> Any | None:
    if data is None:
        return None
    try:
        return parse_calendar(data)[0]
    except InvalidCalendar:
        return None


def is_scheduling_object(calendar: Any) -> bool:
    """RFC 6638 §3.1: whether a parsed calendar object is a scheduling object resource (an
    event or to-do with an ORGANIZER and at least one ATTENDEE, as ``mailto:`` addresses).
    Such objects carry a Schedule-Tag, whichever protocol stored them."""
    return _organizer(calendar) is not None and bool(_attendee_set(calendar))


def _components(calendar: Any) -> list[Any]:
    """The scheduled components (events, to-dos), master first."""
    parts = [c for c in calendar.subcomponents if c.name in ("VEVENT", "VTODO")]
    return sorted(parts, key=lambda c: c.get("RECURRENCE-ID") is not None)


def _address(value: Any) -> str | None:
    text = str(value).strip()
    if text.lower().startswith("mailto:"):
        address = text[7:].strip().lower()
        return address or None
    return None


def _attendees(component: Any) -> list[Any]:
    value = component.get("ATTENDEE")
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _attendee_set(calendar: Any) -> set[str]:
    return {
        a
        for c in _components(calendar)
        for a in (_address(x) for x in _attendees(c))
        if a is not None
    }


def _agent(prop: Any) -> str:
    """RFC 6638 §7.1 SCHEDULE-AGENT of an ATTENDEE or ORGANIZER (SERVER when absent)."""
    if prop is None:
        return "SERVER"
    return str(getattr(prop, "params", {}).get("SCHEDULE-AGENT", "SERVER")).upper()


def _scheduled(calendar: Any) -> set[str]:
    """The attendees the server schedules: all but SCHEDULE-AGENT=CLIENT or NONE ones."""
    return {
        a
        for c in _components(calendar)
        for x in _attendees(c)
        if (a := _address(x)) is not None and _agent(x) not in _CLIENT_AGENTS
    }


def _organizer_property(calendar: Any) -> Any | None:
    for component in _components(calendar):
        value = component.get("ORGANIZER")
        if value is not None:
            return value
    return None


def _first(addresses: frozenset[str], calendar: Any) -> str:
    """The first of ``addresses`` to appear as an ATTENDEE of ``calendar``."""
    for component in _components(calendar):
        for value in _attendees(component):
            address = _address(value)
            if address in addresses:
                return address
    return min(addresses)


def _forced(calendar: Any) -> bool:
    """RFC 6638 §7.2: SCHEDULE-FORCE-SEND=REQUEST asks for a REQUEST even when unchanged."""
    return any(
        str(x.params.get("SCHEDULE-FORCE-SEND", "")).upper() == "REQUEST"
        for c in _components(calendar)
        for x in _attendees(c)
    )


# RFC 6638 §3.2.8: a change of these reschedules the instances, so answers no longer hold.
_RESCHEDULING: Final = ("DTSTART", "DTEND", "DURATION", "DUE", "RRULE", "RDATE", "EXDATE")


def _reset_partstats(before: Any, calendar: Any, organizer: frozenset[str]) -> bool:
    """RFC 6638 §3.2.8: in each component whose time changed, every attendee but the
    organizer is NEEDS-ACTION again. Returns whether anything changed."""
    old = {_rid(c): c for c in _components(before)}
    changed = False
    for component in _components(calendar):
        previous = old.get(_rid(component))
        if previous is None or all(
            _property_text(previous, n) == _property_text(component, n) for n in _RESCHEDULING
        ):
            continue
        for value in _attendees(component):
            if _address(value) in organizer or _agent(value) in _CLIENT_AGENTS:
                continue
            if str(value.params.get("PARTSTAT", "NEEDS-ACTION")).upper() != "NEEDS-ACTION":
                value.params["PARTSTAT"] = "NEEDS-ACTION"
                changed = True
    return changed


def _set_schedule_status(calendar: Any, statuses: dict[str, str]) -> bool:
    """Set SCHEDULE-STATUS on the attendees given (RFC 6638 §7.3) and drop every
    SCHEDULE-FORCE-SEND (§7.2: it acts once). Returns whether anything changed."""
    changed = False
    for component in _components(calendar):
        for value in _attendees(component):
            if value.params.pop("SCHEDULE-FORCE-SEND", None) is not None:
                changed = True
            status = statuses.get(_address(value) or "")
            if status is not None and str(value.params.get("SCHEDULE-STATUS", "")) != status:
                value.params["SCHEDULE-STATUS"] = status
                changed = True
    return changed


def _without_schedule_params(component: Any) -> None:
    """RFC 6638 §7: SCHEDULE-* parameters are the organizer's own; no iTIP message or
    attendee copy carries them."""
    for name in ("ATTENDEE", "ORGANIZER"):
        value = component.get(name)
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            for param in _SCHEDULE_PARAMS:
                item.params.pop(param, None)


def _organizer(calendar: Any) -> str | None:
    for component in _components(calendar):
        value = component.get("ORGANIZER")
        if value is not None:
            return _address(value)
    return None


def _partstat(component: Any, address: str) -> str | None:
    for attendee in _attendees(component):
        if _address(attendee) == address:
            return str(attendee.params.get("PARTSTAT", "NEEDS-ACTION")).upper()
    return None


def _rid(component: Any) -> str | None:
    value = component.get("RECURRENCE-ID")
    return value.to_ical().decode() if value is not None else None


def _cancelled(calendar: Any) -> bool:
    parts = _components(calendar)
    return bool(parts) and str(parts[0].get("STATUS", "")).upper() == "CANCELLED"


def _sequence(component: Any) -> int:
    try:
        return int(component.get("SEQUENCE", 0))
    except (TypeError, ValueError):
        return 0


def _order(calendar: Any) -> tuple[int, float]:
    """RFC 5546 §2.1.5: the newer message has the higher SEQUENCE, then the later DTSTAMP."""
    master = _components(calendar)[0]
    stamp = master.get("DTSTAMP")
    moment = 0.0
    if stamp is not None and isinstance(stamp.dt, datetime.datetime):
        value = stamp.dt if stamp.dt.tzinfo else stamp.dt.replace(tzinfo=UTC)
        moment = value.timestamp()
    return _sequence(master), moment


def _property_text(component: Any, name: str) -> tuple[str, ...]:
    value = component.get(name)
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    out = []
    for item in values:
        params = sorted((k, str(v)) for k, v in getattr(item, "params", {}).items())
        out.append(f"{params}{item.to_ical().decode()}")
    return tuple(sorted(out))


def _signature(calendar: Any) -> tuple[Any, ...]:
    """What attendees are told about: changed means a new REQUEST."""
    return tuple(
        (
            _rid(c),
            tuple(_property_text(c, name) for name in _SCHEDULING_PROPERTIES),
            tuple(sorted(a for a in (_address(x) for x in _attendees(c)) if a)),
        )
        for c in _components(calendar)
    )


def _new_calendar(method: Method | None, source: Any) -> Any:
    out = icalendar.Calendar()
    out.add("PRODID", _PRODID)
    out.add("VERSION", "2.0")
    if method is not None:
        out.add("METHOD", method)
    for timezone in source.subcomponents:
        if timezone.name == "VTIMEZONE":
            out.add_component(copy.deepcopy(timezone))
    return out


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC).replace(microsecond=0)


def _without_alarms(component: Any) -> Any:
    clone = copy.deepcopy(component)
    clone.subcomponents = [c for c in clone.subcomponents if c.name != "VALARM"]
    return clone


def _stamped(component: Any) -> Any:
    clone = _without_alarms(component)
    _without_schedule_params(clone)
    clone.pop("DTSTAMP", None)
    clone.add("DTSTAMP", _now())
    return clone


def _request(calendar: Any) -> Any:
    out = _new_calendar("REQUEST", calendar)
    for component in _components(calendar):
        out.add_component(_stamped(component))
    return out


def _cancel(calendar: Any) -> Any:
    """RFC 5546 §3.2.5: the whole object cancelled, SEQUENCE one higher."""
    out = _new_calendar("CANCEL", calendar)
    master = _stamped(_components(calendar)[0])
    master.pop("STATUS", None)
    master.add("STATUS", "CANCELLED")
    sequence = _sequence(master) + 1
    master.pop("SEQUENCE", None)
    master.add("SEQUENCE", sequence)
    out.add_component(master)
    return out


def _reply(calendar: Any, attendee: str) -> Any:
    """RFC 5546 §3.2.3: per component, the attendee's own ATTENDEE line and the identity."""
    out = _new_calendar("REPLY", calendar)
    for component in _components(calendar):
        part = icalendar.Event() if component.name == "VEVENT" else icalendar.Todo()
        for name in ("UID", "RECURRENCE-ID", "SEQUENCE", "ORGANIZER", "DTSTART", "SUMMARY"):
            if component.get(name) is not None:
                part[name] = copy.deepcopy(component[name])
        part.add("DTSTAMP", _now())
        for value in _attendees(component):
            if _address(value) == attendee:
                part.add("ATTENDEE", copy.deepcopy(value))
        _without_schedule_params(part)
        out.add_component(part)
    return out


def _stored_copy(incoming: Any) -> Any:
    """What a CalDAV calendar keeps of an iTIP message: no METHOD (RFC 4791 §4.1), no alarms."""
    out = _new_calendar(None, incoming)
    for component in _components(incoming):
        out.add_component(_without_alarms(component))
    return out


def _merge(current: Any, stored: Any, owner: str) -> Any:
    """The new copy: a REQUEST with the master replaces all; one with only overrides replaces
    those. The owner's answer is kept while the SEQUENCE (the organizer's significant
    changes, RFC 5546 §2.1.4) and the times (RFC 6638 §3.2.8) are unchanged."""
    incoming = _components(stored)
    has_master = any(c.get("RECURRENCE-ID") is None for c in incoming)
    old = {_rid(c): c for c in _components(current)}
    kept = {} if has_master else dict(old)
    for component in incoming:
        previous = old.get(_rid(component))
        if (
            previous is not None
            and _sequence(previous) == _sequence(component)
            and all(
                _property_text(previous, n) == _property_text(component, n) for n in _RESCHEDULING
            )
        ):
            answer = _partstat(previous, owner)
            for attendee in _attendees(component):
                if _address(attendee) == owner and answer is not None:
                    attendee.params["PARTSTAT"] = answer
        kept[_rid(component)] = component
    out = _new_calendar(None, stored)
    for component in sorted(kept.values(), key=lambda c: c.get("RECURRENCE-ID") is not None):
        out.add_component(component)
    return out


def _mark_cancelled(current: Any, incoming: Any) -> bool:
    """RFC 5546 §3.2.5: the whole object, or the instances named by RECURRENCE-ID.

    Returns whether anything changed (a CANCEL applied already changes nothing)."""
    parts = _components(current)
    by_rid = {_rid(c): c for c in parts}
    changed = False
    for cancel in _components(incoming):
        rid = _rid(cancel)
        if rid is None:
            targets = parts
        elif rid in by_rid:
            targets = [by_rid[rid]]
        else:
            master = by_rid.get(None)
            if master is not None:
                master.add("EXDATE", cancel["RECURRENCE-ID"].dt)
                changed = True
            continue
        for target in targets:
            sequence = max(_sequence(target), _sequence(cancel))
            if str(target.get("STATUS", "")).upper() == "CANCELLED" and (
                _sequence(target) == sequence
            ):
                continue
            target.pop("STATUS", None)
            target.add("STATUS", "CANCELLED")
            target.pop("SEQUENCE", None)
            target.add("SEQUENCE", sequence)
            changed = True
    return changed


def _sent_by(expected: str, sender: str, envelope: str) -> bool:
    return sender == expected and (not envelope or envelope == expected)


def _object_name(uid: str) -> str:
    """The resource name for a UID: the UID itself when it makes a safe name, else a digest."""
    if _SAFE_NAME.match(uid) and ".." not in uid:
        return f"{uid}.ics"
    return hashlib.sha256(uid.encode()).hexdigest()[:40] + ".ics"


def _itip_part(message: EmailMessage) -> tuple[str, Any] | None:
    """The first text/calendar part carrying an iTIP METHOD, parsed."""
    for part in message.walk():
        if part.get_content_type() != "text/calendar":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or len(payload) > _MAX_CALENDAR:
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            text = payload.decode(charset, "replace")
            calendar = icalendar.Calendar.from_ical(text)
        except (LookupError, ValueError, IndexError, KeyError, TypeError):
            continue
        method = calendar.get("METHOD") or part.get_param("method")
        if method is None or not _components(calendar):
            continue
        return str(method).upper(), calendar
    return None


# -- the mail ---------------------------------------------------------------------------------

_SUBJECTS: Final[dict[Method, str]] = {
    "REQUEST": "Invitation",
    "CANCEL": "Cancelled",
    "REPLY": "Reply",
}


def _when(component: Any) -> str:
    start = component.get("DTSTART")
    if start is None:
        return ""
    value = start.dt
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return value.strftime("%Y-%m-%d %H:%M")
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(value.isoformat())


def _mail(
    method: Method, sender: str, recipients: Sequence[str], body: Any, hostname: str
) -> bytes:
    """RFC 6047 §2.4: a text/plain summary and the text/calendar part with its method."""
    master = _components(body)[0]
    summary = str(master.get("SUMMARY", "")) or "(no title)"
    when = _when(master)
    lines = [f"{_SUBJECTS[method]}: {summary}"]
    if when:
        lines.append(f"When: {when}")
    if master.get("LOCATION"):
        lines.append(f"Where: {master['LOCATION']}")
    if method == "REPLY":
        for attendee in _attendees(master):
            status = str(attendee.params.get("PARTSTAT", "NEEDS-ACTION")).lower()
            lines.append(f"{_address(attendee)} has {status} this invitation.")
    elif method == "REQUEST":
        lines.append(f"Organizer: {sender}")
        others = sorted(_attendee_set(body) - {sender})
        if others:
            lines.append("Attendees: " + ", ".join(others))
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    subject = f"{_SUBJECTS[method]}: {summary}"
    if when and method != "REPLY":
        subject += f" @ {when}"
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=hostname)
    message.set_content("\n".join(lines) + "\n")
    message.add_alternative(
        body.to_ical().decode("utf-8"), subtype="calendar", params={"method": method}
    )
    for part in message.iter_parts():
        del part["MIME-Version"]  # added by add_alternative; only the top level has one
    return message.as_bytes(policy=email.policy.SMTP)
