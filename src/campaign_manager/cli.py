"""`campaign-manager run | migrate | demo | rebuild | schemas | config | dlq replay`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from pydantic import ValidationError

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


def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from campaign_manager.app import servers_for
    from campaign_manager.persistence.store import Database
    from campaign_manager.service.rebuild import PAGE_SIZE, Difference, check_all_campaigns

    def report(difference: Difference) -> None:
        print(
            f"{difference.campaign_id}  {difference.field}"
            f"  stored={_shown(difference.stored)}  recomputed={_shown(difference.recomputed)}"
        )

    async def check(database_url: str) -> int:
        database = Database.connect(database_url, pool_size=1, max_overflow=0)
        try:
            summary = await check_all_campaigns(database, report, page_size=args.page_size or PAGE_SIZE)
        finally:
            await database.dispose()
        print(summary.line())
        return 1 if summary.differences else 0

    # Only the database is needed: never start an embedded broker for it.
    settings = settings.model_copy(update={"kafka_bootstrap_servers": "unused:0"})
    with servers_for(settings) as servers:
        return asyncio.run(check(servers.database_url))


def _shown(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from campaign_manager.demo import demo

    return demo(settings)


def _schemas(settings: Settings, args: argparse.Namespace) -> int:
    from campaign_manager.schemas import write_schemas

    for path in write_schemas(Path(args.directory)):
        print(f"wrote {path}")
    return 0


def _config(settings: Settings, args: argparse.Namespace) -> int:
    for name, value in settings.as_environment().items():
        print(f"{name}={value}")
    return 0


def _dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from campaign_manager.messaging.dlq import replay_dead_letters
    from campaign_manager.messaging.kafka_clients import client_options

    topic = args.topic or settings.signals_dlq_topic
    bootstrap = settings.kafka_bootstrap_servers or f"127.0.0.1:{settings.embedded_kafka_port}"
    try:
        summary = asyncio.run(
            replay_dead_letters(
                bootstrap,
                topic,
                client_options=client_options(settings),
                dry_run=args.dry_run,
                limit=args.limit,
                error_types=args.error_type or (),
                idle_timeout_s=args.idle_timeout,
            )
        )
    except LookupError as error:
        print(error, file=sys.stderr)
        return 1
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {summary.replayed} of {summary.read} dead letters on {topic}"
        f" (skipped: {summary.skipped_filtered} by --error-type, {summary.skipped_no_origin} without origin)"
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _load_settings() -> Settings | None:
    try:
        return Settings()
    except ValidationError as error:
        print("invalid configuration:", file=sys.stderr)
        for problem in error.errors(include_url=False):
            where = ".".join(str(part) for part in problem["loc"]).upper()
            message = problem["msg"].removeprefix("Value error, ")
            print(f"  {where}: {message}" if where else f"  {message}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="campaign-manager", description="Wyckoff campaign lifecycle service.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="migrate, then run the worker and the HTTP API").set_defaults(handler=_run)
    commands.add_parser("migrate", help="apply database migrations").set_defaults(handler=_migrate)
    commands.add_parser("demo", help="publish the AAPL example to a running service").set_defaults(handler=_demo)
    rebuild = commands.add_parser(
        "rebuild",
        help="replay every campaign from its positions' fills and exits and report each stored figure that differs "
        "(exit 1 if any); changes nothing",
    )
    rebuild.add_argument("--page-size", type=_positive_int, help="campaigns read per query (default: 500)")
    rebuild.set_defaults(handler=_rebuild)
    schemas = commands.add_parser(
        "schemas", help="write the JSON Schemas of the wire contracts and the AsyncAPI and OpenAPI documents"
    )
    schemas.add_argument("--directory", default="schemas")
    schemas.set_defaults(handler=_schemas)
    commands.add_parser(
        "config", help="print the effective configuration, one NAME=value a line, secrets masked (empty: unset)"
    ).set_defaults(handler=_config)
    dlq = commands.add_parser("dlq", help="dead-letter topic tools").add_subparsers(dest="dlq_command", required=True)
    replay = dlq.add_parser("replay", help="publish dead letters again to the topic they came from (x-original-topic)")
    replay.add_argument("--topic", help="dead-letter topic to read (default: <SIGNALS_TOPIC>.dlq)")
    replay.add_argument("--dry-run", action="store_true", help="print what would be replayed, publish nothing")
    replay.add_argument("--limit", type=_positive_int, help="replay at most this many records")
    replay.add_argument(
        "--error-type",
        action="append",
        choices=["DecodeError", "ValidationError", "EmptyMessage", "ProcessingError"],
        help="replay only dead letters of this x-dlq-error-type (repeatable)",
    )
    replay.add_argument(
        "--idle-timeout",
        type=float,
        default=5.0,
        help="seconds without a record after which reading stops if the topic's end is not known",
    )
    replay.set_defaults(handler=_dlq_replay)
    args = parser.parse_args(argv)

    settings = _load_settings()
    if settings is None:
        return 2
    configure_logging(settings.log_format, settings.log_level)
    return args.handler(settings, args)


if __name__ == "__main__":
    sys.exit(main())
