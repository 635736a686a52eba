"""Client autoconfiguration over real HTTP: Thunderbird autoconfig, Outlook autodiscover, DAV.

One ``rmail serve`` (port 0, two hosted domains) answers every test; clients are aiohttp and
curl, and every XML answer is parsed with defusedxml, as a careful client would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import defusedxml.ElementTree as SafeET
import pytest
from conftest import RunningServer, make_config

from rmail.web.autoconfig import (
    AUTODISCOVER_REQUEST_NS,
    AUTODISCOVER_RESPONSE_NS,
    MAX_AUTODISCOVER_BODY,
    OUTLOOK_RESPONSE_NS,
)

HOSTNAME: Final = "mail.example.test"
DOMAINS: Final = ["example.test", "other.test"]
AUTOCONFIG_PATHS: Final = [
    "/.well-known/autoconfig/mail/config-v1.1.xml",
    "/mail/config-v1.1.xml",
]
AUTODISCOVER_PATHS: Final = [
    "/autodiscover/autodiscover.xml",
    "/Autodiscover/Autodiscover.xml",  # what Outlook sends
]
TIMEOUT: Final = aiohttp.ClientTimeout(total=20)
RESP: Final = f"{{{AUTODISCOVER_RESPONSE_NS}}}"
OUTLOOK: Final = f"{{{OUTLOOK_RESPONSE_NS}}}"
MOBILESYNC: Final = (
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp_path = tmp_path_factory.mktemp("autoconfig")
    running = RunningServer(make_config(tmp_path, hostname=HOSTNAME, domains=DOMAINS)).start()
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, running.stderr_text()


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[aiohttp.ClientSession]:
    base = f"http://127.0.0.1:{server.ports['http']}"
    async with aiohttp.ClientSession(base, timeout=TIMEOUT) as session:
        yield session


def _bound_ports(server: RunningServer) -> dict[str, int]:
    ports: dict[str, int] = json.loads((server.root / "run" / "ports.json").read_text())
    return ports


def _autodiscover_request(address: str, schema: str = OUTLOOK_RESPONSE_NS) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{AUTODISCOVER_REQUEST_NS}">\n'
        "  <Request>\n"
        f"    <EMailAddress>{address}</EMailAddress>\n"
        f"    <AcceptableResponseSchema>{schema}</AcceptableResponseSchema>\n"
        "  </Request>\n"
        "</Autodiscover>\n"
    ).encode()


def _servers(root: Any) -> list[dict[str, str]]:
    """Every incoming/outgoing server of a clientConfig, flattened into dicts."""
    provider = root.find("emailProvider")
    out = []
    for element in provider:
        if element.tag in ("incomingServer", "outgoingServer"):
            fields = {child.tag: child.text for child in element}
            out.append({"kind": element.tag, "type": element.get("type"), **fields})
    return out


def _check_client_config(xml: bytes, server: RunningServer, domain: str) -> None:
    root = SafeET.fromstring(xml, forbid_dtd=True)
    assert (root.tag, root.get("version")) == ("clientConfig", "1.1")
    provider = root.find("emailProvider")
    assert provider.get("id") == domain
    assert [d.text for d in provider.findall("domain")] == [
        domain,
        *(d for d in DOMAINS if d != domain),
    ]
    ports = _bound_ports(server)
    assert sorted(
        (s["kind"], s["type"], s["hostname"], int(s["port"]), s["socketType"])
        for s in _servers(root)
    ) == sorted(
        [
            ("incomingServer", "imap", HOSTNAME, ports["imaps"], "SSL"),
            ("incomingServer", "imap", HOSTNAME, ports["imap"], "STARTTLS"),
            ("outgoingServer", "smtp", HOSTNAME, ports["smtps"], "SSL"),
            ("outgoingServer", "smtp", HOSTNAME, ports["submission"], "STARTTLS"),
        ]
    )
    for entry in _servers(root):
        assert entry["username"] == "%EMAILADDRESS%"
        assert entry["authentication"] == "password-cleartext"


# ------------------------------------------------------------------ Thunderbird


@pytest.mark.parametrize("path", AUTOCONFIG_PATHS)
@pytest.mark.parametrize("domain", DOMAINS)
async def test_autoconfig_names_the_hostname_and_the_ports_actually_bound(
    server: RunningServer, http: aiohttp.ClientSession, path: str, domain: str
) -> None:
    async with http.get(path, params={"emailaddress": f"Alice@{domain.upper()}"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/xml"
        assert resp.charset == "utf-8"
        xml = await resp.read()
    _check_client_config(xml, server, domain)


@pytest.mark.parametrize("path", AUTOCONFIG_PATHS)
def test_curl_fetches_autoconfig(server: RunningServer, tmp_path: Path, path: str) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed for this test (apt-get install curl)"
    out = tmp_path / "config.xml"
    url = f"http://127.0.0.1:{server.ports['http']}{path}?emailaddress=bob%40other.test"
    done = subprocess.run(
        [
            curl,
            "-sS",
            "--max-time",
            "20",
            "-o",
            str(out),
            "-w",
            "%{http_code} %{content_type}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "200 application/xml; charset=utf-8"
    _check_client_config(out.read_bytes(), server, "other.test")


async def test_autoconfig_without_an_address_describes_the_requested_host(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    # Thunderbird asks autoconfig.{domain}; without emailaddress the Host says which domain.
    headers = {"Host": "autoconfig.other.test"}
    async with http.get(AUTOCONFIG_PATHS[1], headers=headers) as resp:
        assert resp.status == 200
        _check_client_config(await resp.read(), server, "other.test")
    async with http.get(AUTOCONFIG_PATHS[0]) as resp:  # Host 127.0.0.1: the first domain
        assert resp.status == 200
        _check_client_config(await resp.read(), server, DOMAINS[0])


async def test_autoconfig_for_a_domain_not_hosted_here_is_404(
    http: aiohttp.ClientSession,
) -> None:
    for path in AUTOCONFIG_PATHS:
        async with http.get(path, params={"emailaddress": "eve@elsewhere.test"}) as resp:
            assert resp.status == 404
            assert "elsewhere.test" in (await resp.json())["error"]


@pytest.mark.parametrize(
    "address", ["alice", "alice@", "@example.test", "alice@bad_domain!", "a b@example.test"]
)
async def test_autoconfig_with_a_malformed_address_is_400(
    http: aiohttp.ClientSession, address: str
) -> None:
    async with http.get(AUTOCONFIG_PATHS[0], params={"emailaddress": address}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]


# ------------------------------------------------------------------ Outlook


@pytest.mark.parametrize("path", AUTODISCOVER_PATHS)
async def test_autodiscover_answers_imap_and_smtp_with_implicit_tls(
    server: RunningServer, http: aiohttp.ClientSession, path: str
) -> None:
    body = _autodiscover_request("carol@other.test")
    async with http.post(path, data=body, headers={"Content-Type": "text/xml"}) as resp:
        assert resp.status == 200
        assert (resp.content_type, resp.charset) == ("text/xml", "utf-8")
        xml = await resp.read()
    # Default namespaces, as Exchange writes them: no ns0: prefixes for picky parsers.
    assert b"ns0:" not in xml
    root = SafeET.fromstring(xml, forbid_dtd=True)
    assert root.tag == f"{RESP}Autodiscover"
    account = root.find(f"{OUTLOOK}Response/{OUTLOOK}Account")
    assert account.findtext(f"{OUTLOOK}AccountType") == "email"
    assert account.findtext(f"{OUTLOOK}Action") == "settings"
    protocols = {
        p.findtext(f"{OUTLOOK}Type"): {child.tag.removeprefix(OUTLOOK): child.text for child in p}
        for p in account.findall(f"{OUTLOOK}Protocol")
    }
    ports = _bound_ports(server)
    assert set(protocols) == {"IMAP", "SMTP"}
    for kind, port_name in (("IMAP", "imaps"), ("SMTP", "smtps")):
        settings = protocols[kind]
        assert settings["Server"] == HOSTNAME
        assert int(settings["Port"]) == ports[port_name]
        assert settings["SSL"] == "on"
        assert settings["LoginName"] == "carol@other.test"
        assert settings["SPA"] == "off"


async def test_autodiscover_for_a_domain_not_hosted_here_is_404(
    http: aiohttp.ClientSession,
) -> None:
    body = _autodiscover_request("eve@elsewhere.test")
    async with http.post(AUTODISCOVER_PATHS[1], data=body) as resp:
        assert resp.status == 404
        assert "elsewhere.test" in (await resp.json())["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"<Autodiscover><Request><EMailAddress>x@example.test",
        b"not xml at all",
        b"",
        b"<?xml version='1.0' encoding='bogus'?><a/>",
        b"<Autodiscover><Request><EMailAddress>a@example.test</EMailAddress></Request>"
        b"</Autodiscover>",  # no namespace: not Outlook's request schema
        _autodiscover_request("").replace(b"<EMailAddress></EMailAddress>", b""),
        _autodiscover_request("not-an-address"),
    ],
    ids=["truncated", "text", "empty", "unknown-encoding", "no-namespace", "no-address", "bad"],
)
async def test_autodiscover_refuses_malformed_requests_with_400(
    http: aiohttp.ClientSession, body: bytes
) -> None:
    async with http.post(AUTODISCOVER_PATHS[0], data=body) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]


async def test_autodiscover_refuses_a_billion_laughs_without_expanding_it(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    body = (
        f'<?xml version="1.0"?><!DOCTYPE Autodiscover [{entities}]>'
        f'<Autodiscover xmlns="{AUTODISCOVER_REQUEST_NS}"><Request>'
        "<EMailAddress>&lol9;@example.test</EMailAddress></Request></Autodiscover>"
    ).encode()
    async with http.post(AUTODISCOVER_PATHS[1], data=body) as resp:
        assert resp.status == 400
        assert "DTD" in (await resp.json())["error"]
    async with http.get("/health") as resp:
        assert resp.status == 200
    assert "Traceback" not in server.stderr_text()


async def test_autodiscover_refuses_an_oversize_body_with_413(
    http: aiohttp.ClientSession,
) -> None:
    padding = b"<!--" + b"x" * MAX_AUTODISCOVER_BODY + b"-->"
    body = _autodiscover_request("alice@example.test") + padding
    async with http.post(AUTODISCOVER_PATHS[0], data=body) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]

    async def chunked() -> AsyncIterator[bytes]:
        # No Content-Length: the cap must hold while reading, too.
        yield _autodiscover_request("alice@example.test")
        for _ in range(8):
            yield b"<!--" + b"y" * 16384 + b"-->"

    async with http.post(AUTODISCOVER_PATHS[0], data=chunked()) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]


async def test_autodiscover_for_another_response_schema_says_provider_not_available(
    http: aiohttp.ClientSession,
) -> None:
    body = _autodiscover_request("alice@example.test", schema=MOBILESYNC)
    async with http.post(AUTODISCOVER_PATHS[0], data=body) as resp:
        assert resp.status == 200
        root = SafeET.fromstring(await resp.read(), forbid_dtd=True)
    assert root.findtext(f"{RESP}Response/{RESP}Error/{RESP}ErrorCode") == "601"


# ------------------------------------------------------------------ CalDAV / CardDAV


@pytest.mark.parametrize("name", ["caldav", "carddav"])
@pytest.mark.parametrize("method", ["GET", "PROPFIND"])
async def test_dav_well_known_names_redirect_permanently_to_dav_root(
    http: aiohttp.ClientSession, name: str, method: str
) -> None:
    async with http.request(method, f"/.well-known/{name}", allow_redirects=False) as resp:
        assert resp.status == 301
        assert resp.headers["Location"] == "/dav/"
