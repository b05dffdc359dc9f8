"""The one place that builds the service from settings: servers, database, broker, subscriber, relay, HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber.usecase import LogicSubscriber
from pydantic import BaseModel

from campaign_manager.contracts import (
    MarketPriceMessage,
    PositionEventMessage,
    TradeSignalMessage,
    TradingRangeEventMessage,
)
from campaign_manager.http.app import create_app
from campaign_manager.messaging.consumer import register_batch_subscriber
from campaign_manager.messaging.kafka_clients import client_options, kafka_security
from campaign_manager.messaging.parsing import parse_record
from campaign_manager.messaging.price_parsing import parse_price_record
from campaign_manager.messaging.relay import BatchPublisher, OutboxRelay
from campaign_manager.messaging.signal_parsing import parse_signal_record
from campaign_manager.messaging.topics import ensure_topics
from campaign_manager.metrics import Metrics, partition_lags
from campaign_manager.persistence.migrate import upgrade_to_head
from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import consumer_offsets
from campaign_manager.service.batches import ApplyBatch, BatchResult, ParsedRecord
from campaign_manager.service.positions import PositionPolicy, apply_position_event_batch
from campaign_manager.service.prices import PricePolicy, apply_price_batch
from campaign_manager.service.processor import BatchProcessor
from campaign_manager.service.ranges import RangePolicy, apply_range_batch
from campaign_manager.service.records import ConsumedRecord
from campaign_manager.service.signals import SignalPolicy, apply_signal_batch
from campaign_manager.settings import Settings

log = structlog.get_logger(__name__)

RELAY_FLUSH_TIMEOUT_S = 10.0  # on shutdown, publish what is committed; after this the next leader does it
# A batch keeps a few GC-tracked objects per record alive until it commits (5,000 ticks: ~20,000), all freed
# together at its end. At the default threshold (700) the cyclic collector ran dozens of times per batch over
# them and over everything start-up created: 30% of a tick's cost, measured. Above a batch's worth, it rarely runs.
GC_THRESHOLD = (50_000, 20, 20)


@dataclass(frozen=True)
class Servers:
    database_url: str
    kafka_bootstrap_servers: str
    broker_starts_empty: bool = False  # the embedded broker: memory only, every start is a new, empty log


@contextlib.contextmanager
def servers_for(settings: Settings) -> Any:
    """The configured servers, or embedded ones started (and stopped afterwards) for those left unset."""
    with contextlib.ExitStack() as stack:
        database_url = settings.database_url
        if settings.uses_embedded_database:
            from campaign_manager.embedded import start_embedded_postgres

            embedded_pg = start_embedded_postgres(settings.data_dir / "postgres")
            stack.callback(embedded_pg.stop)
            database_url = embedded_pg.url
            log.info("embedded_postgres_started", data_dir=str(settings.data_dir / "postgres"))
        bootstrap = settings.kafka_bootstrap_servers
        if settings.uses_embedded_kafka:
            from campaign_manager.embedded import start_embedded_kafka

            embedded_kafka = start_embedded_kafka(settings.embedded_kafka_port)
            stack.callback(embedded_kafka.stop)
            bootstrap = embedded_kafka.bootstrap_servers
        yield Servers(database_url, bootstrap, broker_starts_empty=settings.uses_embedded_kafka)


def build_broker(settings: Settings, bootstrap_servers: str, middlewares: Sequence[Any] = ()) -> KafkaBroker:
    return KafkaBroker(
        bootstrap_servers,
        middlewares=middlewares,
        client_id=settings.kafka_client_id,
        security=kafka_security(settings),
        graceful_timeout=15.0,
        # Handlers take the decoded batch as their one argument. With FastDepends, every batch also paid for
        # resolving an injected `Context` in a thread-pool hop and a task group: ~1.7% of the worker at 1,000/s.
        apply_types=False,
        # Not "faststream": FastStream gives that logger its own handler and stops it propagating. A logger of
        # ours reaches the root handler, so FastStream's lines come out as JSON at our level.
        logger=logging.getLogger("campaign_manager.faststream"),
    )


@dataclass(frozen=True)
class ConsumedTopic:
    """A topic the worker consumes: its contract, the handler that applies a batch of it, and how it is named."""

    name: str
    contract: type[BaseModel]
    apply: ApplyBatch
    record_name: str  # for the log: `signal` -> `signal_processed` lines
    title: str
    description: str
    # How a record becomes a message; None: `parse_record` against `contract`.
    parse: Callable[[ConsumedRecord], ParsedRecord] | None = None
    max_records: int | None = None  # records per batch; None: BATCH_MAX_RECORDS
    fetch_max_wait_ms: int | None = None  # None: KAFKA_FETCH_MAX_WAIT_MS


def consumed_topics(settings: Settings) -> list[ConsumedTopic]:
    signal_policy = SignalPolicy(
        consumer_group=settings.consumer_group_of(settings.signals_topic),
        events_topic=settings.events_topic,
        dlq_topic=settings.signals_dlq_topic,
        default_portfolio_value=settings.portfolio_value,
    )
    return [
        ConsumedTopic(
            settings.signals_topic,
            TradeSignalMessage,
            partial(apply_signal_batch, policy=signal_policy),
            "signal",
            title="on_trade_signals",
            description="Trade signals keyed by trading range id; each opens or joins a campaign.",
            parse=parse_signal_record,
        ),
        ConsumedTopic(
            settings.position_events_topic,
            PositionEventMessage,
            partial(
                apply_position_event_batch,
                policy=PositionPolicy(
                    consumer_group=settings.consumer_group_of(settings.position_events_topic),
                    events_topic=settings.events_topic,
                    dlq_topic=settings.dlq_topic(settings.position_events_topic),
                ),
            ),
            "position_event",
            title="on_position_events",
            description="Fills and exits of positions keyed by campaign UUID; each fills, sells or stops a position.",
            fetch_max_wait_ms=settings.kafka_quiet_fetch_max_wait_ms,
        ),
        ConsumedTopic(
            settings.trading_ranges_topic,
            TradingRangeEventMessage,
            partial(
                apply_range_batch,
                policy=RangePolicy(
                    consumer_group=settings.consumer_group_of(settings.trading_ranges_topic),
                    events_topic=settings.events_topic,
                    dlq_topic=settings.dlq_topic(settings.trading_ranges_topic),
                ),
            ),
            "range_event",
            title="on_trading_ranges",
            description="Trading range events keyed by trading range id: new levels, or the range broke "
            "(its open campaigns are invalidated).",
            fetch_max_wait_ms=settings.kafka_quiet_fetch_max_wait_ms,
        ),
        ConsumedTopic(
            settings.market_prices_topic,
            MarketPriceMessage,
            partial(
                apply_price_batch,
                policy=PricePolicy(
                    consumer_group=settings.consumer_group_of(settings.market_prices_topic),
                    events_topic=settings.events_topic,
                    dlq_topic=settings.dlq_topic(settings.market_prices_topic),
                    mark_to_market_interval=timedelta(seconds=settings.mark_to_market_interval_s),
                ),
            ),
            "price",
            title="on_market_prices",
            description="Last traded prices keyed by symbol: a price at or below a campaign's stop invalidates it "
            "at once; open positions are marked to market at most once per MARK_TO_MARKET_INTERVAL_S.",
            parse=parse_price_record,
            # Ticks come by the tens of thousands a second and a batch coalesces them per symbol: large batches.
            max_records=settings.prices_batch_max_records,
        ),
    ]


def register_consumers(
    broker: KafkaBroker,
    settings: Settings,
    database: Database,
    on_committed: Callable[[str, BatchResult], None] = lambda topic, result: None,
) -> dict[str, LogicSubscriber]:
    """One batch subscriber per consumed topic, all in the service's consumer group."""
    subscribers = {}
    for topic in consumed_topics(settings):
        processor = BatchProcessor(database, topic.apply, on_committed, record_name=topic.record_name)
        subscribers[topic.name] = register_batch_subscriber(
            broker,
            settings,
            database,
            topic.name,
            topic.parse or partial(parse_record, contract=topic.contract),
            processor,
            title=topic.title,
            description=topic.description,
            max_records=topic.max_records,
            fetch_max_wait_ms=topic.fetch_max_wait_ms,
        )
    return subscribers


