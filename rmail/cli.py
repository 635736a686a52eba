"""The ``rmail`` command line: one table of subcommands, each a small function.

Every subcommand takes ``--config FILE`` (or ``RMAIL_CONFIG``) and ``--data DIR`` anywhere on
its line. Admin commands use the store API with its locks, so they are safe while the server
runs. On failure a command prints one line on stderr and exits non-zero; ``--debug`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rmail import __version__, log
from rmail import config as config_mod
from rmail.config import Config
from rmail.errors import RmailError
from rmail.store import Store

__all__ = ["main"]

logger = logging.getLogger(__name__)

# sysexits.h, as sendmail-style delivery agents use them.
EX_USAGE: Final = 64
EX_DATAERR: Final = 65
EX_NOUSER: Final = 67
EX_TEMPFAIL: Final = 75
EX_CONFIG: Final = 78


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    setup: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Config], int]


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On the subparsers the defaults are SUPPRESS so a value given before the subcommand
    # is not overwritten by the subparser's default.
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="config.json to use (default: $RMAIL_CONFIG, else ./config.json if present)",
    )
    parser.add_argument("--data", metavar="DIR", default=default, help="override mail_root")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show tracebacks",
    )


def _load_config(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("RMAIL_CONFIG")
    if path is None and Path("config.json").is_file():
        path = "config.json"
    overrides: dict[str, Any] = {}
    if args.data:
        overrides["mail_root"] = str(Path(args.data).absolute())
    return config_mod.load(path, overrides=overrides)


def _password(args: argparse.Namespace, prompt: str = "Password: ") -> str:
    """From --password, else a line on stdin when it is not a terminal, else a prompt."""
    if getattr(args, "password", None):
        return str(args.password)
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise RmailError("no password on standard input")
        return line
    first = getpass.getpass(prompt)
    if first != getpass.getpass("Again: "):
        raise RmailError("the passwords do not match")
    return first


# -- serve -----------------------------------------------------------------------------------


def _setup_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--demo",
        action="store_true",
        help="create domain example.test, users alice and bob (passwords printed) and sample mail",
    )


def _run_serve(args: argparse.Namespace, config: Config) -> int:
    from rmail.app import Server, serve

    def with_demo(cfg: Config) -> Config:
        if args.demo and "example.test" not in cfg.domains:
            return cfg.replace(domains=[*cfg.domains, "example.test"])
        return cfg

    def ready(server: Server) -> None:
        if args.demo:
            from rmail.demo import setup_demo

            creds = setup_demo(server.store, server.delivery)
            _print_demo(creds, server)

    # SIGHUP re-reads the file with the same command-line overrides (--data, --demo).
    asyncio.run(
        serve(with_demo(config), reload=lambda: with_demo(_load_config(args)), on_ready=ready)
    )
    return 0


def _print_demo(creds: dict[str, str], server: Any) -> None:
    host = server.config.exchange_api.host
    ports = server.ports
    lines = [
        "",
        "rmail demo is running. Accounts (also in secrets/demo.json):",
        *[f"  {address}  password: {password}" for address, password in creds.items()],
        f"  IMAP   {server.config.imap.host}:{ports['imaps']} (TLS), :{ports['imap']} (STARTTLS)",
        f"  SMTP   submission {server.config.smtp.host}:{ports['smtps']} (TLS), "
        f":{ports['submission']} (STARTTLS); MX :{ports['smtp']}",
        f"  Webmail  http://{host}:{ports['http']}/webmail/",
        f"  API      http://{host}:{ports['http']}/docs (OpenAPI: /openapi.json)",
        f"  CalDAV/CardDAV  http://{host}:{ports['http']}/dav/   Drive  http://{host}:{ports['http']}/drive/",
        f"  HTTPS  https://{host}:{ports['https']}/ (self-signed certificate)",
        "  User name: the full address. The certificate is self-signed: accept it once.",
        f"  ports: {server.config.root / 'run' / 'ports.json'}",
        "  Stop with Ctrl-C.",
        "",
    ]
    print("\n".join(lines), flush=True)


# -- init and check --------------------------------------------------------------------------


def _setup_init(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default="config.json", help="file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--print-example", action="store_true", help="print config.json.example")
    p.add_argument("--print-reference", action="store_true", help="print docs/configuration.md")


def _run_init(args: argparse.Namespace, config: Config) -> int:
    if args.print_example:
        sys.stdout.write(config_mod.example_json())
        return 0
    if args.print_reference:
        sys.stdout.write(config_mod.reference_markdown())
        return 0
    path = Path(args.path)
    if path.exists() and not args.force:
        raise RmailError(f"{path} exists; use --force to overwrite")
    path.write_text(config_mod.example_json())
    print(f"wrote {path} with every option at its default; edit hostname, domains and mail_root")
    return 0


def _setup_check(p: argparse.ArgumentParser) -> None:
    del p


def _run_check(args: argparse.Namespace, config: Config) -> int:
    from rmail.check import check

    problems = check(Store(config))
    for problem in problems:
        print(problem)
    if not problems:
        print(f"ok: configuration valid, data directory {config.root} consistent")
    return 1 if problems else 0


# -- domains, users, aliases -----------------------------------------------------------------


def _setup_domain(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list domains")
    for action in ("add", "del"):
        sub.add_parser(action, help=f"{action} a domain").add_argument("domain")


def _run_domain(args: argparse.Namespace, config: Config) -> int:
    accounts = Store(config).accounts
    if args.action == "list":
        for domain in accounts.list_domains():
            print(domain)
    elif args.action == "add":
        accounts.add_domain(args.domain)
        print(f"added domain {args.domain.lower()}")
    else:
        accounts.delete_domain(args.domain)
        print(f"deleted domain {args.domain.lower()}")
    return 0


def _setup_user(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="create a user (password from prompt, stdin or --password)")
    add.add_argument("address", help="user@domain")
    add.add_argument("--password")
    add.add_argument("--admin", action="store_true")
    add.add_argument("--quota-mb", type=int, default=1024)
    lst = sub.add_parser("list", help="list users")
    lst.add_argument("domain", nargs="?")
    pw = sub.add_parser("passwd", help="change a password (revokes API tokens)")
    pw.add_argument("address")
    pw.add_argument("--password")
    st = sub.add_parser("set", help="change admin, enabled or quota")
    st.add_argument("address")
    st.add_argument("--admin", choices=("yes", "no"))
    st.add_argument("--enabled", choices=("yes", "no"))
    st.add_argument("--quota-mb", type=int)
    dl = sub.add_parser("del", help="delete a user and all their data")
    dl.add_argument("address")


def _run_user(args: argparse.Namespace, config: Config) -> int:
    store = Store(config)
    accounts = store.accounts
    if args.action == "add":
        account = store.create_user(
            args.address, _password(args), admin=args.admin, quota_mb=args.quota_mb
        )
        print(f"added user {account.address}" + (" (admin)" if account.admin else ""))
    elif args.action == "list":
        for account in accounts.list_users(args.domain):
            mark = [
                k for k, v in (("admin", account.admin), ("disabled", not account.enabled)) if v
            ]
            print(f"{account.address}\tquota={account.quota_mb}MB\t{' '.join(mark)}".rstrip())
    elif args.action == "passwd":
        accounts.set_password(args.address, _password(args, "New password: "))
        print(f"password changed for {args.address.lower()}")
    elif args.action == "set":
        account = accounts.set_user(
            args.address,
            admin=None if args.admin is None else args.admin == "yes",
            enabled=None if args.enabled is None else args.enabled == "yes",
            quota_mb=args.quota_mb,
        )
        print(
            f"{account.address}: admin={account.admin} enabled={account.enabled} "
            f"quota={account.quota_mb}MB"
        )
    else:
        store.delete_user(args.address)
        print(f"deleted user {args.address.lower()}")
    return 0


def _setup_alias(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser(
        "add", help="add an alias: an address, @domain (catch-all) or a regex over addresses"
    )
    add.add_argument("domain")
    add.add_argument("pattern")
    add.add_argument("target", help="comma-separated addresses")
    sub.add_parser("list", help="list aliases of a domain").add_argument("domain")
    dl = sub.add_parser("del", help="delete an alias")
    dl.add_argument("domain")
    dl.add_argument("pattern")


def _run_alias(args: argparse.Namespace, config: Config) -> int:
    accounts = Store(config).accounts
    if args.action == "add":
        accounts.add_alias(args.domain, args.pattern, args.target)
        print(f"added alias {args.pattern} -> {args.target}")
    elif args.action == "list":
        for alias in accounts.list_aliases(args.domain):
            print(f"{alias.pattern}\t{alias.target}")
    else:
        accounts.delete_alias(args.domain, args.pattern)
        print(f"deleted alias {args.pattern}")
    return 0


# -- deliver ---------------------------------------------------------------------------------


def _setup_deliver(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipients", nargs="+", metavar="RCPT", help="local address or alias")
    p.add_argument("--from", dest="mail_from", help="envelope sender (adds Return-Path)")


def _run_deliver(args: argparse.Namespace, config: Config) -> int:
    from rmail.delivery import Delivery
    from rmail.errors import NotFound, TemporaryFailure
    from rmail.scheduling import Scheduling

    message = sys.stdin.buffer.read()
    if not message.strip():
        print("rmail deliver: empty message on standard input", file=sys.stderr)
        return EX_DATAERR
    if len(message) > config.smtp.max_message_size:
        print("rmail deliver: message larger than smtp.max_message_size", file=sys.stderr)
        return EX_DATAERR
    delivery = Delivery(Store(config), workers=1)
    try:
        report = delivery.deliver_sync(message, args.recipients, args.mail_from)
        if config.calendar.scheduling:
            # iMIP in the message (invitations, replies) applied as the server would.
            addresses = sorted({c.address for cs in report.delivered.values() for c in cs})
            Scheduling(delivery.store, None, config.hostname).receive(
                message, args.mail_from, addresses
            )
    finally:
        delivery.close()
    for rcpt, copies in report.delivered.items():
        for copy in copies:
            print(f"{rcpt}: delivered to {copy.address} {copy.folder} uid={copy.uid}")
    for target in report.forward:
        print(f"{target}: not delivered: remote address (use SMTP submission)", file=sys.stderr)
    for rcpt, exc in report.failed.items():
        print(f"{rcpt}: not delivered: {exc}", file=sys.stderr)
    if any(isinstance(e, TemporaryFailure) for e in report.failed.values()):
        return EX_TEMPFAIL
    if any(isinstance(e, NotFound) for e in report.failed.values()):
        return EX_NOUSER
    return 1 if report.failed else 0


# -- queue and dkim --------------------------------------------------------------------------


def _setup_queue(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list queued messages")
    for action, text in (
        ("show", "show one message's record and header"),
        ("retry", "send one message again now"),
        ("delete", "drop one message from the queue (no bounce)"),
    ):
        sub.add_parser(action, help=text).add_argument("id")
    sub.add_parser("flush", help="send every queued message again now")


def _run_queue(args: argparse.Namespace, config: Config) -> int:
    import time

    from rmail.store.queue import Queue

    queue = Queue(config.root, fsync=config.store.fsync)
    now = time.time()
    if args.action == "list":
        count = 0
        for entry in queue.entries():
            count += 1
            pending = sum(1 for r in entry.recipients if r.status == "pending")
            errors = [r.last_error for r in entry.recipients if r.last_error]
            due = "now" if entry.next_try <= now else f"in {_span(entry.next_try - now)}"
            print(
                f"{entry.id}\tage {_span(now - entry.created)}\tnext {due}\t"
                f"attempts {entry.attempts}\tfrom <{entry.mail_from}>\t"
                f"pending {pending}/{len(entry.recipients)}"
                + (f"\tlast error: {errors[-1]}" if errors else "")
            )
        print(f"{count} queued message{'s' if count != 1 else ''}")
    elif args.action == "show":
        entry = queue.get(args.id)
        print(f"id: {entry.id}")
        print(f"from: <{entry.mail_from}>")
        print(f"queued: {time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime(entry.created))}")
        print(f"next try: {time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime(entry.next_try))}")
        print(f"attempts: {entry.attempts}")
        for r in entry.recipients:
            tail = f" ({r.last_error})" if r.last_error else ""
            print(f"to: <{r.address}> {r.status}, {r.attempts} attempts{tail}")
        message = queue.message(args.id)
        end = message.find(b"\r\n\r\n")
        head = message if end < 0 else message[:end]
        print()
        print(head.decode("utf-8", "replace").replace("\r\n", "\n"))
    elif args.action == "retry":
        queue.retry_now(args.id)
        print(f"{args.id}: will be sent again now")
    elif args.action == "delete":
        queue.delete(args.id)
        print(f"{args.id}: deleted")
    else:
        count = 0
        for entry in queue.entries():
            queue.retry_now(entry.id)
            count += 1
        print(f"{count} queued message{'s' if count != 1 else ''} will be sent again now")
    return 0


def _span(seconds: float) -> str:
    """``2d3h``, ``3h5m``, ``4m10s``, ``9s``: an age or a wait, to the minute or so."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _setup_dkim(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser(
        "show", help="print the DNS TXT record of a domain's DKIM key (made if missing)"
    ).add_argument("domain")


