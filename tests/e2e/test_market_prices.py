"""Market prices through a running worker: a tick through a stop invalidates the campaign promptly; bad ticks are
dead-lettered with a reason while the partition moves on."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from campaign_manager.examples import trade_signal, trading_range
from tests.e2e.conftest import Deployment, get_json, publish_signals, read_topic

pytestmark = pytest.mark.e2e

PROMPT_S = 3.0  # generous for a shared test machine; `make bench` measures the real figure


def tick(symbol: str, price: str, **changes: Any) -> bytes:
    return json.dumps({"symbol": symbol, "price": price, "time": datetime.now(UTC).isoformat(), **changes}).encode()


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
        await producer.send_and_wait(deployment.market_prices_topic, tick(symbol, "149.10"), key=symbol.encode())
        sent = time.monotonic()
        await producer.send_and_wait(deployment.market_prices_topic, tick(symbol, "146.40"), key=symbol.encode())

        # The campaign is invalidated, and the event says so, promptly.
        invalidated = await events.wait_for("CampaignInvalidated", campaign_id)
        assert time.monotonic() - sent < PROMPT_S
    # (146.40 - 148.50) x 1,000 = -2,100.00
    assert invalidated["details"] == {"reason": "Spring low break", "price": "146.40", "unrealized_pnl": "-2100.00"}
    assert invalidated["campaign"]["status"] == "INVALIDATED"
    body = await get_json(f"{worker.base_url}/api/v1/campaigns/{campaign_id}")
    assert (body["status"], body["invalidation_reason"]) == ("INVALIDATED", "Spring low break")


def _malformed(symbol: str) -> list[tuple[str, bytes | None, str]]:
    """(kind, value, what its reason must name)."""
    return [
        ("not JSON", b"{not json", "not valid JSON"),
        ("not UTF-8", b"\xff\xfe\x00garbage", "UTF-8"),
        ("empty value", b"", "empty"),
        ("tombstone", None, "tombstone"),
        ("JSON array", b"[1, 2, 3]", "JSON object"),
        ("JSON number", b"42", "JSON object"),
        ("NaN literal", b'{"symbol": "X", "price": NaN}', "NaN"),
        ("empty object", b"{}", "symbol: Field required"),
        ("no price", json.dumps({"symbol": symbol, "time": "2024-10-15T14:30:00Z"}).encode(), "price: Field required"),
        ("no time", json.dumps({"symbol": symbol, "price": "150"}).encode(), "time: Field required"),
        ("zero price", tick(symbol, "0"), "price: Input should be greater than 0"),
        ("negative price", tick(symbol, "-148.50"), "price: Input should be greater than 0"),
        ("price NaN", tick(symbol, "NaN"), "price: Input should be a finite number"),
        ("price text", tick(symbol, "a lot"), "price: Input should be a valid decimal"),
        ("price boolean", tick(symbol, True), "price: Decimal input should be an integer, float, string or Decimal"),
        ("9 decimals", tick(symbol, "148.123456789"), "price: Decimal input should have no more than 8 decimal"),
        ("naive time", tick(symbol, "150", time="2024-10-15T14:30:00"), "time: Input should have timezone info"),
        ("time text", tick(symbol, "150", time="yesterday"), "time: Input should be a valid datetime"),
        ("symbol too long", tick("S" * 21, "150"), "symbol: String should have at most 20 characters"),
        ("symbol with space", tick("AA PL", "150"), "symbol: String should match pattern"),
    ]


async def test_twenty_kinds_of_malformed_prices_are_dead_lettered_with_a_reason_and_the_worker_keeps_going(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    start_worker()
    symbol = f"E{uuid4().hex[:8].upper()}"
    key = symbol.encode()  # all on one partition: a bad tick must not block what follows
    malformed = _malformed(symbol)
    assert len(malformed) == 20
    async with EventReader(deployment) as events:
        spring = trade_signal(trading_range(symbol=symbol), portfolio_id=f"pf-{uuid4().hex[:8]}")
        await publish_signals(producer, deployment.signals_topic, [spring])
        campaign_id = (await events.wait_for("CampaignCreated"))["campaign"]["id"]

        for _, value, _ in malformed:
            await producer.send(deployment.market_prices_topic, value, key=key)
        await producer.send_and_wait(deployment.market_prices_topic, tick(symbol, "146.00"), key=key)

        # The good tick behind the bad ones is applied.
        await events.wait_for("CampaignInvalidated", campaign_id)

    # Every bad tick lands in the DLQ, byte for byte, with a reason naming what is wrong.
    dlq = f"{deployment.market_prices_topic}.dlq"
    dead: list[ConsumerRecord] = await read_topic(deployment.bootstrap_servers, dlq, until=lambda r: len(r) >= 20)
    assert len(dead) == 20
    by_offset = sorted(dead, key=lambda r: int(dict(r.headers)["x-original-offset"]))
    for record, (kind, value, named) in zip(by_offset, malformed, strict=True):
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["x-original-topic"] == deployment.market_prices_topic, kind
        assert headers["x-dlq-error-type"] in {"DecodeError", "ValidationError", "EmptyMessage"}, kind
        assert named in headers["x-dlq-reason"], (kind, headers["x-dlq-reason"])
        assert record.value == (value or b""), kind
        assert record.key == key, kind
