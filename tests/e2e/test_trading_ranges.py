"""Trading-range events through a running worker: a broken range invalidates its campaigns and refuses later
signals; range events that are not valid messages are dead-lettered and never stop the partition."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer

from campaign_manager.examples import range_event, trade_signal, trading_range
from tests.e2e.conftest import Deployment, events_of, get_json, publish, publish_signals, read_topic
from tests.malformed import malformed_range_events

pytestmark = pytest.mark.e2e


def range_record(event: dict[str, Any]) -> tuple[bytes, bytes]:
    """Keyed by the range id, like the range's signals."""
    return event["trading_range"]["id"].encode(), json.dumps(event).encode()


def caused_by(message_id: str, event_type: str) -> Any:
    """`until` for read_topic: an event of this type caused by this message has arrived."""
    return lambda records: any(
        e["causation_id"] == message_id and e["event_type"] == event_type for e in events_of(records)
    )


async def test_a_broken_range_invalidates_its_campaign_and_refuses_later_signals(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    worker = start_worker()
    range_, portfolio = trading_range(), f"pf-{uuid4().hex[:8]}"
    spring = trade_signal(range_, portfolio_id=portfolio)
    await publish_signals(producer, deployment.signals_topic, [spring])
    opened = await read_topic(
        deployment.bootstrap_servers, deployment.events_topic, until=caused_by(spring["id"], "CampaignCreated")
    )
    campaign_id = events_of(opened)[0]["campaign"]["id"]

    # The range detector reports the range broken.
    broken = range_event(range_, "RANGE_INVALIDATED", reason="Close below Creek", correlation_id="detector-9")
    await publish(producer, deployment.trading_ranges_topic, [range_record(broken)])

    # The campaign is invalidated, announced as caused by the range event...
    records = await read_topic(
        deployment.bootstrap_servers,
        deployment.events_topic,
        until=caused_by(broken["event_id"], "CampaignStatusChanged"),
    )
    announced = [e for e in events_of(records) if e["causation_id"] == broken["event_id"]]
    assert [(e["event_type"], e["campaign_version"]) for e in announced] == [
        ("CampaignInvalidated", 2),
        ("CampaignStatusChanged", 2),
    ]
    assert {r.key.decode() for r in records if json.loads(r.value)["causation_id"] == broken["event_id"]} == {
        campaign_id
    }
    body = await get_json(f"{worker.base_url}/api/v1/campaigns/{campaign_id}")
    assert (body["status"], body["invalidation_reason"]) == ("INVALIDATED", "Close below Creek")

    # ...and a later signal in that range is rejected with the reason.
    late = trade_signal(range_, pattern_type="LPS", phase="D", position_size="100", portfolio_id=portfolio)
    await publish_signals(producer, deployment.signals_topic, [late])
    records = await read_topic(
        deployment.bootstrap_servers, deployment.events_topic, until=caused_by(late["id"], "SignalRejected")
    )
    (rejection,) = [e for e in events_of(records) if e["causation_id"] == late["id"]]
    assert rejection["details"]["reason"] == "Trading range invalidated: Close below Creek"


async def test_twenty_kinds_of_malformed_range_events_are_dead_lettered_and_the_worker_keeps_going(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    start_worker()
    range_ = trading_range()
    spring = trade_signal(range_, portfolio_id=f"pf-{uuid4().hex[:8]}")
    await publish_signals(producer, deployment.signals_topic, [spring])
    await read_topic(
        deployment.bootstrap_servers, deployment.events_topic, until=caused_by(spring["id"], "CampaignCreated")
    )
    malformed = malformed_range_events()
    assert len(malformed) == 20

    # All on one partition, then a valid invalidation behind them: a poison message must not block what follows.
    key = range_["id"].encode()
    broken = range_event(range_, "RANGE_INVALIDATED", reason="Close below Creek")
    await publish(
        producer,
        deployment.trading_ranges_topic,
        [(key, bad.value) for bad in malformed] + [range_record(broken)],
    )

    # Every malformed message lands in the DLQ, byte for byte, with a specific reason.
    dead = await read_topic(
        deployment.bootstrap_servers, f"{deployment.trading_ranges_topic}.dlq", until=lambda r: len(r) >= 20
    )
    assert len(dead) == 20
    ordered = sorted(dead, key=lambda r: int(dict(r.headers)["x-original-offset"]))
    for record, bad in zip(ordered, malformed, strict=True):
        headers = {name: raw.decode() for name, raw in record.headers}
        assert headers["x-original-topic"] == deployment.trading_ranges_topic, bad.kind
        assert headers["x-dlq-error-type"] == bad.error_type, (bad.kind, headers["x-dlq-error-type"])
        assert bad.reason in headers["x-dlq-reason"], (bad.kind, headers["x-dlq-reason"])
        assert record.value == (bad.value or b"") or (bad.value is None and record.value in (None, b"")), bad.kind
        assert record.key == key

    # ...and the valid event behind them is applied.
    records = await read_topic(
        deployment.bootstrap_servers,
        deployment.events_topic,
        until=caused_by(broken["event_id"], "CampaignInvalidated"),
    )
    assert any(e["causation_id"] == broken["event_id"] for e in events_of(records))
