"""A flood of malformed records, twenty kinds on each of the four consumed topics, with valid messages interleaved:
every malformed record is dead-lettered to `<topic>.dlq` byte for byte with a specific reason, every valid message
is applied, and the worker process never restarts."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import uuid4

import pytest
from tests.chaos.conftest import ChaosResult, make_deployment, sizes
from tests.chaos.harness import (
    Tally,
    Watch,
    assert_every_record_consumed,
    count_published,
    dead_letters,
    dead_letters_written,
    is_ready,
    messages_applied,
    processed_signals,
    reaches,
    scalar,
    seeded_random,
    send_all,
    spring_positions_by_symbol,
)
from tests.e2e.conftest import publish_signals
from tests.malformed import (
    Malformed,
    malformed_position_events,
    malformed_prices,
    malformed_range_events,
    malformed_signals,
    price_tick,
)

from campaign_manager.examples import encode, position_event, range_event, trade_signal, trading_range

SCENARIO = "malformed flood"
INVALIDATED = (
    "SELECT count(*) FROM campaigns WHERE symbol = ANY(:symbols) AND status = 'INVALIDATED'"
    " AND invalidation_reason = :reason"
)


@dataclass(frozen=True)
class Flood:
    malformed: int  # per consumed topic
    valid: int  # per consumed topic, interleaved at random

    def __str__(self) -> str:
        return f"{self.malformed} malformed (20 kinds) + {self.valid} valid on each of 4 topics, 1 worker"


@pytest.mark.parametrize("size", sizes(Flood(40, 5), Flood(200, 25), smoke_timeout_s=180, full_timeout_s=400))
async def test_malformed_records_on_every_topic_are_dead_lettered_with_a_reason_and_valid_ones_still_applied(
    size: Flood, chaos_result: ChaosResult, empty_database_url, kafka_bootstrap_servers, worker_group,
    chaos_producer, databases,
) -> None:  # fmt: skip
    chaos_result.parameters = str(size)
    rng, seed = seeded_random()
    chaos_result.notes.append(f"seed {seed}")
    deployment = make_deployment(empty_database_url, kafka_bootstrap_servers, partitions=4)
    database = databases(deployment.database_url)
    producer = await chaos_producer(deployment.bootstrap_servers)
    worker = worker_group(deployment).start(wait=True)

    # Campaigns for the valid messages of the other topics: some to fill, some for a price to break, some whose
    # range breaks. One symbol and portfolio each, so that each valid message touches its own campaign.
    tag = uuid4().hex[:6].upper()
    openers = {
        purpose: [
            trade_signal(trading_range(symbol=f"{purpose}{tag}{i}"), position_size="10", portfolio_id=f"fl-{tag}-{i}")
            for i in range(size.valid)
        ]
        for purpose in ("F", "P", "R")
    }
    await publish_signals(producer, deployment.signals_topic, [s for group in openers.values() for s in group])
    signals_applied = partial(processed_signals, database, deployment.signals_topic)
    await reaches(signals_applied, 3 * size.valid, 60, "the campaigns opened")
    campaigns = await spring_positions_by_symbol(database)

    # Valid messages: new signals, fills, prices through a Spring's stop, range invalidations.
    signals = [trade_signal(trading_range(symbol=f"S{tag}{i}"), position_size="10") for i in range(size.valid)]
    fills = [position_event(*campaigns[s["symbol"]][:2], "FILLED", price="148.60", shares="10") for s in openers["F"]]
    breaks = [s["symbol"] for s in openers["P"]]
    ranges = [s["symbol"] for s in openers["R"]]
    invalidations = [
        range_event(s["trading_range"], "RANGE_INVALIDATED", reason="Close below Creek") for s in openers["R"]
    ]
    campaign, position = campaigns[openers["F"][0]["symbol"]][:2]
    streams: dict[str, tuple[list[tuple[bytes | None, bytes]], Callable[[], list[Malformed]]]] = {
        deployment.signals_topic: ([encode(s) for s in signals], malformed_signals),
        deployment.position_events_topic: (
            [(e["campaign_id"].encode(), json.dumps(e).encode()) for e in fills],
            lambda: malformed_position_events(campaign, position),
        ),
        deployment.market_prices_topic: (
            [(symbol.encode(), price_tick(symbol, "146.40")) for symbol in breaks],
            lambda: malformed_prices(breaks[0]),
        ),
        deployment.trading_ranges_topic: (
            [(e["trading_range"]["id"].encode(), json.dumps(e).encode()) for e in invalidations],
            malformed_range_events,
        ),
    }

    # The flood: on every topic, malformed records of every kind in turn, the valid ones among them at random.
    records: list[tuple[str, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]] = []
    expected: list[Malformed | None] = []
    for topic, (valid, kinds) in streams.items():
        bad: list[Malformed] = []
        while len(bad) < size.malformed:
            bad += kinds()
        mixed: list[Malformed | tuple[bytes | None, bytes]] = [*bad[: size.malformed], *valid]
        rng.shuffle(mixed)
        for item in mixed:
            if isinstance(item, Malformed):
                records.append((topic, os.urandom(8), item.value, item.headers))
                expected.append(item)
            else:
                records.append((topic, item[0], item[1], ()))
                expected.append(None)
    chaos_result.sent = len(records)

    async with Watch([worker]) as watch:
        sent = await send_all(producer, records)
        flooded = time.monotonic()

        # Every malformed record is dead-lettered (through the outbox) and every valid one applied.
        total_bad = 4 * size.malformed
        await reaches(partial(dead_letters_written, database), total_bad, 120, "every dead letter written")
        applied = {
            "signals": (signals_applied, 4 * size.valid),
            "fills": (partial(messages_applied, database, deployment.position_events_topic), size.valid),
            "price breaks": (
                partial(scalar, database, INVALIDATED, symbols=breaks, reason="Spring low break"),
                size.valid,
            ),
            "range breaks": (
                partial(scalar, database, INVALIDATED, symbols=ranges, reason="Close below Creek"),
                size.valid,
            ),
        }
        for what, (count, expected_count) in applied.items():
            await reaches(count, expected_count, 60, f"the valid {what} applied")
        chaos_result.recovery = f"all handled {time.monotonic() - flooded:.1f} s after the flood was sent"
        for topic in deployment.consumed_topics:
            await assert_every_record_consumed(database, deployment, topic, sent)

        # The same process throughout, and ready.
        watch.assert_never_restarted()
        assert await is_ready(worker)
    chaos_result.applied = 4 * size.valid

    # Each dead letter is a malformed record sent, byte for byte, with the reason its kind must give.
    by_origin = {
        (topic, partition, offset): (record, item)
        for (topic, partition, offset), record, item in zip(sent, records, expected, strict=True)
        if item is not None
    }
    found: dict[tuple[str, int, int], Any] = {}
    kinds_seen: dict[str, set[str]] = {}
    for topic in deployment.consumed_topics:
        for dead in await dead_letters(deployment.bootstrap_servers, f"{topic}.dlq", size.malformed):
            headers = dict(dead.headers)
            origin = (
                headers["x-original-topic"].decode(),
                int(headers["x-original-partition"]),
                int(headers["x-original-offset"]),
            )
            assert origin not in found, f"dead-lettered twice: {origin}"
            assert origin in by_origin, f"a dead letter of no malformed record: {origin} {headers}"
            (_, key, value, _), bad = by_origin[origin]
            found[origin] = dead
            assert origin[0] == topic, (bad.kind, origin)
            assert headers["x-dlq-error-type"].decode() == bad.error_type, (topic, bad.kind, headers)
            assert bad.reason in headers["x-dlq-reason"].decode(), (topic, bad.kind, headers["x-dlq-reason"])
            assert (dead.key, dead.value or b"") == (key, value or b""), (topic, bad.kind)
            kinds_seen.setdefault(topic, set()).add(bad.kind)
    chaos_result.dead_letters = len(found)
    chaos_result.lost = len(by_origin) - len(found) + (4 * size.valid - chaos_result.applied)
    chaos_result.duplicated = 0  # a second dead letter of one record fails above
    tally = Tally()
    await count_published(database, deployment, tally)
    chaos_result.events, chaos_result.published = tally.events, tally.published
    chaos_result.notes.append(f"{min(len(k) for k in kinds_seen.values())} kinds per topic; same pid, ready")
    assert len(found) == len(by_origin) == total_bad
    assert all(len(kinds) >= 20 for kinds in kinds_seen.values()), kinds_seen