def _run_dkim(args: argparse.Namespace, config: Config) -> int:
    from rmail.relay.dkim import dns_record_lines

    domain = args.domain.lower().rstrip(".")
    if not Store(config).accounts.has_domain(domain):
        print(f"rmail dkim: {domain} is not a hosted domain", file=sys.stderr)
        return EX_DATAERR
    for line in dns_record_lines(config.root, config.relay.dkim_selector, domain):
        print(line)
    return 0


COMMANDS: Final = (
    Command("serve", "run the server", _setup_serve, _run_serve),
    Command("init", "write a config.json with every option", _setup_init, _run_init),
    Command("check", "validate the configuration and the data directory", _setup_check, _run_check),
    Command("domain", "add, list or delete hosted domains", _setup_domain, _run_domain),
    Command("user", "add, list, change or delete users", _setup_user, _run_user),
    Command("alias", "add, list or delete aliases", _setup_alias, _run_alias),
    Command("deliver", "deliver a message from stdin to local users", _setup_deliver, _run_deliver),
    Command(
        "queue", "list, show, retry, delete or flush queued outbound mail", _setup_queue, _run_queue
    ),
    Command("dkim", "show the DKIM DNS record of a hosted domain", _setup_dkim, _run_dkim),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmail", description="rmail: a mail provider in one process"
    )
    parser.add_argument("--version", action="version", version=f"rmail {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.setup(p)
        _add_common_everywhere(p)
        p.set_defaults(run=command.run)
    return parser


def _add_common_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--config``/``--data``/``--debug`` on a parser and every nested subcommand's."""
    _common(parser, top=False)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_common_everywhere(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        config = _load_config(args)
    except RmailError as exc:
        if args.command != "init":
            print(f"rmail: {exc}", file=sys.stderr)
            return EX_CONFIG
        # init writes a config: a broken one must not stand in its way.
        config = Config()
    log.setup(config.log_level if args.command == "serve" else "WARNING")
    try:
        return int(args.run(args, config))
    except RmailError as exc:
        if args.debug:
            logger.exception("command failed")
        print(f"rmail {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one broad except of the CLI: a bug, shown briefly
        if args.debug:
            raise
        print(f"rmail {args.command}: internal error: {exc!r} (run with --debug)", file=sys.stderr)
        return 70
