"""The webmail sign-up page: off by default, and with ``webmail.registration`` on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from api_helpers import start_api_server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe: keep cookies of an IP-address host (127.0.0.1), which aiohttp drops by default.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


def _form(name: str, password: str = "correct horse", again: str | None = None) -> dict[str, str]:
    return {"username": name, "domain": "example.test", "password": password,
            "password2": password if again is None else again}  # fmt: skip


async def test_sign_up_is_off_by_default(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    with start_api_server(tmp_path, {"admin@example.test": ("pw", True)}) as server:
        async with http.get(server.base + "/webmail/register") as response:
            assert response.status == 404
        async with http.post(server.base + "/webmail/register", data=_form("eve")) as response:
            assert response.status == 404
        async with http.get(server.base + "/webmail/login") as response:
            assert "Create an account" not in await response.text()
        assert not server.store.accounts.user_exists("eve@example.test")


async def test_sign_up_makes_an_account_and_logs_in(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = {"registration": True, "registration_quota_mb": 50}
    users = {"admin@example.test": ("pw", True)}
    with start_api_server(tmp_path, users, webmail=settings, auth={"max_failures": 2}) as server:
        url = server.base + "/webmail/register"
        async with http.get(server.base + "/webmail/login") as response:
            assert "Create an account" in await response.text()
        async with http.post(url, data=_form("new.user"), allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"].endswith("/webmail/mail/INBOX")
            assert "rmail_session" in response.cookies
        account = server.store.accounts.get_user("new.user@example.test")
        assert account.quota_mb == 50 and not account.admin
        async with http.get(server.base + "/webmail/mail/INBOX") as response:
            assert response.status == 200 and "new.user@example.test" in await response.text()
        http.cookie_jar.clear()
        for form, status in (
            (_form("new.user"), 409),
            (_form("Bad Name"), 400),
            (_form("short", "x"), 400),
            (_form("differ", again="something else"), 400),
            ({**_form("otherdomain"), "domain": "elsewhere.test"}, 400),
        ):
            async with http.post(url, data=form, allow_redirects=False) as response:
                assert response.status == status, form
        foreign = {"Origin": "https://evil.example"}
        async with http.post(url, data=_form("csrf"), headers=foreign) as response:
            assert response.status == 403
        # The limiter lets one address make max_failures (2) accounts in its window.
        async with http.post(url, data=_form("second"), allow_redirects=False) as response:
            assert response.status == 303
        http.cookie_jar.clear()
        async with http.post(url, data=_form("third"), allow_redirects=False) as response:
            assert response.status == 429
        assert not server.store.accounts.user_exists("third@example.test")
