"""Client autoconfiguration: Thunderbird autoconfig, Outlook autodiscover, DAV well-known.

Routes:

- ``GET /.well-known/autoconfig/mail/config-v1.1.xml`` and ``GET /mail/config-v1.1.xml``
  (``?emailaddress=``): Thunderbird's clientConfig 1.1 document.
- ``POST /autodiscover/autodiscover.xml`` (and Outlook's ``/Autodiscover/Autodiscover.xml``):
  the Outlook "POX" autodiscover response for IMAP and SMTP.
- ``/.well-known/caldav`` and ``/.well-known/carddav``: 301 to ``/dav/`` (RFC 6764 §5).

The documents name ``config.hostname`` and the ports actually bound (the ``ports`` mapping
the server fills after binding, so a port-0 test sees real ports). Nothing here needs
authentication or says whether an account exists: only whether a domain is hosted.

Rules: request XML is parsed with defusedxml only (no DTDs, no entities), after the body is
capped at ``MAX_AUTODISCOVER_BODY``; output XML is built with ElementTree, which escapes.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import defusedxml.ElementTree as SafeET
from aiohttp import web
from defusedxml import DefusedXmlException

from rmail.config import Config
from rmail.errors import InvalidInput, NotFound
from rmail.store import Store
from rmail.store.accounts import normalize_domain

__all__ = [
    "AUTODISCOVER_REQUEST_NS",
    "AUTODISCOVER_RESPONSE_NS",
    "MAX_AUTODISCOVER_BODY",
    "OUTLOOK_RESPONSE_NS",
    "parse_autodiscover_request",
    "setup",
]

logger = logging.getLogger(__name__)

AUTODISCOVER_REQUEST_NS: Final = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
)
AUTODISCOVER_RESPONSE_NS: Final = (
    "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
)
OUTLOOK_RESPONSE_NS: Final = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)
# An Outlook request is a few hundred bytes; 64 KiB leaves room and bounds the parse.
MAX_AUTODISCOVER_BODY: Final = 64 * 1024
# RFC 5321 §4.5.3.1.3 (path of 256 octets, minus the brackets) and §4.5.3.1.1 (local part).
_MAX_ADDRESS: Final = 254
_MAX_LOCAL: Final = 64
_XML_AUTOCONFIG: Final = "application/xml"
# What Exchange itself sends; Outlook accepts it.
_XML_AUTODISCOVER: Final = "text/xml"
# Where the CalDAV/CardDAV server will live (a later issue); only the redirect exists now.
_DAV_ROOT: Final = "/dav/"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _parse_address(text: str) -> tuple[str, str]:
    """``(local, domain)`` of an address a client typed; the domain lowercased.

    Raises:
        InvalidInput: not ``local@domain`` with a valid domain name.
    """
    address = text.strip()
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not 0 < len(local) <= _MAX_LOCAL
        or len(address) > _MAX_ADDRESS
        or any(c.isspace() or not c.isprintable() for c in local)
    ):
        raise InvalidInput("emailaddress must be local@domain")
    return local, normalize_domain(domain)


def _sub(parent: ET.Element, tag: str, text: str | int | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = str(text)
    return element


def _to_bytes(root: ET.Element) -> bytes:
    # typeshed: any encoding other than "unicode" gives Any; "utf-8" gives bytes.
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


@dataclass(frozen=True, slots=True)
class _Autoconfig:
    """The handlers, with what they need passed in (see ``setup``)."""

    config: Config
    store: Store
    # Filled by the server after binding; read at each request, never copied.
    ports: Mapping[str, int]

    def _port(self, name: str) -> int:
        configured = {
            "imap": self.config.imap.port,
            "imaps": self.config.imap.imaps_port,
            "submission": self.config.smtp.submission_port,
            "smtps": self.config.smtp.smtps_port,
        }
        return self.ports.get(name) or configured[name]

    def _hosted(self, domain: str) -> list[str]:
        """All hosted domains (blocking: reads the data directory).

        Raises:
            NotFound: ``domain`` is not hosted here.
        """
        if not self.store.accounts.has_domain(domain):
            raise NotFound(f"domain {domain} is not hosted here")
        return self.store.accounts.list_domains()

    def _default_domain(self, request: web.Request) -> str:
        """The domain a request without ``emailaddress`` is about: its Host, else the first."""
        host = (request.host or "").rpartition(":")[0] or request.host or ""
        host = host.lower().rstrip(".").removeprefix("autoconfig.")
        return host if host in self.config.domains else self.config.domains[0]

    # -- Thunderbird -------------------------------------------------------------------------

    async def config_v11(self, request: web.Request) -> web.Response:
        """Thunderbird's clientConfig 1.1 for the domain of ``?emailaddress=``."""
        address = request.query.get("emailaddress")
        try:
            domain = (
                _parse_address(address)[1] if address is not None else self._default_domain(request)
            )
        except InvalidInput as exc:
            return _error(400, str(exc))
        try:
            domains = await asyncio.to_thread(self._hosted, domain)
        except NotFound as exc:
            logger.info("autoconfig refused domain=%s reason=not-hosted", domain)
            return _error(404, str(exc))
        body = _to_bytes(self._client_config(domain, domains))
        return web.Response(body=body, content_type=_XML_AUTOCONFIG, charset="utf-8")

    def _client_config(self, domain: str, domains: list[str]) -> ET.Element:
        root = ET.Element("clientConfig", version="1.1")
        provider = _sub(root, "emailProvider", id=domain)
        for name in [domain, *(d for d in domains if d != domain)]:
            _sub(provider, "domain", name)
        _sub(provider, "displayName", f"{domain} mail")
        _sub(provider, "displayShortName", domain)
        servers = (
            ("incomingServer", "imap", "imaps", "SSL"),
            ("incomingServer", "imap", "imap", "STARTTLS"),
            ("outgoingServer", "smtp", "smtps", "SSL"),
            ("outgoingServer", "smtp", "submission", "STARTTLS"),
        )
        for tag, kind, port_name, socket_type in servers:
            server = _sub(provider, tag, type=kind)
            _sub(server, "hostname", self.config.hostname)
            _sub(server, "port", self._port(port_name))
            _sub(server, "socketType", socket_type)
            _sub(server, "username", "%EMAILADDRESS%")
            _sub(server, "authentication", "password-cleartext")
        return root

    # -- Outlook -----------------------------------------------------------------------------

    async def autodiscover(self, request: web.Request) -> web.Response:
        """Outlook's POX autodiscover: IMAP and SMTP settings for the EMailAddress."""
        if (request.content_length or 0) > MAX_AUTODISCOVER_BODY:
            return _error(413, f"request body over {MAX_AUTODISCOVER_BODY} bytes")
        body = bytearray()
        while chunk := await request.content.read(MAX_AUTODISCOVER_BODY + 1 - len(body)):
            body += chunk
            if len(body) > MAX_AUTODISCOVER_BODY:
                return _error(413, f"request body over {MAX_AUTODISCOVER_BODY} bytes")
        try:
            address, schema = parse_autodiscover_request(bytes(body))
            domain = _parse_address(address)[1]
        except InvalidInput as exc:
            logger.info("autodiscover refused reason=%r", str(exc))
            return _error(400, str(exc))
        if schema is not None and schema != OUTLOOK_RESPONSE_NS:
            # An ActiveSync (mobilesync) client: Exchange's answer for an unserved schema.
            body_out = _to_bytes(_autodiscover_error("601", "Provider is not available"))
            return web.Response(body=body_out, content_type=_XML_AUTODISCOVER, charset="utf-8")
        try:
            await asyncio.to_thread(self._hosted, domain)
        except NotFound as exc:
            # Any non-200 status makes Outlook try its next autodiscover URL, then manual setup.
            logger.info("autodiscover refused domain=%s reason=not-hosted", domain)
            return _error(404, str(exc))
        body_out = _to_bytes(self._outlook_settings(address.strip()))
        return web.Response(body=body_out, content_type=_XML_AUTODISCOVER, charset="utf-8")

    def _outlook_settings(self, address: str) -> ET.Element:
        root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
        response = _sub(root, "Response", xmlns=OUTLOOK_RESPONSE_NS)
        account = _sub(response, "Account")
        _sub(account, "AccountType", "email")
        _sub(account, "Action", "settings")
        for kind, port_name in (("IMAP", "imaps"), ("SMTP", "smtps")):
            protocol = _sub(account, "Protocol")
            _sub(protocol, "Type", kind)
            _sub(protocol, "Server", self.config.hostname)
            _sub(protocol, "Port", self._port(port_name))
            _sub(protocol, "DomainRequired", "off")
            _sub(protocol, "LoginName", address)
            _sub(protocol, "SPA", "off")
            _sub(protocol, "SSL", "on")
            _sub(protocol, "AuthRequired", "on")
            if kind == "SMTP":
                # The same user name and password as IMAP.
                _sub(protocol, "UsePOPAuth", "on")
        return root

    # -- CalDAV / CardDAV --------------------------------------------------------------------

    async def dav_redirect(self, request: web.Request) -> web.Response:
        """RFC 6764 §5: the well-known DAV names point at the DAV root."""
        raise web.HTTPMovedPermanently(_DAV_ROOT)


