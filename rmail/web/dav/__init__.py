"""CalDAV (RFC 4791) and CardDAV (RFC 6352) on a small WebDAV core (RFC 4918, 6578, 5689).

Methods: OPTIONS, PROPFIND (Depth 0 and 1; infinity refused with
``DAV:propfind-finite-depth``), PROPPATCH, MKCALENDAR, MKCOL (extended), GET, HEAD, PUT
(If-Match, If-None-Match: *, If-Schedule-Tag-Match), DELETE, LOCK and UNLOCK (class 2, see
``locking.py``), REPORT (calendar-query, calendar-multiget, free-busy-query,
sync-collection, addressbook-query, addressbook-multiget) and POST (the scheduling Outbox,
see ``outbox.py``).

Scheduling (RFC 6638, ``calendar-auto-schedule``): the principal names the scheduling
Inbox and Outbox (``resources.INBOX``, ``resources.OUTBOX``) and the user's calendar user
addresses; a PUT or DELETE of a scheduling object resource is handed to
:class:`rmail.scheduling.Scheduling`, which decides what is stored (SCHEDULE-STATUS) and
delivers the iTIP messages (local users directly, before the answer; others by iMIP);
scheduling objects carry a Schedule-Tag.

Authentication: HTTP Basic (``user@domain:password``, through the shared login limiter and
the verified-credentials cache) or a JSON API bearer token. Every user gets a calendar
``default`` and an address book ``default`` on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from rmail.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    QuotaExceeded,
)
from rmail.ical import (
    COMPONENTS,
    UTC,
    InvalidCalendar,
    load_calendar,
    parse_calendar,
    parse_card,
)
from rmail.scheduling import Prepared, Scheduling
from rmail.store.accounts import Account
from rmail.store.dav import (
    Collection,
    DavStore,
    Kind,
    ObjectMeta,
    PreconditionFailed,
    SyncTokenExpired,
)
from rmail.web.api import API, ApiServices
from rmail.web.auth import authenticate
from rmail.web.dav import locking, outbox, reports
from rmail.web.dav.resources import (
    INBOX,
    OUTBOX,
    PREFIX,
    Resource,
    collection_path,
    home_path,
    object_path,
    principal_path,
    resolve,
)
from rmail.web.davlocks import LockTable, supportedlock
from rmail.web.davxml import (
    APPLE,
    CALDAV,
    CARDDAV,
    CS,
    DAV,
    MAX_BODY,
    element,
    error_body,
    multistatus,
    parse,
    propstat_response,
    status_response,
)
from rmail.web.http import ApiError

__all__ = ["setup"]

# calendar-auto-schedule is RFC 6638's name for server-side scheduling (scheduling Inbox and
# Outbox, implicit scheduling on PUT and DELETE, Schedule-Tag); calendar-schedule is the
# name of its drafts, which older clients (and issue #7) look for.
DAV_CLASSES: Final = (
    "1, 2, 3, calendar-access, calendar-auto-schedule, calendar-schedule, addressbook,"
    " extended-mkcol"
)
# With ``calendar.scheduling`` off nothing is scheduled, so nothing is promised.
_NO_SCHEDULING: Final = "1, 2, 3, calendar-access, addressbook, extended-mkcol"
ALLOW: Final = (
    "OPTIONS, GET, HEAD, PUT, DELETE, MOVE, POST, PROPFIND, PROPPATCH, REPORT, MKCOL,"
    " MKCALENDAR, LOCK, UNLOCK"
)
# Largest calendar object or vCard accepted (RFC 4791 max-resource-size).
MAX_RESOURCE: Final = 1024 * 1024
_XML = "application/xml; charset=utf-8"
_MEDIA = {"calendars": "text/calendar; charset=utf-8", "addressbooks": "text/vcard; charset=utf-8"}
_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "calendars": {"displayname": "Calendar", "components": list(COMPONENTS)},
    "addressbooks": {"displayname": "Contacts"},
}


class DavServices:
    def __init__(self, api: ApiServices, scheduling: Scheduling | None = None) -> None:
        self.api = api
        self.scheduling = scheduling
        self.locks = LockTable()
        # Accounts (address, created) known to have a calendar and an address book: the
        # homes are listed once per process, not on every request. Forgotten when one of
        # the account's collections is deleted, so that deleting the last one still
        # brings the default back on the next request.
        self._have_defaults: set[tuple[str, str]] = set()

    def store(self, account: Account, kind: Kind) -> DavStore:
        return self.api.store.dav(account.address, kind)

    def collection(self, account: Account, kind: Kind, name: str) -> Collection:
        """A calendar, an address book or the scheduling Inbox. Raises NotFound."""
        if kind == "calendars" and name == INBOX:
            return self.api.store.schedule_inbox(account.address)
        return self.store(account, kind).collection(name)

    def has_defaults(self, account: Account) -> bool:
        return (account.address, account.created) in self._have_defaults

    def forget_defaults(self, account: Account) -> None:
        self._have_defaults.discard((account.address, account.created))

    def ensure_defaults(self, account: Account) -> None:
        kinds: tuple[Kind, ...] = ("calendars", "addressbooks")
        for kind in kinds:
            store = self.store(account, kind)
            if not store.names():
                with contextlib.suppress(AlreadyExists):
                    store.create("default", _DEFAULTS[kind])
        if len(self._have_defaults) > 100_000:
            self._have_defaults.clear()
        self._have_defaults.add((account.address, account.created))


DAVKEY = web.AppKey("dav", DavServices)


def _xml_response(
    body: bytes, status: int = 207, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=body, status=status, content_type="application/xml", charset="utf-8", headers=headers
    )


def _precondition(status: int, condition: str, namespace: str = DAV) -> web.Response:
    return web.Response(
        body=error_body(condition, namespace),
        status=status,
        content_type="application/xml",
        charset="utf-8",
    )


# -- authentication --------------------------------------------------------------------------


async def _account(request: web.Request) -> Account:
    return await authenticate(request, "dav")


# -- the entry point -------------------------------------------------------------------------


async def dispatch(request: web.Request) -> web.StreamResponse:
    method = request.method.upper()
    if method == "OPTIONS":
        classes = DAV_CLASSES if request.app[DAVKEY].scheduling is not None else _NO_SCHEDULING
        return web.Response(
            status=200, headers={"DAV": classes, "Allow": ALLOW, "Content-Length": "0"}
        )
    account = await _account(request)
    path = request.raw_path.split("?", 1)[0]
    if path == "/":
        path = f"{PREFIX}/"
    resource = resolve(path)
    if resource is None:
        raise ApiError(404, "not found")
    if resource.owner is not None and resource.owner != account.address:
        raise ApiError(404, "not found")  # another user's data does not exist for you
    dav = request.app[DAVKEY]
    if not dav.has_defaults(account):
        await asyncio.to_thread(dav.ensure_defaults, account)
    handler = _METHODS.get(method)
    if handler is None:
        raise ApiError(405, f"{method} is not supported here", {"Allow": ALLOW})
    try:
        response: web.StreamResponse = await handler(request, account, resource)
    except InvalidCalendar as exc:
        namespace = CARDDAV if exc.condition.endswith("address-data") else CALDAV
        status = 415 if exc.condition.startswith("supported-address") else 403
        return _precondition(status, exc.condition, namespace)
    return response


async def _body(request: web.Request, limit: int = MAX_BODY) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "request body too large")
    data = await request.content.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "request body too large")
    return data


def _depth(request: web.Request, default: str) -> str:
    depth = request.headers.get("Depth", default).strip().lower()
    if depth not in ("0", "1", "infinity"):
        raise ApiError(400, f"bad Depth header {depth!r}")
    return depth


# -- properties ------------------------------------------------------------------------------


def _supported_reports(kind: Kind | None) -> ET.Element:
    names = [(DAV, "sync-collection")]
    if kind == "calendars":
        names += [
            (CALDAV, "calendar-query"),
            (CALDAV, "calendar-multiget"),
            (CALDAV, "free-busy-query"),
        ]
    elif kind == "addressbooks":
        names += [(CARDDAV, "addressbook-query"), (CARDDAV, "addressbook-multiget")]
    root = element(f"{{{DAV}}}supported-report-set")
    for ns, name in names:
        report = element(f"{{{DAV}}}report", None, ET.Element(f"{{{ns}}}{name}"))
        root.append(element(f"{{{DAV}}}supported-report", None, report))
    return root


def _href(path: str) -> ET.Element:
    return element(f"{{{DAV}}}href", path)


def _privileges(scheduling: tuple[str, ...] = ()) -> ET.Element:
    root = element(f"{{{DAV}}}current-user-privilege-set")
    for name in (
        "read",
        "write",
        "write-properties",
        "write-content",
        "bind",
        "unbind",
        "read-current-user-privilege-set",
    ):
        root.append(element(f"{{{DAV}}}privilege", None, ET.Element(f"{{{DAV}}}{name}")))
    # RFC 6638 §6.1: schedule-deliver on the Inbox, schedule-send on the Outbox.
    for name in scheduling:
        root.append(element(f"{{{DAV}}}privilege", None, ET.Element(f"{{{CALDAV}}}{name}")))
    return root


_INBOX_PRIVILEGES: Final = ("schedule-deliver", "schedule-deliver-invite", "schedule-deliver-reply")
_OUTBOX_PRIVILEGES: Final = (
    "schedule-send",
    "schedule-send-invite",
    "schedule-send-reply",
    "schedule-send-freebusy",
)


class _Props:
    """Property values of one resource, computed on demand."""

    def __init__(self, account: Account, resource: Resource, dav: DavServices) -> None:
        self.account = account
        self.resource = resource
        self.dav = dav
        self.collection: Collection | None = None
        self.meta: ObjectMeta | None = None

    def live(self) -> dict[str, Callable[[], ET.Element | None]]:
        r = self.resource
        me = self.account.address
        common: dict[str, Callable[[], ET.Element | None]] = {
            f"{{{DAV}}}current-user-principal": lambda: element(
                f"{{{DAV}}}current-user-principal", None, _href(principal_path(me))
            ),
            f"{{{DAV}}}current-user-privilege-set": lambda: _privileges(
                _INBOX_PRIVILEGES
                if r.inbox and r.type == "collection"
                else _OUTBOX_PRIVILEGES
                if r.type == "outbox"
                else ()
            ),
            f"{{{DAV}}}owner": lambda: element(f"{{{DAV}}}owner", None, _href(principal_path(me))),
            f"{{{DAV}}}supported-report-set": lambda: _supported_reports(r.kind),
            f"{{{DAV}}}resourcetype": self._resourcetype,
        }
        if r.type in ("root", "principal", "principals"):
            common.update(
                {
                    f"{{{DAV}}}principal-URL": lambda: element(
                        f"{{{DAV}}}principal-URL", None, _href(principal_path(me))
                    ),
                    f"{{{CALDAV}}}calendar-home-set": lambda: element(
                        f"{{{CALDAV}}}calendar-home-set", None, _href(home_path("calendars", me))
                    ),
                    f"{{{CARDDAV}}}addressbook-home-set": lambda: element(
                        f"{{{CARDDAV}}}addressbook-home-set",
                        None,
                        _href(home_path("addressbooks", me)),
                    ),
                    f"{{{CALDAV}}}calendar-user-address-set": self._addresses,
                    # RFC 6638 §2.4.2, §2.1, §2.2
                    f"{{{CALDAV}}}calendar-user-type": lambda: element(
                        f"{{{CALDAV}}}calendar-user-type", "INDIVIDUAL"
                    ),
                    f"{{{CALDAV}}}schedule-inbox-URL": lambda: element(
                        f"{{{CALDAV}}}schedule-inbox-URL",
                        None,
                        _href(collection_path("calendars", me, INBOX)),
                    ),
                    f"{{{CALDAV}}}schedule-outbox-URL": lambda: element(
                        f"{{{CALDAV}}}schedule-outbox-URL",
                        None,
                        _href(collection_path("calendars", me, OUTBOX)),
                    ),
                    f"{{{DAV}}}displayname": lambda: element(f"{{{DAV}}}displayname", me),
                }
            )
        if r.type == "home":
            common[f"{{{DAV}}}displayname"] = lambda: element(
                f"{{{DAV}}}displayname", "Calendars" if r.kind == "calendars" else "Contacts"
            )
        path = locking.lock_path(r)
        if path is not None:
            table = self.dav.locks
            common[f"{{{DAV}}}supportedlock"] = supportedlock
            common[f"{{{DAV}}}lockdiscovery"] = lambda: locking.lockdiscovery(table, me, path)
        if r.type == "collection":
            common.update(self._collection_props())
        if r.type == "outbox":
            common[f"{{{DAV}}}displayname"] = lambda: element(f"{{{DAV}}}displayname", "Outbox")
        if r.type == "object" and r.kind == "calendars":
            common[f"{{{CALDAV}}}schedule-tag"] = lambda: (
                element(f"{{{CALDAV}}}schedule-tag", tag)
                if (tag := self._meta().schedule_tag) is not None
                else None
            )
        if r.type == "object":
            common.update(
                {
                    f"{{{DAV}}}getetag": lambda: element(f"{{{DAV}}}getetag", self._meta().etag),
                    f"{{{DAV}}}getcontenttype": lambda: element(
                        f"{{{DAV}}}getcontenttype", _MEDIA[r.kind or "calendars"]
                    ),
                    f"{{{DAV}}}getcontentlength": lambda: element(
                        f"{{{DAV}}}getcontentlength", str(self._meta().size)
                    ),
                }
            )
        return common

    def _addresses(self) -> ET.Element:
        """RFC 6638 §2.4.1: the user's mailto: addresses (own first, then exact aliases)
        and the principal URL."""
        me = self.account.address
        hrefs = [_href(f"mailto:{a}") for a in self.dav.api.store.accounts.own_addresses(me)]
        hrefs[0].set("preferred", "1")  # iCloud's hint, read by some clients
        return element(
            f"{{{CALDAV}}}calendar-user-address-set", None, *hrefs, _href(principal_path(me))
        )

    def _resourcetype(self) -> ET.Element:
        r = self.resource
        node = element(f"{{{DAV}}}resourcetype")
        if r.type in ("root", "home", "principals", "collection", "outbox"):
            node.append(ET.Element(f"{{{DAV}}}collection"))
        if r.type == "principal":
            node.append(ET.Element(f"{{{DAV}}}principal"))
        if r.type == "outbox":
            node.append(ET.Element(f"{{{CALDAV}}}schedule-outbox"))
        elif r.type == "collection" and r.inbox:
            node.append(ET.Element(f"{{{CALDAV}}}schedule-inbox"))
        elif r.type == "collection":
            tag = f"{{{CALDAV}}}calendar" if r.kind == "calendars" else f"{{{CARDDAV}}}addressbook"
            node.append(ET.Element(tag))
        return node

    def _coll(self) -> Collection:
        if self.collection is None:
            r = self.resource
            assert r.kind is not None and r.collection is not None
            self.collection = self.dav.collection(self.account, r.kind, r.collection)
        return self.collection

    def _meta(self) -> ObjectMeta:
        if self.meta is None:
            assert self.resource.name is not None
            self.meta = self._coll().get(self.resource.name)
        return self.meta

    def _collection_props(self) -> dict[str, Callable[[], ET.Element | None]]:
        r = self.resource
        info = self._coll().info()

        def text(tag: str, key: str) -> Callable[[], ET.Element | None]:
            return lambda: element(tag, str(info.props[key])) if key in info.props else None

        props: dict[str, Callable[[], ET.Element | None]] = {
            f"{{{DAV}}}displayname": text(f"{{{DAV}}}displayname", "displayname"),
            f"{{{CS}}}getctag": lambda: element(f"{{{CS}}}getctag", info.ctag),
            f"{{{DAV}}}sync-token": lambda: element(f"{{{DAV}}}sync-token", info.sync_token),
            f"{{{DAV}}}getetag": lambda: element(f"{{{DAV}}}getetag", info.ctag),
            f"{{{DAV}}}quota-used-bytes": lambda: element(
                f"{{{DAV}}}quota-used-bytes", str(sum(m.size for m in self._coll().objects()))
            ),
            f"{{{DAV}}}quota-available-bytes": self._quota_available,
        }
        if r.inbox:
            me = self.account.address
            dav = self.dav
            props[f"{{{CALDAV}}}schedule-default-calendar-URL"] = lambda: element(
                f"{{{CALDAV}}}schedule-default-calendar-URL",
                None,
                _href(collection_path("calendars", me, _default_calendar(dav, self.account))),
            )
        elif r.kind == "calendars":
            props.update(
                {
                    f"{{{CALDAV}}}schedule-calendar-transp": lambda: element(
                        f"{{{CALDAV}}}schedule-calendar-transp",
                        None,
                        ET.Element(f"{{{CALDAV}}}{info.props.get('transp', 'opaque')}"),
                    ),
                    f"{{{CALDAV}}}calendar-description": text(
                        f"{{{CALDAV}}}calendar-description", "description"
                    ),
                    f"{{{APPLE}}}calendar-color": text(f"{{{APPLE}}}calendar-color", "color"),
                    f"{{{APPLE}}}calendar-order": text(f"{{{APPLE}}}calendar-order", "order"),
                    f"{{{CALDAV}}}supported-calendar-component-set": lambda: element(
                        f"{{{CALDAV}}}supported-calendar-component-set",
                        None,
                        *[_comp(name) for name in info.props.get("components", COMPONENTS)],
                    ),
                    f"{{{CALDAV}}}supported-calendar-data": lambda: element(
                        f"{{{CALDAV}}}supported-calendar-data", None, _data_type("text/calendar")
                    ),
                    f"{{{CALDAV}}}max-resource-size": lambda: element(
                        f"{{{CALDAV}}}max-resource-size", str(MAX_RESOURCE)
                    ),
                    f"{{{CALDAV}}}calendar-timezone": text(
                        f"{{{CALDAV}}}calendar-timezone", "timezone"
                    ),
                }
            )
        else:
            props.update(
                {
                    f"{{{CARDDAV}}}addressbook-description": text(
                        f"{{{CARDDAV}}}addressbook-description", "description"
                    ),
                    f"{{{CARDDAV}}}supported-address-data": lambda: element(
                        f"{{{CARDDAV}}}supported-address-data",
                        None,
                        _address_type("3.0"),
                        _address_type("4.0"),
                    ),
                    f"{{{CARDDAV}}}max-resource-size": lambda: element(
                        f"{{{CARDDAV}}}max-resource-size", str(MAX_RESOURCE)
                    ),
                }
            )
        return props

    def _quota_available(self) -> ET.Element:
        store = self.dav.api.store
        quota = self.account.quota_mb * 1024 * 1024
        used = store.mailbox(self.account.address).usage_bytes()
        return element(f"{{{DAV}}}quota-available-bytes", str(max(0, quota - used)))

    def dead(self) -> dict[str, str]:
        if self.resource.type != "collection":
            return {}
        return dict(self._coll().info().props.get("dead", {}))


def _default_calendar(dav: DavServices, account: Account) -> str:
    """The name of the calendar new invitations go to (RFC 6638 §9.2)."""
    if dav.scheduling is not None:
        return dav.scheduling.default_calendar(account.address).name
    names = dav.store(account, "calendars").names()
    return "default" if "default" in names or not names else names[0]


def _comp(name: str) -> ET.Element:
    node = ET.Element(f"{{{CALDAV}}}comp")
    node.set("name", name)
    return node


def _data_type(media: str) -> ET.Element:
    node = ET.Element(f"{{{CALDAV}}}calendar-data")
    node.set("content-type", media)
    node.set("version", "2.0")
    return node


def _address_type(version: str) -> ET.Element:
    node = ET.Element(f"{{{CARDDAV}}}address-data-type")
    node.set("content-type", "text/vcard")
    node.set("version", version)
    return node


def _propstat(
    props: _Props,
    wanted: list[str] | None,
    names_only: bool = False,
    data: Callable[[str], ET.Element | None] | None = None,
) -> ET.Element:
    live = props.live()
    dead = props.dead()
    found: list[ET.Element] = []
    missing: list[str] = []
    tags = wanted if wanted is not None else [*live, *dead]
    for tag in tags:
        value: ET.Element | None = None
        if data is not None and tag in (f"{{{CALDAV}}}calendar-data", f"{{{CARDDAV}}}address-data"):
            value = data(tag)
        elif tag in live:
            value = live[tag]()
        elif tag in dead:
            value = ET.fromstring(dead[tag])
        if value is None:
            if wanted is not None:
                missing.append(tag)
            continue
        if names_only:
            value = ET.Element(value.tag)
        found.append(value)
    return propstat_response(props.resource.path, found, missing)


def _wanted(root: ET.Element | None) -> tuple[list[str] | None, bool]:
    """(property tags, names only) of a PROPFIND or REPORT body; None tags means all."""
    if root is None:
        return None, False
    if root.find(f"{{{DAV}}}propname") is not None:
        return None, True
    prop = root.find(f"{{{DAV}}}prop")
    if prop is None:
        return None, False
    return [child.tag for child in prop], False


# -- methods ---------------------------------------------------------------------------------


def _children(account: Account, resource: Resource, dav: DavServices) -> list[Resource]:
    me = account.address
    if resource.type == "root":
        return [
            Resource("principal", me),
            Resource("home", me, "calendars"),
            Resource("home", me, "addressbooks"),
        ]
    if resource.type == "principals":
        return [Resource("principal", me)]
    if resource.type == "home":
        assert resource.kind is not None
        found = [
            Resource("collection", me, resource.kind, name)
            for name in dav.store(account, resource.kind).names()
        ]
        if resource.kind == "calendars":
            found += [
                Resource("collection", me, "calendars", INBOX),
                Resource("outbox", me, "calendars"),
            ]
        return found
    if resource.type == "collection":
        assert resource.kind is not None and resource.collection is not None
        collection = dav.collection(account, resource.kind, resource.collection)
        return [
            Resource("object", me, resource.kind, resource.collection, m.name)
            for m in sorted(collection.objects(), key=lambda m: m.name)
        ]
    return []


def _exists(account: Account, resource: Resource, dav: DavServices) -> None:
    """Raise NotFound when the resource is not there."""
    if resource.type in ("collection", "object"):
        assert resource.kind is not None and resource.collection is not None
        collection = dav.collection(account, resource.kind, resource.collection)
        if resource.type == "object":
            assert resource.name is not None
            collection.get(resource.name)


async def propfind(request: web.Request, account: Account, resource: Resource) -> web.Response:
    # RFC 4918 §9.1 makes infinity the default; it is refused, so 1 is assumed instead.
    depth = _depth(request, "1")
    if depth == "infinity":
        return _precondition(403, "propfind-finite-depth")
    root = parse(await _body(request))
    if root is not None and root.tag != f"{{{DAV}}}propfind":
        raise ApiError(400, "the body of a PROPFIND is a DAV:propfind element")
    wanted, names_only = _wanted(root)
    dav = request.app[DAVKEY]

    def work() -> bytes:
        try:
            _exists(account, resource, dav)
        except NotFound:
            raise ApiError(404, "not found") from None
        targets = [resource]
        if depth == "1":
            targets += _children(account, resource, dav)
        responses = []
        for target in targets:
            try:
                responses.append(_propstat(_Props(account, target, dav), wanted, names_only))
            except NotFound:
                continue  # deleted meanwhile
        return multistatus(responses)

    return _xml_response(await asyncio.to_thread(work))


_PROTECTED: Final = {
    f"{{{DAV}}}{n}"
    for n in (
        "resourcetype",
        "getetag",
        "getcontentlength",
        "sync-token",
        "current-user-principal",
        "supported-report-set",
    )
} | {f"{{{CS}}}getctag", f"{{{CALDAV}}}supported-calendar-component-set"}
_MAPPED: Final = {
    f"{{{DAV}}}displayname": "displayname",
    f"{{{CALDAV}}}calendar-description": "description",
    f"{{{CARDDAV}}}addressbook-description": "description",
    f"{{{APPLE}}}calendar-color": "color",
    f"{{{APPLE}}}calendar-order": "order",
    f"{{{CALDAV}}}calendar-timezone": "timezone",
}


_TRANSP: Final = f"{{{CALDAV}}}schedule-calendar-transp"
_DEFAULT_CALENDAR: Final = f"{{{CALDAV}}}schedule-default-calendar-URL"


def _own_calendar(dav: DavServices, account: Account, target: Resource | None) -> bool:
    """Whether ``target`` is one of the account's calendars (not the Inbox)."""
    return (
        target is not None
        and target.type == "collection"
        and target.kind == "calendars"
        and target.owner == account.address
        and not target.inbox
        and target.collection in dav.store(account, "calendars").names()
    )