@dataclass
class Worker:
    settings: Settings
    database: Database
    broker: KafkaBroker
    producer: AIOKafkaProducer
    relay: OutboxRelay
    subscribers: dict[str, LogicSubscriber]
    http_app: FastAPI
    metrics: Metrics

    @classmethod
    def build(cls, settings: Settings, servers: Servers) -> Worker:
        database = Database.connect(servers.database_url, settings.db_pool_size, settings.db_max_overflow)
        metrics = Metrics(settings.consumed_topics)
        broker = build_broker(settings, servers.kafka_bootstrap_servers, middlewares=[metrics.middleware()])

        # The relay sends raw, already-serialised bytes: a plain aiokafka producer does that with less per-message
        # work than the broker's publish path (measured: 15 vs 25 microseconds a message).
        producer = AIOKafkaProducer(
            bootstrap_servers=servers.kafka_bootstrap_servers,
            client_id=f"{settings.kafka_client_id}-relay",
            acks="all",
            enable_idempotence=settings.kafka_enable_idempotence,
            linger_ms=1,  # a millisecond of batching; the latency budget is 25 ms end to end
            max_batch_size=256 * 1024,
            compression_type=None if settings.kafka_compression_type == "none" else settings.kafka_compression_type,
            **client_options(settings),
        )

        relay = OutboxRelay(
            database,
            BatchPublisher(producer).publish,
            batch_size=settings.relay_batch_size,
            poll_interval_s=settings.relay_poll_interval_ms / 1000,
        )

        def on_committed(topic: str, result: BatchResult) -> None:
            relay.wake()
            metrics.record_committed(topic, result)

        subscribers = register_consumers(broker, settings, database, on_committed)

        async def refresh_consumer_lag() -> None:
            lags = {}
            for subscriber in subscribers.values():
                lags.update(await partition_lags(subscriber.consumer))
            metrics.set_consumer_lag(lags)

        metrics.before_scrape(refresh_consumer_lag)

        def consumer_check() -> str | None:
            for topic, subscriber in subscribers.items():
                consumer = subscriber.consumer
                if consumer is None:
                    return f"{topic}: not started"
                if not consumer.assignment():
                    return f"{topic}: no partitions assigned"
            return None

        http_app = create_app(
            database,
            readiness_checks={"consumer": consumer_check},
            metrics=metrics,
            max_outbox_age_s=settings.ready_max_outbox_age_s,
            api_token=settings.api_token,
            events_topic=settings.events_topic,
        )
        return cls(settings, database, broker, producer, relay, subscribers, http_app, metrics)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Worker]:
        """Consumer and relay running; on exit, stop fetching, finish the batch in flight, flush the outbox."""
        await self.producer.start()
        await self.broker.start()
        relay_task = asyncio.create_task(self.relay.run(), name="outbox-relay")
        try:
            yield self
        finally:
            await self.broker.stop()
            self.relay.stop()
            try:
                await asyncio.wait_for(relay_task, RELAY_FLUSH_TIMEOUT_S)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("outbox_relay_flush_timed_out")
            await self.producer.stop()
            await self.database.dispose()