def parse_autodiscover_request(body: bytes) -> tuple[str, str | None]:
    """``(EMailAddress, AcceptableResponseSchema or None)`` of an Outlook request.

    Raises:
        InvalidInput: not well-formed XML, a DTD or entity in it, or not an autodiscover
            request with an EMailAddress.
    """
    try:
        root: Any = SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise InvalidInput("DTDs and entities are not accepted") from exc
    except ET.ParseError as exc:
        line, column = exc.position
        raise InvalidInput(f"malformed XML at line {line}, column {column}") from exc
    except LookupError as exc:  # expat: an encoding declaration it does not know
        raise InvalidInput("malformed XML: unknown encoding") from exc
    ns = f"{{{AUTODISCOVER_REQUEST_NS}}}"
    if root.tag != f"{ns}Autodiscover":
        raise InvalidInput("not an Outlook autodiscover request")
    address = root.findtext(f"{ns}Request/{ns}EMailAddress")
    if not address or not address.strip():
        raise InvalidInput("EMailAddress is missing")
    schema = root.findtext(f"{ns}Request/{ns}AcceptableResponseSchema")
    return str(address), (str(schema).strip() if schema is not None else None)


def _autodiscover_error(code: str, message: str) -> ET.Element:
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    error = _sub(_sub(root, "Response"), "Error")
    _sub(error, "ErrorCode", code)
    _sub(error, "Message", message)
    _sub(error, "DebugData")
    return root


def setup(app: web.Application, config: Config, store: Store, ports: Mapping[str, int]) -> None:
    """Add the autoconfig, autodiscover and DAV well-known routes to ``app``.

    Args:
        app: the application to extend.
        config: gives ``hostname`` and the configured ports (used for a port missing from
            ``ports``).
        store: answers which domains are hosted.
        ports: the ports actually bound, by ``run/ports.json`` name; the server may fill it
            after this call, before the first request.
    """
    handlers = _Autoconfig(config, store, ports)
    router = app.router
    router.add_get("/.well-known/autoconfig/mail/config-v1.1.xml", handlers.config_v11)
    router.add_get("/mail/config-v1.1.xml", handlers.config_v11)
    router.add_post("/autodiscover/autodiscover.xml", handlers.autodiscover)
    router.add_post("/Autodiscover/Autodiscover.xml", handlers.autodiscover)
    router.add_route("*", "/.well-known/caldav", handlers.dav_redirect)
    router.add_route("*", "/.well-known/carddav", handlers.dav_redirect)
