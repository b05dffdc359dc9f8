"""The service as it runs: a `campaign-manager run` process, a Kafka-protocol broker and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer

from campaign_manager.examples import aapl_campaign_signals, trade_signal, trading_range
from tests.e2e.conftest import Deployment, events_of, get_json, publish_signals, read_topic
from tests.malformed import malformed_signals

pytestmark = pytest.mark.e2e


async def test_spring_sos_lps_become_campaign_events_and_one_campaign_in_the_api(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    worker = start_worker()
    portfolio = f"pf-{uuid4().hex[:8]}"
    signals = aapl_campaign_signals(portfolio_id=portfolio)

    # The upstream generator publishes Spring, SOS and LPS of one range.
    await publish_signals(producer, deployment.signals_topic, signals)

    # Downstream sees the campaign built step by step, keyed by the campaign's UUID.
    records = await read_topic(
        deployment.bootstrap_servers, deployment.events_topic, until=lambda records: len(records) >= 4
    )
    events = events_of(records)
    assert [(e["event_type"], e["campaign_version"]) for e in events] == [
        ("CampaignCreated", 1),
        ("PositionAdded", 2),
        ("CampaignStatusChanged", 2),
        ("PositionAdded", 3),
    ]
    campaign_uuid = events[0]["campaign"]["id"]
    assert {r.key.decode() for r in records} == {campaign_uuid}
    assert [e["causation_id"] for e in events] == [
        signals[0]["id"],
        signals[1]["id"],
        signals[1]["id"],
        signals[2]["id"],
    ]
    # Each record is also a CloudEvents 1.0 event in Kafka binary mode.
    headers = dict(records[0].headers)
    assert headers["event-type"] == b"CampaignCreated"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == headers["event-id"] == events[0]["event_id"].encode()
    assert headers["ce_type"] == b"campaign-manager.CampaignCreated"
    assert headers["ce_source"] == b"campaign-manager"
    assert headers["ce_subject"] == campaign_uuid.encode()
    assert datetime.fromisoformat(headers["ce_time"].decode()) == datetime.fromisoformat(events[0]["occurred_at"])

    # The API shows the same campaign with its three positions.
    body = await get_json(f"{worker.base_url}/api/v1/campaigns/{campaign_uuid}")
    assert body["status"] == "MARKUP"
    assert body["total_allocation"] == "5.0000"
    assert len(body["positions"]) == 3

    # SIGTERM: the worker finishes what it holds and exits cleanly.
    assert worker.stop() == 0


async def test_twenty_kinds_of_malformed_messages_are_dead_lettered_with_a_reason_and_the_partition_moves_on(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    start_worker()
    key = str(uuid4()).encode()  # all on one partition: a poison message must not block what follows
    malformed = malformed_signals()
    for bad in malformed:
        await producer.send(deployment.signals_topic, bad.value, key=key, headers=list(bad.headers))
    good = trade_signal(trading_range(), portfolio_id=f"pf-{uuid4().hex[:8]}")
    await producer.send_and_wait(deployment.signals_topic, json.dumps(good).encode(), key=key)
    assert len(malformed) == 20

    # Every malformed message lands in the DLQ, byte for byte, with a specific reason.
    dead = await read_topic(deployment.bootstrap_servers, deployment.dlq_topic, until=lambda r: len(r) >= 20)
    assert len(dead) == 20
    ordered = sorted(dead, key=lambda r: int(dict(r.headers)["x-original-offset"]))
    for record, bad in zip(ordered, malformed, strict=True):
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["x-original-topic"] == deployment.signals_topic, bad.kind
        assert headers["x-dlq-error-type"] == bad.error_type, (bad.kind, headers["x-dlq-error-type"])
        assert bad.reason in headers["x-dlq-reason"], (bad.kind, headers["x-dlq-reason"])

    # ...and the valid signal behind them is applied.
    events = await read_topic(
        deployment.bootstrap_servers,
        deployment.events_topic,
        until=lambda r: any(json.loads(x.value)["causation_id"] == good["id"] for x in r),
    )
    assert any(json.loads(x.value)["causation_id"] == good["id"] for x in events)


async def test_a_signal_published_twice_yields_one_position(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    worker = start_worker()
    spring = trade_signal(trading_range(), portfolio_id=f"pf-{uuid4().hex[:8]}")
    marker = trade_signal(trading_range(), portfolio_id=f"pf-{uuid4().hex[:8]}")

    await publish_signals(producer, deployment.signals_topic, [spring, spring, marker])

    records = await read_topic(
        deployment.bootstrap_servers,
        deployment.events_topic,
        until=lambda r: {json.loads(x.value)["causation_id"] for x in r} >= {spring["id"], marker["id"]},
    )
    about_spring = [e for e in events_of(records) if e["causation_id"] == spring["id"]]
    assert [e["event_type"] for e in about_spring] == ["CampaignCreated"]
    body = await get_json(f"{worker.base_url}/api/v1/campaigns/{about_spring[0]['campaign']['id']}")
    assert len(body["positions"]) == 1


async def test_two_workers_racing_the_first_signals_of_50_ranges_open_one_campaign_each(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    first, second = start_worker("first"), start_worker("second")
    portfolio = f"pf-{uuid4().hex[:8]}"
    ranges = [trading_range(symbol=f"RACE{i}") for i in range(50)]
    # Two first signals per range under random keys, so they land on different partitions and are applied by
    # both workers at once. Each risks 2.00 x 50 = 100.00: all 100 make exactly the portfolio's 10% heat limit.
    futures = []
    for range_ in ranges:
        for pattern in ("SPRING", "LPS"):
            signal_ = trade_signal(range_, pattern_type=pattern, phase="D", position_size="50", portfolio_id=portfolio)
            futures.append(
                await producer.send(deployment.signals_topic, json.dumps(signal_).encode(), key=uuid4().bytes)
            )
    for future in futures:
        await future

    records = await read_topic(
        deployment.bootstrap_servers, deployment.events_topic, until=lambda r: len(r) >= 100, timeout_s=90
    )

    events = events_of(records)
    created = [e for e in events if e["event_type"] == "CampaignCreated"]
    added = [e for e in events if e["event_type"] == "PositionAdded"]
    assert len(created) == 50
    assert len(added) == 50
    assert {e["campaign"]["trading_range_id"] for e in created} == {r["id"] for r in ranges}
    for worker in (first, second):
        listing = await get_json(f"{worker.base_url}/api/v1/campaigns", params={"symbol": "RACE7"})
        assert sum(1 for c in listing["data"] if c["portfolio_id"] == portfolio) == 1
