"""``rmail serve``: build everything from one Config, run the listeners, stop cleanly.

Start-up: data directory and secrets (TLS pair, JWT key) in place, hosted domains present in
the store, then every listener bound; the ports actually bound are logged and written to
``{mail_root}/run/ports.json``. SIGHUP reloads the configuration file (log level,
certificates; a listener's address needs a restart and says so); a bad file is refused and
the old configuration stays. SIGTERM/SIGINT stop accepting, let requests and deliveries in
progress finish (bounded by ``SHUTDOWN_GRACE``), then close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from rmail import config as config_mod
from rmail import log
from rmail.auth import Authenticator
from rmail.config import Config
from rmail.delivery import Delivery
from rmail.errors import ConfigError
from rmail.events import EventBus
from rmail.imap.server import ImapListeners
from rmail.imap.state import ImapServices
from rmail.ratelimit import LoginLimiter
from rmail.relay.dns import Resolver
from rmail.relay.inbound import InboundAuth
from rmail.relay.service import Relay
from rmail.scheduler import Reminders
from rmail.scheduling import Scheduling
from rmail.smtp.handler import Mode, SmtpHandler
from rmail.smtp.listeners import SmtpListeners
from rmail.store import Store
from rmail.store.fsio import atomic_write
from rmail.store.keys import ensure_jwt_key, ensure_tls_pair
from rmail.web import make_app
from rmail.webhooks import WebhookDispatcher

__all__ = ["Server", "serve"]

logger = logging.getLogger(__name__)

# Seconds in-flight requests get to finish after SIGTERM before connections are cut.
SHUTDOWN_GRACE: Final = 10.0


@dataclass
class Server:
    """The running process: services, listeners, and the bound ports."""

    config: Config
    store: Store = field(init=False)
    events: EventBus = field(init=False)
    delivery: Delivery = field(init=False)
    authenticator: Authenticator = field(init=False)
    # One resolver per process (relay.nameservers; a change needs a restart): the relay
    # and the inbound checks share it and its cache.
    resolver: Resolver = field(init=False)
    inbound: InboundAuth = field(init=False)
    relay: Relay = field(init=False)
    webhooks: WebhookDispatcher = field(init=False)
    scheduling: Scheduling | None = field(init=False)
    reminders: Reminders | None = None
    ssl_context: ssl.SSLContext = field(init=False)
    ports: dict[str, int] = field(default_factory=dict)
    _runners: list[web.AppRunner] = field(default_factory=list)
    _smtp: SmtpListeners | None = None
    _imap: ImapListeners | None = None
    # How SIGHUP gets the new configuration (see serve()); None: re-read config.source.
    reload_config: Callable[[], Config] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        cfg = self.config
        self.store = Store(cfg)
        self.events = EventBus()
        self.delivery = Delivery(self.store, self.events, workers=cfg.delivery.workers)
        limiter = LoginLimiter(
            cfg.auth.max_failures, cfg.auth.failure_window, cfg.auth.lockout_seconds
        )
        self.authenticator = Authenticator(self.store.accounts, limiter)
        self.resolver = Resolver(cfg.relay.nameservers)
        self.inbound = InboundAuth(self.resolver, cfg)
        self.scheduling = None
        if cfg.calendar.scheduling:
            self.scheduling = Scheduling(self.store, self.delivery, cfg.hostname)
            self.delivery.after_delivery = self.scheduling.delivered

    # -- start-up ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Data directory, secrets and hosted domains (blocking; before the loop serves)."""
        root = self.config.root
        (root / "domains").mkdir(parents=True, exist_ok=True)
        (root / "run").mkdir(exist_ok=True)
        if self.config.exchange_api.token_secret is None:
            ensure_jwt_key(root)
        for domain in self.config.domains:
            if not self.store.accounts.has_domain(domain):
                self.store.accounts.add_domain(domain)
        self.ssl_context = self._make_ssl_context()

    def _tls_files(self) -> tuple[Path, Path]:
        tls = self.config.tls
        if tls.cert_file and tls.key_file:
            return Path(tls.cert_file), Path(tls.key_file)
        return ensure_tls_pair(self.config.root, self.config.hostname)

    def _make_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        cert, key = self._tls_files()
        context.load_cert_chain(cert, key)
        return context

    async def start(self) -> None:
        """Bind every listener and write ``run/ports.json``."""
        await asyncio.to_thread(self.prepare)
        cfg = self.config
        # Before any listener, so that no event of an accepted message is missed.
        self.webhooks = WebhookDispatcher(cfg, self.store, self.events)
        self.webhooks.start()
        self._smtp = SmtpListeners(cfg.smtp, cfg.hostname, self._smtp_handler, self.ssl_context)
        self.ports.update(await self._smtp.start())
        self._imap = ImapListeners(
            ImapServices(cfg, self.store, self.authenticator, self.events), self.ssl_context
        )
        self.ports.update(await self._imap.start())
        self.relay = Relay(cfg, self.delivery, self.resolver)
        self.delivery.on_queued = self.relay.wake
        self.relay.start()
        self.reminders = Reminders(
            self.store, self.delivery, cfg.calendar.reminder_interval, cfg.hostname
        )
        self.reminders.start()
        runner = web.AppRunner(
            make_app(
                cfg,
                self.store,
                authenticator=self.authenticator,
                delivery=self.delivery,
                events=self.events,
                status=self.status,
                # self.ports itself: the HTTP ports it gains below show up in the app too.
                ports=self.ports,
                scheduling=self.scheduling,
            ),
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE,
        )
        await runner.setup()
        self._runners.append(runner)
        http = web.TCPSite(runner, cfg.exchange_api.host, cfg.exchange_api.port)
        https = web.TCPSite(
            runner,
            cfg.exchange_api.host,
            cfg.exchange_api.secure_port,
            ssl_context=self.ssl_context,
        )
        for name, site in (("http", http), ("https", https)):
            await site.start()
            self.ports[name] = _bound_port(site)
        for name, port in self.ports.items():
            host = (
                cfg.exchange_api.host
                if name.startswith("http")
                else cfg.imap.host
                if name.startswith("imap")
                else cfg.smtp.host
            )
            logger.info("listening service=%s host=%s port=%d", name, host, port)
        # What start-up built lives as long as the process: move it out of the collector's
        # reach, or every full collection scans it again (tens of ms, paid by whichever
        # request allocates enough to trigger one, e.g. the first listing of a big folder).
        gc.collect()
        gc.freeze()
        ports_json = json.dumps(self.ports, indent=1).encode() + b"\n"
        await asyncio.to_thread(
            atomic_write, cfg.root / "run" / "ports.json", ports_json, mode=0o644
        )

    def status(self) -> dict[str, Any]:
        """Listener states and the queue length, for ``/health``."""
        listeners: dict[str, dict[str, Any]] = {}
        servers: dict[str, Any] = {}
        if self._smtp is not None:
            servers.update(self._smtp.servers)
        if self._imap is not None:
            servers.update(self._imap.servers)
        for name, port in self.ports.items():
            server = servers.get(name)
            serving = server.is_serving() if server is not None else name.startswith("http")
            listeners[name] = {"port": port, "serving": bool(serving) and not self._stop.is_set()}
        queue = len(self.relay.known) if hasattr(self, "relay") else 0
        return {"listeners": listeners, "queue": queue}

    def _load_again(self) -> Config:
        """The configuration SIGHUP applies."""
        if self.reload_config is not None:
            return self.reload_config()
        if self.config.source is None:
            return self.config
        return config_mod.load(self.config.source)

    def _smtp_handler(self, mode: Mode) -> SmtpHandler:
        # Read self.config at each connection, so SIGHUP's new settings apply to new ones.
        checks = mode == "mx" and self.config.inbound.check_authentication
        return SmtpHandler(
            mode,
            self.config,
            self.delivery,
            self.authenticator,
            self.inbound if checks else None,
        )

    # -- running -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    def reload(self) -> None:
        """SIGHUP: re-read the config and the certificates; keep the old config on error."""
        try:
            new = self._load_again()
        except ConfigError as exc:
            logger.error("SIGHUP: configuration refused, keeping the old one: %s", exc)
            return
        if new.root != self.config.root:
            logger.warning("SIGHUP: mail_root changes need a restart; keeping %s", self.config.root)
            new = new.replace(mail_root=str(self.config.root))
        for section in ("smtp", "imap", "exchange_api"):
            before, after = getattr(self.config, section), getattr(new, section)
            if (before.host, before.port) != (after.host, after.port):
                logger.warning("SIGHUP: %s listener address changes need a restart", section)
        if new.relay.nameservers != self.config.relay.nameservers:
            logger.warning("SIGHUP: relay.nameservers changes need a restart")
        self.config = new
        self.inbound.config = new
        if self._smtp is not None:
            self._smtp.config = new.smtp
        if self._imap is not None:
            self._imap.services.config = new
        if hasattr(self, "relay"):
            self.relay.apply(new)
        if hasattr(self, "webhooks"):
            self.webhooks.apply(new)
        if self.reminders is not None:
            self.reminders.interval = new.calendar.reminder_interval
        try:
            cert, key = self._tls_files()
            # New handshakes use the new pair; connections already open keep theirs.
            self.ssl_context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            logger.error("SIGHUP: certificates not reloaded: %s", exc)
        else:
            logger.info("SIGHUP: configuration and certificates reloaded")
        # Last, so that the line above still shows when the new level is quieter.
        log.setup(new.log_level)

    async def stop(self) -> None:
        """Stop listeners, finish in-flight work, close the store."""
        logger.info("shutting down")
        if self._smtp is not None:
            await self._smtp.stop(SHUTDOWN_GRACE)
        if self._imap is not None:
            await self._imap.stop(SHUTDOWN_GRACE)
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.reminders is not None:
            await self.reminders.stop()
        if self.scheduling is not None:
            # Invitations received and still being applied; what they send is queued.
            await self.scheduling.drain()
        if hasattr(self, "relay"):
            self.delivery.on_queued = None
            await self.relay.stop(SHUTDOWN_GRACE)
        if hasattr(self, "webhooks"):
            # After every publisher stopped; retries waiting in memory are dropped here.
            await self.webhooks.stop()
        self.inbound.close()
        await asyncio.to_thread(self.delivery.close)
        self.store.close()
        with contextlib.suppress(FileNotFoundError):
            (self.config.root / "run" / "ports.json").unlink()
        logger.info("stopped")


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the asyncio.Server here; port 0 needs the real port
    assert isinstance(server, asyncio.Server)
    return int(server.sockets[0].getsockname()[1])


async def serve(
    config: Config,
    *,
    reload: Callable[[], Config] | None = None,
    on_ready: Callable[[Server], None] | None = None,
) -> None:
    """Run the server until SIGTERM or SIGINT.

    Args:
        config: the configuration to start with.
        reload: how SIGHUP gets a new configuration (the CLI re-reads the file with the
            same command-line overrides); default: re-read ``config.source``.
        on_ready: run in a worker thread once the listeners are up and before "ready" is
            logged (``--demo`` creates its accounts here).
    """
    server = Server(config, reload_config=reload)
    loop = asyncio.get_running_loop()
    await server.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.request_stop)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    try:
        if on_ready is not None:
            await asyncio.to_thread(on_ready, server)
        cfg = server.config
        logger.info(
            "rmail ready hostname=%s mail_root=%s domains=%s",
            cfg.hostname,
            cfg.root,
            ",".join(cfg.domains),
        )
        await server.wait_stopped()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        await server.stop()