async def forget_consumed_offsets(database_url: str, group_id: str) -> None:
    """Offsets stored for a broker that no longer exists would skip the new broker's first records.
    Signals applied before are still recognised by their id, so nothing is applied twice."""
    database = Database.connect(database_url)
    try:
        async with database.engine.begin() as connection:
            result = await connection.execute(
                consumer_offsets.delete().where(consumer_offsets.c.consumer_group == group_id)
            )
        if result.rowcount:
            log.info("stored_offsets_reset_for_new_embedded_broker", partitions=result.rowcount)
    finally:
        await database.dispose()


async def prepare(settings: Settings, servers: Servers) -> None:
    """Schema and topics, before anything consumes."""
    await upgrade_to_head(servers.database_url)
    if servers.broker_starts_empty:
        for topic in settings.consumed_topics:
            await forget_consumed_offsets(servers.database_url, settings.consumer_group_of(topic))
    if settings.create_topics:
        await ensure_topics(
            servers.kafka_bootstrap_servers,
            {
                topic: settings.topic_partitions
                for consumed in settings.consumed_topics
                for topic in (consumed, settings.dlq_topic(consumed))
            }
            | {settings.events_topic: settings.topic_partitions},
            settings.topic_replication_factor,
            client_options=client_options(settings),
        )


async def serve(settings: Settings, servers: Servers) -> None:
    # Our own SIGTERM/SIGINT handling from the first moment: a stop asked for during start-up is honoured as
    # soon as start-up ends, and always through the graceful path below.
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)

    await prepare(settings, servers)
    worker = Worker.build(settings, servers)
    # What start-up built lives as long as the process: keep it out of every later collection.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    async with worker.running():
        server = uvicorn.Server(
            uvicorn.Config(
                worker.http_app,
                host=settings.http_host,
                port=settings.http_port,
                log_config=None,
                lifespan="off",
            )
        )
        http_task = asyncio.create_task(server.serve(), name="http")
        log.info(
            "campaign_manager_started",
            http=f"http://{settings.http_host}:{settings.http_port}",
            kafka=servers.kafka_bootstrap_servers,
            signals_topic=settings.signals_topic,
            events_topic=settings.events_topic,
            group_id=settings.kafka_group_id,
        )
        if not (settings.api_token and settings.api_token.get_secret_value()):
            log.warning("write_endpoints_disabled", reason="API_TOKEN is not set")
        stop_task = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        log.info("campaign_manager_stopping")
        server.should_exit = True
        stop_task.cancel()
        await http_task
    log.info("campaign_manager_stopped")
