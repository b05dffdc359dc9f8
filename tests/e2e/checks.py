"""What an interrupted run must still get right, checked against the database and the events topic."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

from sqlalchemy import text

from campaign_manager.examples import trade_signal, trading_range
from campaign_manager.persistence.store import Database
from tests.e2e.conftest import Deployment, read_topic


def signal_mix(count: int, portfolios: int = 20) -> list[dict]:
    """Spring, SOS, LPS per range over `portfolios` portfolios: small positions, so every one is accepted (as long
    as each portfolio gets at most ~600 signals: 10% heat is 200 ranges of 50.00 risk each)."""
    signals: list[dict] = []
    while len(signals) < count:
        range_ = trading_range(symbol=f"K{len(signals) % 97}")
        portfolio = f"crash-{len(signals) % portfolios}"
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


async def assert_each_signal_applied_once_and_every_event_published(
    database: Database, deployment: Deployment, signals: list[dict]
) -> None:
    """One processed record and one position per signal (none rejected), campaign versions without gaps, each event
    once in the outbox and at least once on the topic."""
    total = len(signals)
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
            "CREATED": total // 3 + (total % 3 > 0),
            "ADDED": total - total // 3 - (total % 3 > 0),
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
        assert positions == total

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


async def at_least_processed(database: Database, topic: str, count: int) -> bool:
    return await count_processed(database, topic) >= count
