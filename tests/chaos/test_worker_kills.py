"""kill -9 of workers at random moments while a group of three applies a steady stream of signals: each killed
worker is started again at once, and in the end every signal is applied exactly once and every event published."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial

import pytest
from tests.chaos.conftest import ChaosResult, make_deployment, sizes
from tests.chaos.harness import (
    PacedSignals,
    Progress,
    is_up,
    processed_signals,
    reaches,
    seeded_random,
    tally_signals,
    wait_ready,
)
from tests.e2e.checks import assert_each_signal_applied_once_and_every_event_published, signal_mix
from tests.e2e.conftest import WorkerProcess

SCENARIO = "worker kill -9"
# The kills land at random moments while signals arrive, 4 s apart on average: a killed worker takes a few
# seconds to start again, and each kill should find workers applying signals.
MEAN_KILL_INTERVAL_S = 4.0
# Signals go on arriving this long after the last kill's moment: a kill may wait for a worker past its start-up
# (up to ~7 s), and must still find signals to apply when it lands.
AFTER_LAST_KILL_S = 8.0


@dataclass(frozen=True)
class Kills:
    signals: int
    kills: int
    workers: int = 3

    def __str__(self) -> str:
        return f"{self.kills} kills, {self.signals:,} signals, {self.workers} workers, 6 partitions"


@pytest.mark.parametrize("size", sizes(Kills(2_000, 2), Kills(20_000, 20), smoke_timeout_s=240, full_timeout_s=900))
async def test_kill_9_of_workers_at_random_moments_loses_and_repeats_no_signal(
    size: Kills, chaos_result: ChaosResult, empty_database_url, kafka_bootstrap_servers, worker_group,
    chaos_producer, databases,
) -> None:  # fmt: skip
    chaos_result.parameters = str(size)
    rng, seed = seeded_random()
    chaos_result.notes.append(f"seed {seed}")
    deployment = make_deployment(empty_database_url, kafka_bootstrap_servers, partitions=6)
    database = databases(deployment.database_url)
    topic = deployment.signals_topic

    # Three workers share the group's partitions.
    group = worker_group(deployment)
    for _ in range(size.workers):
        group.start()
    for worker in group.workers:
        await wait_ready(worker)

    # Upstream publishes a steady stream; meanwhile a worker is killed at random moments and started again at once.
    signals = signal_mix(size.signals, portfolios=max(20, size.signals // 100))
    producer = await chaos_producer(deployment.bootstrap_servers)
    kills_until = size.kills * MEAN_KILL_INTERVAL_S + 1
    seconds = kills_until + AFTER_LAST_KILL_S
    publishing = PacedSignals(producer, topic, signals, seconds=seconds)
    applied_at_kills: list[int] = []

    async def kill_at_random_moments() -> None:
        started = time.monotonic()
        for moment in sorted(rng.uniform(1.0, kills_until) for _ in range(size.kills)):
            await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
            # A worker past its start-up, so applying signals (if all are starting, the first that is up).
            up = await _up(group.alive())
            while not up:
                await asyncio.sleep(0.2)
                up = await _up(group.alive())
            applied_at_kills.append(await processed_signals(database, topic))
            group.kill(rng.choice(up))
            group.start("restarted")

    async with Progress(database, topic, waiting=lambda applied: applied < publishing.sent) as progress:
        await asyncio.gather(publishing.run(), kill_at_random_moments())
        await reaches(partial(processed_signals, database, topic), size.signals, 180, "every signal applied")
    chaos_result.recovery = f"longest stall {progress.longest_stall_s:.1f} s"
    chaos_result.notes.append(f"signals applied at the kills: {applied_at_kills[0]:,} .. {applied_at_kills[-1]:,}")
    assert group.kills == size.kills
    assert max(applied_at_kills) < size.signals, "a kill came after the last signal: it proves nothing"

    # Nothing lost, nothing applied twice, every event published; nothing dead-lettered.
    tally = await tally_signals(database, deployment, [s["id"] for s in signals])
    chaos_result.record(tally)
    assert (tally.lost, tally.duplicated, tally.dead_letters) == (0, 0, 0)
    assert tally.published == tally.events
    await assert_each_signal_applied_once_and_every_event_published(database, deployment, signals)


async def _up(workers: list[WorkerProcess]) -> list[WorkerProcess]:
    return [w for w in workers if await is_up(w)]
