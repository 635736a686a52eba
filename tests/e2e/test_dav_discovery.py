"""CalDAV and CardDAV found from nothing but an e-mail address (RFC 6764 §5-6).

The client is the ``caldav`` library, which looks up ``_caldavs._tcp.{domain}`` (SRV) and
its TXT ``path=`` with dnspython, then talks HTTPS to the host and port the SRV record
names. The internet's DNS is stood in for by ``tests/dns_server.py`` on 127.0.0.1: the
library's resolver asks it for the SRV and TXT records, and the HTTP client (niquests,
which the library uses) resolves the SRV target through it too (its ``dou://`` resolver),
so nothing but the records in this file tells the client where the server is. TLS is
verified against the server's own self-signed certificate, whose names include the
configured hostname the SRV record points at.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

import caldav
import dns.resolver
import niquests
import pytest
from api_helpers import ApiServer, start_api_server
from caldav.discovery import discover_service
from dns_server import DnsServer
from smtp_helpers import HOSTNAME

ALICE = ("alice@example.test", "alice-pw")
DAV = "DAV:"
CARD = "urn:ietf:params:xml:ns:carddav"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with start_api_server(tmp_path_factory.mktemp("disc"), {ALICE[0]: (ALICE[1], False)}) as s:
        yield s


@pytest.fixture
def dns_zone(server: ApiServer) -> Iterator[DnsServer]:
    """SRV and TXT records for example.test, and dnspython's default resolver pointed at them."""
    https = server.server.ports["https"]
    zone = {
        "_caldavs._tcp.example.test": {
            "SRV": [f"0 1 {https} {HOSTNAME}."],
            "TXT": ['"path=/dav/"'],
        },
        "_carddavs._tcp.example.test": {
            "SRV": [f"0 1 {https} {HOSTNAME}."],
            "TXT": ['"path=/.well-known/carddav"'],
        },
        HOSTNAME: {"A": ["127.0.0.1"]},
    }
    saved = dns.resolver.default_resolver
    with DnsServer(zone) as dns_server:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = dns_server.port
        dns.resolver.default_resolver = resolver
        try:
            yield dns_server
        finally:
            dns.resolver.default_resolver = saved


def _ca(server: ApiServer) -> str:
    cert = server.store.root / "secrets" / "tls" / "cert.pem"
    assert cert.exists(), "the server makes its self-signed pair at start"
    return str(cert)


def _session(zone: DnsServer) -> niquests.Session:
    return niquests.Session(resolver=f"dou://127.0.0.1:{zone.port}")


def _client_from_address(server: ApiServer, zone: DnsServer) -> caldav.DAVClient:
    client = caldav.DAVClient(username=ALICE[0], password=ALICE[1], ssl_verify_cert=_ca(server))
    client.session = _session(zone)
    return client


def test_caldav_from_an_address_with_srv_and_txt(server: ApiServer, dns_zone: DnsServer) -> None:
    client = _client_from_address(server, dns_zone)
    https = server.server.ports["https"]
    assert str(client.url) == f"https://{HOSTNAME}:{https}/dav/"
    principal = client.principal()
    assert str(principal.url).endswith("/dav/principals/alice@example.test/")
    calendar = principal.make_calendar(name="Found by DNS", cal_id="dns")
    calendar.save_event(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
        "UID:dns-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260301T090000Z\r\n"
        "DTEND:20260301T100000Z\r\nSUMMARY:Found\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    names = [c.get_display_name() for c in principal.calendars()]
    assert "Found by DNS" in names
    queried = {name for name, _ in dns_zone.queries}
    assert "_caldavs._tcp.example.test." in queried
    assert f"{HOSTNAME}." in queried, "the HTTP client resolved the SRV target through our DNS"


def test_caldav_from_an_address_without_txt(server: ApiServer, dns_zone: DnsServer) -> None:
    """No TXT record: the client starts at ``/``, which names the principal too (RFC 6764 §6)."""
    dns_zone.set("_caldavs._tcp.example.test", "TXT", [])
    client = _client_from_address(server, dns_zone)
    https = server.server.ports["https"]
    assert str(client.url) == f"https://{HOSTNAME}:{https}/"
    principal = client.principal()
    assert str(principal.url).endswith("/dav/principals/alice@example.test/")
    assert "Calendar" in [c.get_display_name() for c in principal.calendars()]


def test_carddav_from_an_address(server: ApiServer, dns_zone: DnsServer) -> None:
    """CardDAV: the TXT path is the well-known name, which redirects to the DAV root."""
    info = discover_service(ALICE[0], "carddav", ssl_verify_cert=_ca(server))
    assert info is not None and info.source == "srv"
    assert info.hostname == HOSTNAME and info.path == "/.well-known/carddav"
    body = (
        '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:'
        'carddav"><d:prop><d:current-user-principal/><card:addressbook-home-set/></d:prop>'
        "</d:propfind>"
    )
    with _session(dns_zone) as http:
        answer = http.request(
            "PROPFIND",
            info.url,
            data=body,
            headers={"Depth": "0", "Content-Type": "application/xml"},
            auth=ALICE,
            verify=_ca(server),
            allow_redirects=True,
        )
    assert answer.status_code == 207, answer.text
    assert answer.url is not None and answer.url.endswith("/dav/")
    tree = ET.fromstring(answer.content)
    home = tree.find(f".//{{{CARD}}}addressbook-home-set/{{{DAV}}}href")
    assert home is not None and home.text == "/dav/addressbooks/alice@example.test/"
