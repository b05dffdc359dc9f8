"""Poison messages: valid by their contract and by the rules, yet every attempt to apply them fails in the database.
The scenario injects that fault into its own database: a trigger refuses every change to the campaigns opened for
poison (SQLSTATE P0001), a failure that is not the database's unavailability and not a lost race. (Amounts too large
to store, the way such records used to arise, are refused by the domain before any write; see the unit tests.)
The worker retries the batch, then each of its records alone, a bounded number of times; the poison is
dead-lettered as a ProcessingError, the valid records around it are applied, and the partition moves on."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from uuid import uuid4

import pytest
from tests.chaos.conftest import ChaosResult, make_deployment, sizes
from tests.chaos.harness import (
    ControlledPostgres,
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
from tests.malformed import price_tick

from campaign_manager.examples import position_event, trade_signal, trading_range
from campaign_manager.service.processor import MAX_FAILED_ATTEMPTS

SCENARIO = "poison messages"
FAULT = "injected fault: poison campaign"


def refuse_changes(symbol_patterns: list[str]) -> list[str]:
    """A trigger that refuses any change to a campaign whose symbol is LIKE one of the patterns, the way the
    server's own error would: the statement fails, and so does every retry."""
    patterns = ", ".join(f"'{pattern}'" for pattern in symbol_patterns)
    return [
        f"""CREATE FUNCTION chaos_refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.symbol LIKE ANY (ARRAY[{patterns}]) THEN
                RAISE EXCEPTION '{FAULT} %', NEW.campaign_id;
            END IF;
            RETURN NEW;
        END $$""",
        "CREATE TRIGGER chaos_refuse_poison BEFORE UPDATE ON campaigns"
        " FOR EACH ROW EXECUTE FUNCTION chaos_refuse_poison()",
    ]


# Each attempt fails at the first refused statement: the batch is tried MAX_FAILED_ATTEMPTS times, then each of
# its records alone as often; a batch holds at least one poison.
MAX_ERRORS_PER_POISON = 2 * MAX_FAILED_ATTEMPTS


@dataclass(frozen=True)
class Poison:
    valid: int  # valid fills, and valid ticks, each
    poison: int  # poison exits, and poison ticks, each

    def __str__(self) -> str:
        return (
            f"poison: {self.poison} exits among {self.valid:,} fills, {self.poison} ticks among {self.valid:,}"
            " ticks; 1 worker"
        )


