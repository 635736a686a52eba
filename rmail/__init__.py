"""rmail: a complete mail provider in one Python asyncio process.

See ``../shared/ARCHITECTURE.md`` for the layers: entry (cli, app), protocols (smtp, imap,
web), services (delivery, relay, events, scheduler), store, and core (config, errors, mime,
small pure helpers).
"""

__version__ = "0.1.0"
