"""The broker freezes (SIGSTOP; it keeps everything in memory, so it is thawed, never restarted) while the worker is
applying a backlog of signals: what the worker commits meanwhile waits in the outbox, every event is delivered
once the broker answers again, and the worker process survives."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial

import pytest
from tests.chaos.conftest import ChaosResult, make_deployment, sizes
from tests.chaos.harness import (
    ControlledBroker,
    Watch,
    eventually,
    is_ready,
    processed_signals,
    reaches,
    tally_signals,
    unpublished,
)
from tests.e2e.checks import assert_each_signal_applied_once_and_every_event_published, signal_mix
from tests.e2e.conftest import publish_signals

SCENARIO = "broker SIGSTOP"


@dataclass(frozen=True)
class Freeze:
    seconds: float
    signals: int

    def __str__(self) -> str:
        return f"{self.seconds:.0f} s frozen, backlog of {self.signals:,} signals, 1 worker"


@pytest.mark.parametrize("size", sizes(Freeze(5, 3_000), Freeze(30, 15_000), smoke_timeout_s=180, full_timeout_s=400))
async def test_a_frozen_broker_keeps_events_in_the_outbox_until_it_answers_and_then_delivers_all(
    size: Freeze, chaos_result: ChaosResult, own_broker: ControlledBroker, empty_database_url, worker_group,
    chaos_producer, databases,
) -> None:  # fmt: skip
    chaos_result.parameters = str(size)
    deployment = make_deployment(empty_database_url, own_broker.bootstrap_servers, partitions=4)
    database = databases(deployment.database_url)
    topic = deployment.signals_topic
    worker = worker_group(deployment).start(wait=True)

    # A backlog of signals is on the broker and the worker is applying it...
    signals = signal_mix(size.signals, portfolios=max(20, size.signals // 100))
    await publish_signals(await chaos_producer(deployment.bootstrap_servers), topic, signals)
    async with Watch([worker]) as watch:
        await reaches(partial(processed_signals, database, topic), size.signals // 10, 60, "processing under way")

        # ...when the broker stops answering. The worker goes on with what it has fetched; its events wait.
        own_broker.pause()
        applied_at_freeze = await processed_signals(database, topic)
        waiting_peak = 0
        deadline = time.monotonic() + size.seconds
        while time.monotonic() < deadline:
            waiting_peak = max(waiting_peak, await unpublished(database))
            await asyncio.sleep(0.1)
        applied_at_thaw = await processed_signals(database, topic)
        waiting_at_thaw = await unpublished(database)
        own_broker.resume()
        back = time.monotonic()
        chaos_result.notes.append(
            f"{applied_at_thaw - applied_at_freeze:,} signals applied while frozen; up to {waiting_peak:,} events"
            f" waited in the outbox ({waiting_at_thaw:,} at the thaw)"
        )

        # The broker answers again: the waiting events go out, and the backlog is finished.
        await eventually(lambda: _fewer_waiting(database, waiting_at_thaw), 60, "the first waiting event delivered")
        first_s = time.monotonic() - back
        await reaches(partial(processed_signals, database, topic), size.signals, 180, "every signal applied")
        await eventually(lambda: _fewer_waiting(database, 1), 120, "the outbox delivered")
        chaos_result.recovery = f"delivering after {first_s:.1f} s, all after {time.monotonic() - back:.1f} s"
        watch.assert_never_restarted()
        await eventually(lambda: is_ready(worker), timeout_s=30, what="the worker ready again")

    assert waiting_peak > 0, "no event waited in the outbox: the freeze proved nothing"
    tally = await tally_signals(database, deployment, [s["id"] for s in signals])
    chaos_result.record(tally)
    assert (tally.lost, tally.duplicated, tally.dead_letters) == (0, 0, 0)
    await assert_each_signal_applied_once_and_every_event_published(database, deployment, signals)


async def _fewer_waiting(database, than: int) -> bool:
    waiting = await unpublished(database)
    return waiting < than or waiting == 0