def _transp(node: ET.Element) -> str:
    """RFC 6638 §9.1: whether the calendar's events count for free-busy."""
    return "transparent" if node.find(f"{{{CALDAV}}}transparent") is not None else "opaque"


def _prop_changes(
    node: ET.Element | None, remove: bool, dead: dict[str, str]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Property updates of a set/remove block: (changes, done tags, refused tags)."""
    changes: dict[str, Any] = {}
    done: list[str] = []
    refused: list[str] = []
    if node is None:
        return changes, done, refused
    prop = node.find(f"{{{DAV}}}prop")
    for child in list(prop) if prop is not None else []:
        if child.tag in _PROTECTED:
            refused.append(child.tag)
            continue
        if child.tag == _TRANSP:
            changes["transp"] = None if remove else _transp(child)
            done.append(child.tag)
            continue
        if child.tag == _DEFAULT_CALENDAR:
            # Checked by the caller against the owner's calendars (RFC 6638 §9.2).
            href = (child.findtext(f"{{{DAV}}}href") or "").strip()
            changes["default_calendar"] = (
                None if remove else resolve(urllib.parse.urlsplit(href).path)
            )
            done.append(child.tag)
            continue
        key = _MAPPED.get(child.tag)
        if key is not None:
            changes[key] = None if remove else (child.text or "")
        elif remove:
            dead.pop(child.tag, None)
        else:
            if len(ET.tostring(child)) > 16384:
                refused.append(child.tag)
                continue
            dead[child.tag] = ET.tostring(child, encoding="unicode")
        done.append(child.tag)
    return changes, done, refused


async def proppatch(request: web.Request, account: Account, resource: Resource) -> web.Response:
    root = parse(await _body(request))
    if root is None or root.tag != f"{{{DAV}}}propertyupdate":
        raise ApiError(400, "the body of a PROPPATCH is a DAV:propertyupdate element")
    if resource.type != "collection":
        raise ApiError(403, "only collections have writable properties here")
    dav = request.app[DAVKEY]
    assert resource.kind is not None
    await locking.enforce(request, dav.locks, account, resource, dav.store(account, resource.kind))

    def work() -> bytes:
        assert resource.kind is not None and resource.collection is not None
        collection = dav.collection(account, resource.kind, resource.collection)
        dead = dict(collection.info().props.get("dead", {}))
        changes: dict[str, Any] = {}
        done: list[str] = []
        refused: list[str] = []
        for child in root:
            remove = child.tag == f"{{{DAV}}}remove"
            if child.tag not in (f"{{{DAV}}}set", f"{{{DAV}}}remove"):
                continue
            c, d, r = _prop_changes(child, remove, dead)
            changes.update(c)
            done += d
            refused += r
        if "default_calendar" in changes:
            target = changes["default_calendar"]
            if not resource.inbox or (
                target is not None and not _own_calendar(dav, account, target)
            ):
                done.remove(_DEFAULT_CALENDAR)
                refused.append(_DEFAULT_CALENDAR)
                del changes["default_calendar"]
            elif target is not None:
                changes["default_calendar"] = target.collection
        if refused:
            # RFC 4918 §9.2: all or nothing; the others fail with 424.
            response = element(f"{{{DAV}}}response", None, _href(resource.path))
            for tags, code in ((refused, 403), (done, 424)):
                if tags:
                    ps = element(
                        f"{{{DAV}}}propstat",
                        None,
                        element(f"{{{DAV}}}prop", None, *[ET.Element(t) for t in tags]),
                    )
                    ps.append(
                        element(
                            f"{{{DAV}}}status",
                            f"HTTP/1.1 {code} "
                            + ("Forbidden" if code == 403 else "Failed Dependency"),
                        )
                    )
                    response.append(ps)
            return multistatus([response])
        changes["dead"] = dead
        collection.set_props(changes)
        return multistatus([propstat_response(resource.path, [ET.Element(t) for t in done], [])])

    return _xml_response(await asyncio.to_thread(work))


def _mk_props(root: ET.Element | None, kind: Kind) -> dict[str, Any]:
    props: dict[str, Any] = dict(_DEFAULTS[kind])
    props["displayname"] = ""
    if root is None:
        return props
    dead: dict[str, str] = {}
    for block in root.findall(f"{{{DAV}}}set"):
        prop = block.find(f"{{{DAV}}}prop")
        for child in list(prop) if prop is not None else []:
            if child.tag == f"{{{DAV}}}resourcetype":
                continue
            if child.tag == f"{{{CALDAV}}}supported-calendar-component-set":
                names = [c.get("name", "").upper() for c in child.findall(f"{{{CALDAV}}}comp")]
                if not names or any(n not in COMPONENTS for n in names):
                    raise InvalidCalendar("unsupported component", "supported-calendar-component")
                props["components"] = names
                continue
            if child.tag == _TRANSP:
                props["transp"] = _transp(child)
                continue
            key = _MAPPED.get(child.tag)
            if key is not None:
                props[key] = child.text or ""
            else:
                dead[child.tag] = ET.tostring(child, encoding="unicode")
    props["dead"] = dead
    return props


async def mkcalendar(request: web.Request, account: Account, resource: Resource) -> web.Response:
    root = parse(await _body(request))
    return await _make(request, account, resource, "calendars", root)


async def mkcol(request: web.Request, account: Account, resource: Resource) -> web.Response:
    root = parse(await _body(request))
    kind: Kind | None = resource.kind
    if root is not None:
        types = root.findall(f".//{{{DAV}}}resourcetype/*")
        tags = {t.tag for t in types}
        if f"{{{CALDAV}}}calendar" in tags:
            kind = "calendars"
        elif f"{{{CARDDAV}}}addressbook" in tags:
            kind = "addressbooks"
        else:
            return _precondition(403, "valid-resourcetype")
    elif resource.kind == "calendars":
        return _precondition(403, "valid-resourcetype")
    assert kind is not None
    return await _make(request, account, resource, kind, root)


async def _make(
    request: web.Request, account: Account, resource: Resource, kind: Kind, root: ET.Element | None
) -> web.Response:
    if resource.type != "collection" or resource.kind != kind:
        raise ApiError(403, "collections are made directly inside the home collection")
    props = _mk_props(root, kind)
    dav = request.app[DAVKEY]
    assert resource.collection is not None
    name = resource.collection
    try:
        await asyncio.to_thread(dav.store(account, kind).create, name, props)
    except AlreadyExists:
        return _precondition(405, "resource-must-be-null")
    except InvalidInput:
        raise ApiError(403, "that collection name is not allowed") from None
    return web.Response(
        status=201, headers={"Location": collection_path(kind, account.address, name)}
    )


async def get(request: web.Request, account: Account, resource: Resource) -> web.Response:
    if resource.type != "object":
        raise ApiError(405, "GET works on calendar objects and vCards", {"Allow": ALLOW})
    dav = request.app[DAVKEY]
    assert resource.kind is not None and resource.collection is not None
    assert resource.name is not None
    collection = dav.collection(account, resource.kind, resource.collection)
    data, meta = await asyncio.to_thread(collection.read, resource.name)
    if request.headers.get("If-None-Match") == meta.etag:
        return web.Response(status=304, headers={"ETag": meta.etag})
    body = b"" if request.method == "HEAD" else data
    response = web.Response(
        body=body, headers={"ETag": meta.etag, "Content-Type": _MEDIA[resource.kind]}
    )
    if meta.schedule_tag is not None:
        response.headers["Schedule-Tag"] = meta.schedule_tag  # RFC 6638 §3.3
    if request.method == "HEAD":
        response.headers["Content-Length"] = str(len(data))
    return response


async def put(request: web.Request, account: Account, resource: Resource) -> web.Response:
    if resource.type != "object":
        raise ApiError(405, "PUT works on resources inside a calendar or address book")
    if resource.inbox:
        raise ApiError(403, "only the server adds messages to the scheduling Inbox")
    data = await _body(request, MAX_RESOURCE)
    kind = resource.kind
    assert kind is not None and resource.collection is not None and resource.name is not None
    dav = request.app[DAVKEY]
    store = dav.store(account, kind)
    collection = await asyncio.to_thread(store.collection, resource.collection)
    if dav.locks.all(account.address) or "If" in request.headers:
        try:
            await asyncio.to_thread(collection.get, resource.name)
            new = False
        except NotFound:
            new = True  # a new member changes the collection's membership (RFC 4918 §7.4)
        await locking.enforce(request, dav.locks, account, resource, store, members=new)
    if_match = request.headers.get("If-Match")
    if_none_match = request.headers.get("If-None-Match", "").strip() == "*"
    quota = account.quota_mb * 1024 * 1024

    if_schedule_tag = request.headers.get("If-Schedule-Tag-Match")
    scheduling = dav.scheduling
    prepared: list[Prepared] = []  # what scheduling makes of the PUT (RFC 6638 §3.2)

    def work() -> tuple[ObjectMeta, bool]:
        used = dav.api.store.mailbox(account.address).usage_bytes()
        if used + len(data) > quota:
            raise QuotaExceeded("over quota")
        if kind == "calendars":
            allowed = collection.info().props.get("components", COMPONENTS)
            calendar, info = parse_calendar(data, allowed)
            _same_organizer(calendar)
            old: bytes | None = None
            with contextlib.suppress(NotFound):
                old = collection.read(resource.name or "")[0]
            plan = Prepared(data, False, False, ())
            if scheduling is not None:
                plan = scheduling.prepare_put(account.address, old, data)
            prepared.append(plan)
            if plan.scheduling_object and old is None:
                _unique_scheduling_object(store, collection, info.uid)
            return collection.put(
                resource.name or "",
                plan.data,
                schedule_tag="new" if plan.scheduling_object else None,
                if_schedule_tag=if_schedule_tag,
                **info.index_fields,
                if_match=if_match,
                if_none_match=if_none_match,
            )
        card = parse_card(data)
        return collection.put(
            resource.name or "",
            data,
            uid=card.uid,
            component="VCARD",
            if_match=if_match,
            if_none_match=if_none_match,
        )

    try:
        meta, created = await asyncio.to_thread(work)
    except PreconditionFailed as exc:
        raise ApiError(412, str(exc)) from None
    except AlreadyExists:
        ns, condition = (
            (CALDAV, "no-uid-conflict") if kind == "calendars" else (CARDDAV, "no-uid-conflict")
        )
        return _precondition(403, condition, ns)
    except QuotaExceeded:
        return _precondition(507, "quota-not-exceeded")
    except _CaldavPrecondition as exc:
        return _precondition(403, exc.condition, CALDAV)
    headers: dict[str, str] = {"ETag": meta.etag}
    if prepared and prepared[0].changed:
        # RFC 4791 §5.3.4: the stored object is not what was sent (SCHEDULE-STATUS was
        # set), so no ETag: the client fetches it again.
        del headers["ETag"]
    if meta.schedule_tag is not None:
        headers["Schedule-Tag"] = meta.schedule_tag
    if prepared and prepared[0].itips and scheduling is not None:
        await scheduling.send(prepared[0].itips)
    return web.Response(status=201 if created else 204, headers=headers)


class _CaldavPrecondition(Exception):
    """A CalDAV precondition failed, answered 403 with the condition: RFC 6638 §3.2.4's
    scheduling ones, or supported-calendar-component on MOVE."""

    def __init__(self, condition: str) -> None:
        super().__init__(condition)
        self.condition = condition


def _same_organizer(calendar: Any) -> None:
    """RFC 6638 §3.2.4.2 same-organizer-in-all-components."""
    organizers = {
        str(c.get("ORGANIZER")).lower()
        for c in calendar.subcomponents
        if c.name in ("VEVENT", "VTODO", "VJOURNAL") and c.get("ORGANIZER") is not None
    }
    if len(organizers) > 1:
        raise _CaldavPrecondition("same-organizer-in-all-components")


def _unique_scheduling_object(store: DavStore, collection: Collection, uid: str) -> None:
    """RFC 6638 §3.2.4.1 unique-scheduling-object-resource: one scheduling object per UID
    in all of the user's calendars."""
    for other in store.collections():
        if other.name != collection.name and other.by_uid(uid) is not None:
            raise _CaldavPrecondition("unique-scheduling-object-resource")


async def delete(request: web.Request, account: Account, resource: Resource) -> web.Response:
    dav = request.app[DAVKEY]
    kind = resource.kind
    if resource.type not in ("collection", "object"):
        raise ApiError(403, "this resource cannot be deleted")
    assert kind is not None and resource.collection is not None
    store = dav.store(account, kind)
    await locking.enforce(request, dav.locks, account, resource, store, members=True, tree=True)
    if resource.type == "collection" and resource.inbox:
        raise ApiError(403, "the scheduling Inbox cannot be deleted")
    if resource.type == "collection":
        await asyncio.to_thread(store.delete, resource.collection)
        locking.drop(dav.locks, account, resource)
        dav.forget_defaults(account)
        return web.Response(status=204)
    assert resource.name is not None
    collection = dav.collection(account, kind, resource.collection)
    name = resource.name

    def work() -> bytes | None:
        old = collection.read(name)[0] if kind == "calendars" and not resource.inbox else None
        collection.delete(
            name,
            if_match=request.headers.get("If-Match"),
            if_schedule_tag=request.headers.get("If-Schedule-Tag-Match"),
        )
        return old

    try:
        old = await asyncio.to_thread(work)
    except PreconditionFailed as exc:
        raise ApiError(412, str(exc)) from None
    locking.drop(dav.locks, account, resource)
    scheduling = dav.scheduling
    if old is not None and scheduling is not None:
        # RFC 6638 §8.1: "Schedule-Reply: F" deletes an attendee's copy without a reply.
        reply = request.headers.get("Schedule-Reply", "T").strip().upper() != "F"
        itips = await asyncio.to_thread(
            functools.partial(scheduling.plan_delete, account.address, old, reply=reply)
        )
        await scheduling.send(itips)
    return web.Response(status=204)


async def move(request: web.Request, account: Account, resource: Resource) -> web.Response:
    """MOVE of a calendar object or vCard to another name or another collection of the same
    user and kind (RFC 4918 §9.9, RFC 4791 §4.1): how clients move an event between
    calendars. Collections are not moved. It is not a scheduling change (RFC 6638 §3.2):
    the object keeps its bytes, ETag and Schedule-Tag, and nobody is mailed."""
    if resource.type != "object" or resource.inbox:
        raise ApiError(403, "only calendar objects and vCards can be moved")
    kind = resource.kind
    assert kind is not None and resource.collection is not None and resource.name is not None
    raw = request.headers.get("Destination", "")
    if not raw:
        raise ApiError(400, "MOVE needs a Destination header")
    split = urllib.parse.urlsplit(raw)
    if split.netloc and split.netloc.lower() != request.host.lower():
        raise ApiError(502, "the Destination is not on this server")
    target = resolve(split.path)
    if target is None or target.type != "object" or target.inbox:
        raise ApiError(409, "the Destination is not a resource inside a collection")
    if target.owner != account.address or target.kind != kind:
        raise ApiError(403, "objects move only between one user's collections of one kind")
    assert target.collection is not None and target.name is not None
    replace = request.headers.get("Overwrite", "T").strip().upper()
    if replace not in ("T", "F"):
        raise ApiError(400, "Overwrite is T or F")
    dav = request.app[DAVKEY]
    store = dav.store(account, kind)
    try:
        destination = await asyncio.to_thread(store.collection, target.collection)
    except NotFound:
        raise ApiError(409, "the destination collection does not exist") from None
    source = await asyncio.to_thread(dav.collection, account, kind, resource.collection)
    await locking.enforce(request, dav.locks, account, resource, store, members=True)
    # The destination is changed too; its lock tokens come in the same If header.
    await locking.enforce(request, dav.locks, account, target, store, members=True)

    def work() -> tuple[ObjectMeta, bool]:
        if kind == "calendars":
            meta = source.get(resource.name or "")
            allowed = destination.info().props.get("components", COMPONENTS)
            if meta.component not in allowed:
                raise _CaldavPrecondition("supported-calendar-component")
        return source.move_to(
            resource.name or "",
            destination,
            target.name or "",
            overwrite=replace == "T",
            if_match=request.headers.get("If-Match"),
            if_schedule_tag=request.headers.get("If-Schedule-Tag-Match"),
        )

    try:
        meta, created = await asyncio.to_thread(work)
    except PreconditionFailed as exc:
        raise ApiError(412, str(exc)) from None
    except AlreadyExists:
        return _precondition(403, "no-uid-conflict", CALDAV if kind == "calendars" else CARDDAV)
    except _CaldavPrecondition as exc:
        return _precondition(403, exc.condition, CALDAV)
    locking.drop(dav.locks, account, resource)
    headers = {"ETag": meta.etag}
    if meta.schedule_tag is not None:
        headers["Schedule-Tag"] = meta.schedule_tag
    return web.Response(status=201 if created else 204, headers=headers)


# -- REPORT ----------------------------------------------------------------------------------


async def report(request: web.Request, account: Account, resource: Resource) -> web.Response:
    root = parse(await _body(request))
    if root is None:
        raise ApiError(400, "a REPORT needs a body")
    dav = request.app[DAVKEY]
    handlers: dict[str, Callable[..., bytes | web.Response]] = {
        f"{{{CALDAV}}}calendar-multiget": _multiget,
        f"{{{CARDDAV}}}addressbook-multiget": _multiget,
        f"{{{CALDAV}}}calendar-query": _calendar_query,
        f"{{{CARDDAV}}}addressbook-query": _addressbook_query,
        f"{{{DAV}}}sync-collection": _sync_collection,
        f"{{{CALDAV}}}free-busy-query": _freebusy_query,
    }
    handler = handlers.get(root.tag)
    if handler is None:
        return _precondition(403, "supported-report")
    multiget = (f"{{{CALDAV}}}calendar-multiget", f"{{{CARDDAV}}}addressbook-multiget")
    if resource.type != "collection" and root.tag not in multiget:
        return _precondition(403, "supported-report")
    expected = (
        "calendars"
        if root.tag.startswith(f"{{{CALDAV}}}")
        else ("addressbooks" if root.tag.startswith(f"{{{CARDDAV}}}") else resource.kind)
    )
    if resource.kind != expected:
        return _precondition(403, "supported-report")
    result = await asyncio.to_thread(handler, account, resource, dav, root)
    if isinstance(result, web.Response):
        return result
    return _xml_response(result)


def _data_prop(root: ET.Element, tag: str) -> ET.Element | None:
    prop = root.find(f"{{{DAV}}}prop")
    return prop.find(tag) if prop is not None else None


def _object_response(
    account: Account,
    dav: DavServices,
    collection: Collection,
    resource: Resource,
    meta: ObjectMeta,
    *,
    root: ET.Element,
    parsed: Any = None,
    raw: bytes | None = None,
) -> ET.Element:
    kind = resource.kind
    assert kind is not None
    target = Resource(
        "object", account.address, kind, resource.collection or collection.name, meta.name
    )
    props = _Props(account, target, dav)
    props.collection, props.meta = collection, meta
    wanted, _ = _wanted(root)

    def data(tag: str) -> ET.Element | None:
        nonlocal raw
        if raw is None:
            raw, _ = collection.read(meta.name)
        request_node = _data_prop(root, tag)
        expand = request_node.find(f"{{{CALDAV}}}expand") if request_node is not None else None
        if expand is not None and kind == "calendars":
            low, high = reports.parse_time_range(expand)
            calendar = parsed if parsed is not None else load_calendar(raw)
            return element(tag, reports.expand(calendar, low, high).decode("utf-8", "replace"))
        limit = (
            request_node.find(f"{{{CALDAV}}}limit-recurrence-set")
            if request_node is not None
            else None
        )
        if limit is not None and kind == "calendars":
            low, high = reports.parse_time_range(limit)
            calendar = parsed if parsed is not None else load_calendar(raw)
            limited = reports.limit_recurrence_set(calendar, low, high)
            return element(tag, limited.decode("utf-8", "replace"))
        return element(tag, raw.decode("utf-8", "replace"))

    return _propstat(props, wanted if wanted is not None else [f"{{{DAV}}}getetag"], data=data)


def _multiget(account: Account, resource: Resource, dav: DavServices, root: ET.Element) -> bytes:
    kind = resource.kind
    assert kind is not None
    responses = []
    for node in root.findall(f"{{{DAV}}}href"):
        target = resolve((node.text or "").strip().split("?", 1)[0])
        if (
            target is None
            or target.type != "object"
            or target.owner != account.address
            or target.kind != kind
        ):
            responses.append(status_response((node.text or "").strip(), 404))
            continue
        assert target.collection is not None and target.name is not None
        try:
            collection = dav.collection(account, kind, target.collection)
            meta = collection.get(target.name)
            responses.append(_object_response(account, dav, collection, target, meta, root=root))
        except NotFound:
            responses.append(status_response(target.path, 404))
    return multistatus(responses)


def _calendar_query(
    account: Account, resource: Resource, dav: DavServices, root: ET.Element
) -> bytes:
    filter_node = root.find(f"{{{CALDAV}}}filter")
    if filter_node is None:
        raise ApiError(400, "calendar-query needs a filter")
    assert resource.collection is not None
    collection = dav.collection(account, "calendars", resource.collection)
    # The month view's filter decides plain events from the index alone (see
    # reports.plain_event_range); everything else is parsed and evaluated in full.
    plain = reports.plain_event_range(filter_node) is not None
    responses = []
    for meta in sorted(collection.objects(), key=lambda m: m.name):
        decided = reports.index_decides(filter_node, meta, plain=plain)
        if decided is False:
            continue
        if decided:
            try:
                responses.append(
                    _object_response(account, dav, collection, resource, meta, root=root)
                )
            except NotFound:
                continue  # deleted meanwhile
            continue
        try:
            raw, _ = collection.read(meta.name)
        except NotFound:
            continue
        calendar = load_calendar(raw)  # checked at PUT; parse_calendar would expand it all
        if reports.matches(filter_node, calendar):
            responses.append(
                _object_response(
                    account, dav, collection, resource, meta, root=root, parsed=calendar, raw=raw
                )
            )
    return multistatus(responses)


def _addressbook_query(
    account: Account, resource: Resource, dav: DavServices, root: ET.Element
) -> bytes:
    filter_node = root.find(f"{{{CARDDAV}}}filter")
    assert resource.collection is not None
    collection = dav.collection(account, "addressbooks", resource.collection)
    limit_node = root.find(f"{{{CARDDAV}}}limit/{{{CARDDAV}}}nresults")
    limit_text = (limit_node.text or "") if limit_node is not None else ""
    limit = int(limit_text) if limit_text.isdigit() else None
    responses = []
    for meta in sorted(collection.objects(), key=lambda m: m.name):
        try:
            raw, _ = collection.read(meta.name)
        except NotFound:
            continue
        if reports.card_matches(filter_node, raw):
            responses.append(_object_response(account, dav, collection, resource, meta, root=root))
            if limit is not None and len(responses) >= limit:
                break
    return multistatus(responses)


def _sync_collection(
    account: Account, resource: Resource, dav: DavServices, root: ET.Element
) -> bytes | web.Response:
    if resource.type != "collection":
        return _precondition(403, "supported-report")
    assert resource.kind is not None and resource.collection is not None
    collection = dav.collection(account, resource.kind, resource.collection)
    token_node = root.find(f"{{{DAV}}}sync-token")
    token_text = (token_node.text or "").strip() if token_node is not None else ""
    token: int | None = None
    instance: str | None = None
    if token_text:
        prefix = "http://rmail.invalid/sync/"
        try:
            if not token_text.startswith(prefix):
                raise ValueError
            instance, number = token_text[len(prefix) :].split("/")
            token = int(number)
        except ValueError:
            return _precondition(403, "valid-sync-token")
    level = root.find(f"{{{DAV}}}sync-level")
    if level is not None and (level.text or "").strip() not in ("1", ""):
        return _precondition(403, "sync-traversal-supported")
    try:
        changed, gone, current = collection.changes_since(token, instance)
    except SyncTokenExpired:
        return _precondition(403, "valid-sync-token")
    responses = [
        _object_response(account, dav, collection, resource, meta, root=root)
        for meta in sorted(changed, key=lambda m: m.name)
    ]
    kind = resource.kind
    responses += [
        status_response(object_path(kind, account.address, resource.collection, name), 404)
        for name in sorted(gone)
    ]
    info = collection.info()
    assert info.sync == current or info.sync >= current
    return multistatus(responses, sync_token=info.sync_token)


def _freebusy_query(
    account: Account, resource: Resource, dav: DavServices, root: ET.Element
) -> web.Response:
    node = root.find(f"{{{CALDAV}}}time-range")
    if node is None:
        raise ApiError(400, "free-busy-query needs a time-range")
    low, high = reports.parse_time_range(node)
    assert resource.collection is not None
    collection = dav.collection(account, "calendars", resource.collection)
    periods = reports.freebusy(_busy_objects(collection, low, high), low, high)
    return web.Response(
        body=_vfreebusy(periods, low, high), content_type="text/calendar", charset="utf-8"
    )


def _busy_objects(collection: Collection, low: float, high: float) -> list[Any]:
    """The parsed events of ``collection`` that may overlap [low, high) (index first)."""
    calendars = []
    for meta in collection.objects():
        if meta.component != "VEVENT" or meta.start is None:
            continue
        if meta.end is not None and (meta.end < low or meta.start >= high):
            continue
        try:
            raw, _ = collection.read(meta.name)
        except NotFound:
            continue
        calendars.append(load_calendar(raw))
    return calendars


def _stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")


def _vfreebusy(
    periods: list[tuple[float, float, str]],
    low: float,
    high: float,
    *,
    method: str | None = None,
    extra: tuple[str, ...] = (),
) -> bytes:
    """A VCALENDAR with one VFREEBUSY (RFC 5545 §3.6.4); ``extra`` are its content lines."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//rmail//CalDAV//EN"]
    if method is not None:
        lines.append(f"METHOD:{method}")
    lines += [
        "BEGIN:VFREEBUSY",
        f"DTSTAMP:{_stamp(datetime.datetime.now(UTC).timestamp())}",
        f"DTSTART:{_stamp(low)}",
        f"DTEND:{_stamp(high)}",
        *extra,
    ]
    for start, end, kind in periods:
        lines.append(f"FREEBUSY;FBTYPE={kind}:{_stamp(start)}/{_stamp(end)}")
    lines += ["END:VFREEBUSY", "END:VCALENDAR", ""]
    return "\r\n".join(lines).encode()


async def post(request: web.Request, account: Account, resource: Resource) -> web.Response:
    """POST to the scheduling Outbox: a free-busy request (RFC 6638 §5, see outbox.py)."""
    if resource.type != "outbox":
        raise ApiError(405, "POST works on the scheduling Outbox", {"Allow": ALLOW})
    dav = request.app[DAVKEY]
    scheduling = dav.scheduling
    if scheduling is None:
        return _precondition(403, "valid-scheduling-message", CALDAV)
    media = request.headers.get("Content-Type", "text/calendar").split(";", 1)[0].strip()
    if media.lower() != "text/calendar":
        return _precondition(415, "supported-calendar-data", CALDAV)
    body = await _body(request, MAX_RESOURCE)

    def busy(collection: Collection, low: float, high: float) -> list[tuple[float, float, str]]:
        return reports.freebusy(_busy_objects(collection, low, high), low, high)

    try:
        answer = await asyncio.to_thread(
            functools.partial(
                outbox.schedule_response,
                dav.api.store,
                scheduling,
                account.address,
                body,
                busy=busy,
                render=_vfreebusy,
            )
        )
    except outbox.OutboxRefused as exc:
        return _precondition(exc.status, exc.condition, CALDAV)
    return _xml_response(answer, status=200)


async def lock(request: web.Request, account: Account, resource: Resource) -> web.Response:
    dav = request.app[DAVKEY]
    if resource.kind is None:
        raise ApiError(405, "only calendars, address books and their objects can be locked")
    store = dav.store(account, resource.kind)
    return await locking.lock(request, dav.locks, account, resource, store)


async def unlock(request: web.Request, account: Account, resource: Resource) -> web.Response:
    return await locking.unlock(request, request.app[DAVKEY].locks, account, resource)


_METHODS: Final[dict[str, Callable[[web.Request, Account, Resource], Any]]] = {
    "LOCK": lock,
    "UNLOCK": unlock,
    "PROPFIND": propfind,
    "PROPPATCH": proppatch,
    "MKCALENDAR": mkcalendar,
    "MKCOL": mkcol,
    "GET": get,
    "HEAD": get,
    "PUT": put,
    "DELETE": delete,
    "MOVE": move,
    "REPORT": report,
    "POST": post,
}


async def root_propfind(request: web.Request) -> web.StreamResponse:
    """PROPFIND on ``/``: clients given only the server URL look for their principal there."""
    response: web.StreamResponse = await dispatch(request)
    return response


def setup(app: web.Application, scheduling: Scheduling | None = None) -> None:
    app[DAVKEY] = DavServices(app[API], scheduling)
    app.router.add_route("*", PREFIX, dispatch)
    app.router.add_route("*", PREFIX + "/{tail:.*}", dispatch)
    app.router.add_route("PROPFIND", "/", root_propfind)
