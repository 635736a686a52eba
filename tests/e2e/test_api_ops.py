"""Operations routes: /health with listener states, /metrics in Prometheus format, the
OpenAPI document (complete against the router) and the interactive docs page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from api_helpers import ApiClient, ApiServer, start_api_server
from prometheus_client.parser import text_string_to_metric_families
from smtp_helpers import connect, quit_quietly

from rmail.config import load
from rmail.web import make_app
from rmail.web.openapi import DOCUMENTED_ELSEWHERE, PATHS, spec

USER = ("ops@example.test", "ops-pw")


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with start_api_server(tmp_path_factory.mktemp("ops"), {USER[0]: (USER[1], False)}) as s:
        yield s


@pytest.fixture
async def client(ops_server: ApiServer) -> AsyncIterator[ApiClient]:
    async with aiohttp.ClientSession() as session:
        yield ApiClient(session, ops_server.base)


async def test_health_reports_every_listener(ops_server: ApiServer, client: ApiClient) -> None:
    status, body = await client.call("GET", "/health")
    assert status == 200 and body["status"] == "ok"
    ports = ops_server.server.ports
    assert set(body["listeners"]) == set(ports)
    for name, port in ports.items():
        assert body["listeners"][name] == {"port": port, "serving": True}
    assert body["queue"] == 0


async def test_metrics_count_smtp_http_and_login_failures(
    ops_server: ApiServer, client: ApiClient
) -> None:
    smtp = connect(ops_server.server.ports["smtp"])
    try:
        smtp.sendmail("x@remote.test", [USER[0]], b"Subject: m\r\n\r\nbody\r\n")
    finally:
        quit_quietly(smtp)
    await client.call("POST", "/auth/login", json={"username": USER[0], "password": "wrong"})
    await client.login(*USER)
    await client.call("GET", "/folders")
    status, headers, body = await client.raw("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("rmail_smtp_sessions_total", (("port", "mx"),))] >= 1
    assert samples[("rmail_smtp_messages_total", (("port", "mx"), ("result", "accepted")))] >= 1
    assert samples[("rmail_deliveries_total", (("result", "delivered"),))] >= 1
    key = ("rmail_login_failures_total", (("protocol", "api"), ("reason", "password")))
    assert samples[key] >= 1
    get_folders = (("method", "GET"), ("route", "/folders"), ("status", "200"))
    assert samples[("rmail_http_requests_total", get_folders)] >= 1
    assert ("rmail_queue_messages", ()) in samples
    assert not any("example.test" in str(labels) for _, labels in samples)


async def test_openapi_document_is_3_1(client: ApiClient) -> None:
    status, body = await client.call("GET", "/openapi.json")
    assert status == 200 and body["openapi"].startswith("3.1")
    assert "/auth/login" in body["paths"]
    assert body["paths"]["/auth/login"]["post"]["security"] == []


def test_every_registered_route_is_in_the_openapi_document(tmp_path: Path) -> None:
    """Fails when a route is added without its description (or a description goes stale)."""
    config = load(None, env={}, overrides={"mail_root": str(tmp_path)})
    from rmail.auth import Authenticator
    from rmail.delivery import Delivery
    from rmail.events import EventBus
    from rmail.ratelimit import LoginLimiter
    from rmail.store import Store

    store = Store(config)
    delivery = Delivery(store)
    try:
        app = make_app(
            config,
            store,
            authenticator=Authenticator(store.accounts, LoginLimiter(5, 60, 60)),
            delivery=delivery,
            events=EventBus(),
        )
        registered = set()
        for route in app.router.routes():
            path = route.resource.canonical if route.resource is not None else ""
            if route.method not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                continue  # HEAD mirrors GET; WebDAV methods are not part of this API
            if path.startswith(DOCUMENTED_ELSEWHERE):
                continue
            registered.add((path, route.method.lower()))
        documented = {(path, method) for path, ops in PATHS.items() for method in ops}
        assert registered - documented == set(), "routes missing from rmail/web/openapi.py"
        assert documented - registered == set(), "documented routes that do not exist"
        assert spec()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    finally:
        delivery.close()
        store.close()


async def test_the_docs_page_is_served_from_the_package(client: ApiClient) -> None:
    status, headers, page = await client.raw("GET", "/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/docs/static/swagger-ui-bundle.js" in page
    status, headers, script = await client.raw("GET", "/docs/static/swagger-ui-bundle.js")
    assert status == 200 and len(script) > 100_000
    status, _, init = await client.raw("GET", "/docs/init.js")
    assert status == 200 and b"/openapi.json" in init