@pytest.mark.parametrize("size", sizes(Poison(100, 1), Poison(1_000, 10), smoke_timeout_s=180, full_timeout_s=400))
async def test_a_record_that_always_fails_is_dead_lettered_after_bounded_attempts_and_the_rest_is_applied(
    size: Poison, chaos_result: ChaosResult, own_postgres: ControlledPostgres, kafka_bootstrap_servers,
    worker_group, chaos_producer, databases,
) -> None:  # fmt: skip
    chaos_result.parameters = str(size)
    rng, seed = seeded_random()
    chaos_result.notes.append(f"seed {seed}")
    deployment = make_deployment(own_postgres.url, kafka_bootstrap_servers, partitions=4)
    database = databases(deployment.database_url)
    producer = await chaos_producer(deployment.bootstrap_servers)
    worker = worker_group(deployment).start(wait=True)

    # Campaigns of one Spring of 10 shares each: to fill (F), to mark to market (M), to exit (X) and to tick (T)
    # once their changes are refused.
    tag = uuid4().hex[:6].upper()
    counts = {"F": size.valid, "M": size.valid, "X": size.poison, "T": size.poison}
    openers = {
        purpose: [
            trade_signal(
                trading_range(symbol=f"{purpose}{tag}{i}"), position_size="10", portfolio_id=f"pm-{tag}-{i % 100}"
            )
            for i in range(count)
        ]
        for purpose, count in counts.items()
    }
    await publish_signals(producer, deployment.signals_topic, [s for group in openers.values() for s in group])
    opened = sum(counts.values())
    await reaches(partial(processed_signals, database, deployment.signals_topic), opened, 120, "the campaigns opened")
    campaigns = await spring_positions_by_symbol(database)
    async with database.engine.connect() as connection:  # from now on, the poison campaigns refuse every change
        driver = (await connection.get_raw_connection()).driver_connection
        for statement in refuse_changes([f"X{tag}%", f"T{tag}%"]):
            await driver.execute(statement)

    def position_record(symbol: str, event_type: str, price: str, shares: str | None) -> tuple[bytes, bytes]:
        campaign_id, position_id = campaigns[symbol]
        return campaign_id.encode(), json.dumps(position_event(campaign_id, position_id, event_type, price=price,
                                                               shares=shares)).encode()  # fmt: skip

    # Poison among valid records on both topics, at random places.
    fills = [(position_record(s["symbol"], "FILLED", "148.60", "10"), False) for s in openers["F"]]
    exits = [(position_record(s["symbol"], "CLOSED", "150.00", None), True) for s in openers["X"]]
    ticks = [((s["symbol"].encode(), price_tick(s["symbol"], "149.00")), False) for s in openers["M"]]
    poison_ticks = [((s["symbol"].encode(), price_tick(s["symbol"], "149.00")), True) for s in openers["T"]]
    records, poisoned = [], []
    for topic, stream in ((deployment.position_events_topic, fills + exits), (deployment.market_prices_topic,
                                                                              ticks + poison_ticks)):  # fmt: skip
        rng.shuffle(stream)
        for (key, value), poison in stream:
            records.append((topic, key, value, ()))
            poisoned.append(poison)
    chaos_result.sent = len(records)
    errors_before = own_postgres.errors(FAULT)

    async with Watch([worker]) as watch:
        sent = await send_all(producer, records)
        sent_at = time.monotonic()

        # Each poison is dead-lettered, within seconds...
        await reaches(partial(dead_letters_written, database), 2 * size.poison, 120, "the poison dead-lettered")
        dead_lettered_s = time.monotonic() - sent_at
        chaos_result.recovery = f"poison dead-lettered {dead_lettered_s:.1f} s after sending"

        # ...and every valid record around it is applied: the fills, and each first tick marks its campaign.
        fills_applied = partial(messages_applied, database, deployment.position_events_topic)
        await reaches(fills_applied, size.valid, 120, "the fills applied")
        marked = [s["symbol"] for s in openers["M"]]
        # (149.00 - 148.50) x 10 shares
        marked_sql = "SELECT count(*) FROM campaigns WHERE symbol = ANY(:symbols) AND unrealized_pnl = 5.00"
        await reaches(partial(scalar, database, marked_sql, symbols=marked), size.valid, 120, "the ticks applied")
        for topic in (deployment.position_events_topic, deployment.market_prices_topic):
            await assert_every_record_consumed(database, deployment, topic, sent)
        watch.assert_never_restarted()
        assert await is_ready(worker)
    chaos_result.applied = 2 * size.valid

    # The poison changed nothing: its campaigns are as they were opened.
    untouched = [s["symbol"] for s in openers["X"] + openers["T"]]
    assert await scalar(
        database,
        "SELECT count(*) FROM campaigns WHERE symbol = ANY(:symbols) AND version = 1 AND realized_pnl = 0"
        " AND unrealized_pnl = 0",
        symbols=untouched,
    ) == len(untouched)

    # Dead letters: exactly the poison records, as ProcessingError after a bounded number of attempts.
    origins = {origin for origin, poison in zip(sent, poisoned, strict=True) if poison}
    found = set()
    for topic in (deployment.position_events_topic, deployment.market_prices_topic):
        for dead in await dead_letters(deployment.bootstrap_servers, f"{topic}.dlq", size.poison):
            headers = {k: v.decode() for k, v in dead.headers}
            origin = (headers["x-original-topic"], int(headers["x-original-partition"]),
                      int(headers["x-original-offset"]))  # fmt: skip
            assert origin in origins and origin not in found, (origin, headers)
            found.add(origin)
            assert headers["x-dlq-error-type"] == "ProcessingError", headers
            assert headers["x-dlq-reason"].startswith(f"processing failed {MAX_FAILED_ATTEMPTS} times: "), headers
            assert FAULT in headers["x-dlq-reason"], headers
    errors = own_postgres.errors(FAULT) - errors_before
    chaos_result.dead_letters = len(found)
    chaos_result.lost = len(origins) - len(found)
    chaos_result.duplicated = 0  # a second dead letter of one record fails above
    tally = Tally()
    await count_published(database, deployment, tally)
    chaos_result.events, chaos_result.published = tally.events, tally.published
    chaos_result.notes.append(
        f"{errors} refused statements in the server log for {len(origins)} poison records"
        f" (bound {MAX_ERRORS_PER_POISON} each); same pid, ready"
    )
    assert found == origins
    assert MAX_FAILED_ATTEMPTS * len(origins) <= errors <= MAX_ERRORS_PER_POISON * len(origins)
