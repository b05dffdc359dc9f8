"""Market prices through a running worker: a tick through a stop invalidates the campaign promptly; bad ticks are
dead-lettered with a reason while the partition moves on."""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from campaign_manager.examples import trade_signal, trading_range
from tests.e2e.conftest import Deployment, get_json, publish_signals, read_topic
from tests.malformed import malformed_prices, price_tick

pytestmark = pytest.mark.e2e

PROMPT_S = 3.0  # generous for a shared test machine; `make bench` measures the real figure


class EventReader:
    """Reads the events topic from the start, joined before anything is sent, so waits measure the service."""

    def __init__(self, deployment: Deployment) -> None:
        self.consumer = AIOKafkaConsumer(
            deployment.events_topic,
            bootstrap_servers=deployment.bootstrap_servers,
            group_id=f"test-reader-{uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
        )
        self.events: list[dict[str, Any]] = []

    async def __aenter__(self) -> EventReader:
        await self.consumer.start()
        deadline = time.monotonic() + 30
        while not self.consumer.assignment() and time.monotonic() < deadline:
            await self.consumer.getmany(timeout_ms=100)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def wait_for(self, event_type: str, campaign_id: str | None = None, timeout_s: float = 60) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.events:
                if event["event_type"] == event_type and campaign_id in (None, event["campaign"]["id"]):
                    return event
            batches = await self.consumer.getmany(timeout_ms=50)
            self.events += [json.loads(r.value) for records in batches.values() for r in records]
        raise AssertionError(f"no {event_type} within {timeout_s}s; saw {[e['event_type'] for e in self.events]}")


async def test_a_tick_through_the_spring_stop_invalidates_the_campaign_promptly(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    worker = start_worker()
    symbol = f"E{uuid4().hex[:8].upper()}"
    async with EventReader(deployment) as events:
        # A Spring at 148.50, stop 146.50, 1,000 shares, opens a campaign.
        spring = trade_signal(trading_range(symbol=symbol), portfolio_id=f"pf-{uuid4().hex[:8]}")
        await publish_signals(producer, deployment.signals_topic, [spring])
        campaign_id = (await events.wait_for("CampaignCreated"))["campaign"]["id"]

        # The market trades above the stop, then through it.
        await producer.send_and_wait(deployment.market_prices_topic, price_tick(symbol, "149.10"), key=symbol.encode())
        sent = time.monotonic()
        await producer.send_and_wait(deployment.market_prices_topic, price_tick(symbol, "146.40"), key=symbol.encode())

        # The campaign is invalidated, and the event says so, promptly.
        invalidated = await events.wait_for("CampaignInvalidated", campaign_id)
        assert time.monotonic() - sent < PROMPT_S
    # (146.40 - 148.50) x 1,000 = -2,100.00
    assert invalidated["details"] == {"reason": "Spring low break", "price": "146.40", "unrealized_pnl": "-2100.00"}
    assert invalidated["campaign"]["status"] == "INVALIDATED"
    body = await get_json(f"{worker.base_url}/api/v1/campaigns/{campaign_id}")
    assert (body["status"], body["invalidation_reason"]) == ("INVALIDATED", "Spring low break")


async def test_twenty_kinds_of_malformed_prices_are_dead_lettered_with_a_reason_and_the_worker_keeps_going(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    start_worker()
    symbol = f"E{uuid4().hex[:8].upper()}"
    key = symbol.encode()  # all on one partition: a bad tick must not block what follows
    malformed = malformed_prices(symbol)
    assert len(malformed) == 20
    async with EventReader(deployment) as events:
        spring = trade_signal(trading_range(symbol=symbol), portfolio_id=f"pf-{uuid4().hex[:8]}")
        await publish_signals(producer, deployment.signals_topic, [spring])
        campaign_id = (await events.wait_for("CampaignCreated"))["campaign"]["id"]

        for bad in malformed:
            await producer.send(deployment.market_prices_topic, bad.value, key=key)
        await producer.send_and_wait(deployment.market_prices_topic, price_tick(symbol, "146.00"), key=key)

        # The good tick behind the bad ones is applied.
        await events.wait_for("CampaignInvalidated", campaign_id)

    # Every bad tick lands in the DLQ, byte for byte, with a reason naming what is wrong.
    dlq = f"{deployment.market_prices_topic}.dlq"
    dead: list[ConsumerRecord] = await read_topic(deployment.bootstrap_servers, dlq, until=lambda r: len(r) >= 20)
    assert len(dead) == 20
    by_offset = sorted(dead, key=lambda r: int(dict(r.headers)["x-original-offset"]))
    for record, bad in zip(by_offset, malformed, strict=True):
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["x-original-topic"] == deployment.market_prices_topic, bad.kind
        assert headers["x-dlq-error-type"] == bad.error_type, (bad.kind, headers["x-dlq-error-type"])
        assert bad.reason in headers["x-dlq-reason"], (bad.kind, headers["x-dlq-reason"])
        assert record.value == (bad.value or b""), bad.kind
        assert record.key == key, bad.kind
