"""A campaign's whole life through a running worker: signals open it, the broker's fills and exits on
`position-events` complete it, the events reach `campaign-events`, and `campaign-manager rebuild` agrees with what
was stored. Position events that are not valid messages are dead-lettered and never stop the partition."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer

from campaign_manager.examples import aapl_campaign_signals, position_event
from tests.e2e.conftest import Deployment, events_of, get_json, publish, publish_signals, read_topic, run_command
from tests.malformed import malformed_position_events

pytestmark = pytest.mark.e2e


@pytest.fixture
def deployment(deployment: Deployment, empty_database_url: str) -> Deployment:
    """A database of the test's own: `rebuild` reads every campaign there is."""
    return dataclasses.replace(deployment, database_url=empty_database_url)


def position_record(event: dict[str, Any]) -> tuple[bytes, bytes]:
    """Keyed by campaign, so that one campaign's fills and exits stay in order."""
    return event["campaign_id"].encode(), json.dumps(event).encode()


async def open_campaign(deployment: Deployment, producer: AIOKafkaProducer) -> tuple[str, dict[str, str]]:
    """The story's Spring, SOS and LPS published; the campaign's UUID and its position ids by pattern, as the
    events announce them."""
    await publish_signals(producer, deployment.signals_topic, aapl_campaign_signals(portfolio_id=f"pf-{uuid4().hex}"))
    records = await read_topic(deployment.bootstrap_servers, deployment.events_topic, until=lambda r: len(r) >= 4)
    events = events_of(records)
    positions = {
        e["details"]["position"]["pattern_type"]: e["details"]["position"]["position_id"]
        for e in events
        if e["event_type"] in ("CampaignCreated", "PositionAdded")
    }
    return events[0]["campaign"]["id"], positions


async def test_fills_and_exits_complete_a_campaign_that_rebuild_then_finds_consistent(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    worker = start_worker()
    # Signals open the campaign: version 3, MARKUP.
    campaign_id, positions = await open_campaign(deployment, producer)
    spring, sos, lps = positions["SPRING"], positions["SOS"], positions["LPS"]

    # The broker fills the three positions and sells them: (152.40 - 148.40) x 400 + (153.00 - 148.40) x 600
    # + (154.25 - 150.25) x 1,000 + (153.90 - 150.90) x 1,000 = 1,600 + 2,760 + 4,000 + 3,000 = 11,360.00.
    fills_and_exits = [
        position_event(campaign_id, spring, "FILLED", price="148.40", shares="1000"),
        position_event(campaign_id, sos, "FILLED", price="150.25", shares="1000"),
        position_event(campaign_id, lps, "FILLED", price="150.90", shares="1000"),
        position_event(campaign_id, spring, "PARTIALLY_CLOSED", price="152.40", shares="400"),
        position_event(campaign_id, spring, "CLOSED", price="153.00"),
        position_event(campaign_id, sos, "CLOSED", price="154.25"),
        position_event(campaign_id, lps, "CLOSED", price="153.90"),
    ]
    await publish(producer, deployment.position_events_topic, [position_record(e) for e in fills_and_exits])

    # Downstream sees every step, one version each, keyed by the campaign, ending COMPLETED.
    records = await read_topic(deployment.bootstrap_servers, deployment.events_topic, until=lambda r: len(r) >= 13)
    events = events_of(records)[4:]
    assert [(e["event_type"], e["campaign_version"]) for e in events] == [
        ("PositionFilled", 4),
        ("PositionFilled", 5),
        ("PositionFilled", 6),
        ("PositionClosed", 7),
        ("PositionClosed", 8),
        ("PositionClosed", 9),
        ("PositionClosed", 10),
        ("CampaignCompleted", 10),
        ("CampaignStatusChanged", 10),
    ]
    assert {r.key.decode() for r in records} == {campaign_id}
    assert events[-2]["details"]["realized_pnl"] == "11360.00"
    assert dict(records[-1].headers)["event-type"] == b"CampaignStatusChanged"
    body = await get_json(f"{worker.base_url}/api/v1/campaigns/{campaign_id}")
    assert (body["status"], body["realized_pnl"], body["version"]) == ("COMPLETED", "11360.00", 10)

    # Replaying every position's fills and exits arrives at every figure the worker stored.
    exit_code, output = await run_command(deployment, "rebuild")
    assert output.splitlines()[-1] == (
        "1 campaign, 3 positions and 7 fills and exits replayed: every stored figure matches"
    ), output
    assert exit_code == 0

    assert worker.stop() == 0


async def test_twenty_kinds_of_malformed_position_events_are_dead_lettered_and_the_next_event_is_applied(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    start_worker()
    campaign_id, positions = await open_campaign(deployment, producer)
    malformed = malformed_position_events(campaign_id, positions["SPRING"])
    assert len(malformed) == 20
    fill = position_event(
        campaign_id, positions["SPRING"], "FILLED", price="148.50", shares="1000", occurred_at=datetime.now(UTC)
    )

    # All on the campaign's partition, the valid fill last: a poison message must not block what follows.
    key = campaign_id.encode()
    await publish(producer, deployment.position_events_topic, [(key, bad.value) for bad in malformed])
    await publish(producer, deployment.position_events_topic, [position_record(fill)])

    # Every malformed record lands in `position-events.dlq`, byte for byte, saying what was wrong with it.
    dlq_topic = f"{deployment.position_events_topic}.dlq"
    dead = await read_topic(deployment.bootstrap_servers, dlq_topic, until=lambda r: len(r) >= 20)
    assert len(dead) == 20
    by_offset = sorted(dead, key=lambda r: int(dict(r.headers)["x-original-offset"]))
    for record, bad in zip(by_offset, malformed, strict=True):
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["x-original-topic"] == deployment.position_events_topic, bad.kind
        assert (headers["x-dlq-error-type"], bad.reason in headers["x-dlq-reason"]) == (bad.error_type, True), (
            bad.kind,
            headers["x-dlq-reason"],
        )
        assert (record.key, record.value) == (key, bad.value or b""), bad.kind

    # ...and the valid fill behind them is applied.
    records = await read_topic(
        deployment.bootstrap_servers,
        deployment.events_topic,
        until=lambda r: any(json.loads(x.value)["causation_id"] == fill["event_id"] for x in r),
    )
    (filled,) = [e for e in events_of(records) if e["causation_id"] == fill["event_id"]]
    assert (filled["event_type"], filled["campaign_version"]) == ("PositionFilled", 4)
