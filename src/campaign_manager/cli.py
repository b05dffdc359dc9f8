"""`campaign-manager run | migrate | demo | schemas`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from campaign_manager.logging import configure_logging
from campaign_manager.settings import Settings


def _stop_during_start_up(signum: int, frame: object) -> None:
    # Until the event loop takes over signals, SIGTERM unwinds start-up so embedded servers are stopped cleanly.
    raise SystemExit(0)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from campaign_manager.app import serve, servers_for

    signal.signal(signal.SIGTERM, _stop_during_start_up)
    with servers_for(settings) as servers:
        asyncio.run(serve(settings, servers))
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from campaign_manager.app import servers_for
    from campaign_manager.persistence.migrate import migrate

    if settings.database_url is None:
        # Only the database is needed: keep the embedded broker out of it.
        settings = settings.model_copy(update={"kafka_bootstrap_servers": "unused:0"})
    with servers_for(settings) as servers:
        migrate(servers.database_url)
    print("database migrated to the latest revision")
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from campaign_manager.demo import demo

    return demo(settings)


def _schemas(settings: Settings, args: argparse.Namespace) -> int:
    from campaign_manager.schemas import write_schemas

    for path in write_schemas(Path(args.directory)):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="campaign-manager", description="Wyckoff campaign lifecycle service.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="migrate, then run the worker and the HTTP API").set_defaults(handler=_run)
    commands.add_parser("migrate", help="apply database migrations").set_defaults(handler=_migrate)
    commands.add_parser("demo", help="publish the AAPL example to a running service").set_defaults(handler=_demo)
    schemas = commands.add_parser("schemas", help="write the JSON Schemas of the wire contracts")
    schemas.add_argument("--directory", default="schemas")
    schemas.set_defaults(handler=_schemas)
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    return args.handler(settings, args)


if __name__ == "__main__":
    sys.exit(main())
