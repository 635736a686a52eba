"""Helpers for the JSON API end-to-end tests: a running server with users, and a client.

``ApiClient`` wraps aiohttp's client for one base URL: ``await api.login(user, pw)`` keeps
the token, and ``await api.call("GET", "/folders")`` returns ``(status, body)`` with the body
decoded from JSON when it is JSON.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from conftest import RunningServer, make_config
from smtp_helpers import CHEAP_AUTH, HOSTNAME

from rmail.store import Store


@dataclass
class ApiServer:
    server: RunningServer
    store: Store

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.ports['http']}"


@contextlib.contextmanager
def start_api_server(
    tmp_path: Path, users: Mapping[str, tuple[str, bool]], **overrides: Any
) -> Iterator[ApiServer]:
    """``users``: address -> (password, admin). ``overrides``: config sections."""
    config_path = make_config(tmp_path, **overrides)
    store = Store.open(tmp_path / "data", auth=CHEAP_AUTH, hostname=HOSTNAME)
    for address, (password, admin) in users.items():
        store.create_user(address, password, admin=admin)
    server = RunningServer(config_path).start()
    try:
        yield ApiServer(server, store)
    finally:
        store.close()
        code = server.stop()
        assert code == 0, server.stderr_text()


class ApiClient:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.token: str | None = None

    async def login(self, username: str, password: str, **extra: Any) -> dict[str, Any]:
        status, body = await self.call(
            "POST", "/auth/login", json={"username": username, "password": password, **extra}
        )
        assert status == 200, body
        self.token = body["token"]
        return dict(body)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        status, _, body = await self.raw(
            method, path, json=json, data=data, headers=headers, token=token, params=params
        )
        return status, body

    async def raw(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], Any]:
        sent = dict(headers or {})
        bearer = token if token is not None else self.token
        if bearer and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {bearer}"
        async with self.session.request(
            method, self.base + path, json=json, data=data, headers=sent, params=params
        ) as response:
            raw = await response.read()
            body: Any = raw
            if response.content_type == "application/json":
                body = _json_loads(raw)
            return response.status, response.headers, body


def _json_loads(raw: bytes) -> Any:
    return json.loads(raw)
