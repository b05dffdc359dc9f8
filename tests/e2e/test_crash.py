"""kill -9 in the middle of a run: every signal applied exactly once, every event published at least once."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from campaign_manager.examples import trade_signal, trading_range
from campaign_manager.persistence.store import Database
from tests.e2e.conftest import Deployment, publish_signals, read_topic

pytestmark = pytest.mark.e2e

SIGNALS = 5000


def signal_mix(count: int) -> list[dict]:
    """Spring, SOS, LPS per range over 20 portfolios: small positions, so every one is accepted."""
    signals: list[dict] = []
    while len(signals) < count:
        range_ = trading_range(symbol=f"K{len(signals) % 97}")
        portfolio = f"crash-{len(signals) % 20}"
        for pattern, phase, entry, stop in (("SPRING", "C", "148.50", "146.50"), ("SOS", "D", "150.25", "148.75"),
                                            ("LPS", "D", "151.00", "149.50")):  # fmt: skip
            signals.append(
                trade_signal(range_, pattern_type=pattern, phase=phase, entry_price=entry, stop_loss=stop,
                             position_size="10", portfolio_id=portfolio)
            )  # fmt: skip
    return signals[:count]


async def count_processed(database: Database, topic: str) -> int:
    async with database.engine.connect() as connection:
        return (
            await connection.execute(
                text("SELECT count(*) FROM processed_signals WHERE source_topic = :topic"), {"topic": topic}
            )
        ).scalar_one()


async def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_kill_9_while_processing_5000_signals_applies_each_exactly_once(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer, database: Database
) -> None:
    signals = signal_mix(SIGNALS)
    await publish_signals(producer, deployment.signals_topic, signals)

    # The worker starts on the backlog and is killed without warning part-way through.
    victim = start_worker("victim")
    await wait_for(lambda: _at_least(database, deployment.signals_topic, 300), timeout_s=60, what="the first batches")
    victim.kill()
    applied_before_crash = await count_processed(database, deployment.signals_topic)
    assert applied_before_crash < SIGNALS, "the worker finished before the kill: the test proves nothing"
    print(f"killed with {applied_before_crash} of {SIGNALS} signals applied")

    # A new worker takes over and finishes the run.
    start_worker("successor")
    await wait_for(
        lambda: _at_least(database, deployment.signals_topic, SIGNALS), timeout_s=120, what="all signals applied"
    )

    async with database.engine.connect() as connection:
        # Exactly once: one processed record and at most one position per signal, none rejected.
        outcomes = dict(
            (
                await connection.execute(
                    text(
                        "SELECT outcome, count(*) FROM processed_signals WHERE source_topic = :topic GROUP BY outcome"
                    ),
                    {"topic": deployment.signals_topic},
                )
            ).all()
        )
        assert outcomes == {
            "CREATED": SIGNALS // 3 + (SIGNALS % 3 > 0),
            "ADDED": SIGNALS - SIGNALS // 3 - (SIGNALS % 3 > 0),
        }
        positions = (
            await connection.execute(
                text(
                    "SELECT count(*) FROM campaign_positions p JOIN processed_signals s USING (signal_id)"
                    " WHERE s.source_topic = :topic"
                ),
                {"topic": deployment.signals_topic},
            )
        ).scalar_one()
        assert positions == SIGNALS

        # Per campaign, the events' versions run 1..version with no gap.
        rows = (
            await connection.execute(
                text("SELECT event_id, aggregate_id, payload FROM outbox WHERE topic = :topic"),
                {"topic": deployment.events_topic},
            )
        ).all()
        versions = defaultdict(set)
        for row in rows:
            versions[row.aggregate_id].add(json.loads(row.payload)["campaign_version"])
        final_versions = dict(
            (
                await connection.execute(
                    text("SELECT id, version FROM campaigns WHERE id = ANY(:ids)"), {"ids": list(versions)}
                )
            ).all()
        )
        for campaign_id, seen in versions.items():
            assert seen == set(range(1, final_versions[campaign_id] + 1)), f"version gap in campaign {campaign_id}"
        event_ids = {str(row.event_id) for row in rows}
        assert len(event_ids) == len(rows)  # each event exactly once in the outbox

    # Every event reaches the topic at least once.
    published = await read_topic(
        deployment.bootstrap_servers,
        deployment.events_topic,
        until=lambda records: {json.loads(r.value)["event_id"] for r in records} >= event_ids,
        timeout_s=120,
    )
    assert {json.loads(r.value)["event_id"] for r in published} >= event_ids
    caused = {json.loads(r.value)["causation_id"] for r in published}
    assert caused >= {s["id"] for s in signals}


async def _at_least(database: Database, topic: str, count: int) -> bool:
    return await count_processed(database, topic) >= count
