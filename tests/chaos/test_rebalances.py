"""Workers join and leave every few seconds (graceful stops and kills), each time rebalancing the group, while the
first signals of many ranges race: each range's Spring, SOS and LPS go out under random keys, so they land on
different partitions and different workers apply them at once. Exactly one campaign per portfolio and range, and
every signal applied exactly once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial

import pytest
from sqlalchemy import text
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

SCENARIO = "forced rebalances"
MAX_WORKERS = 3


@dataclass(frozen=True)
class Churn:
    ranges: int
    seconds: float  # how long workers come and go, and signals arrive

    def __str__(self) -> str:
        return (
            f"{self.ranges:,} ranges x 3 racing first signals over {self.seconds:.0f} s,"
            f" 1-{MAX_WORKERS} workers joining/leaving every 1-3 s"
        )


@pytest.mark.parametrize("size", sizes(Churn(100, 12), Churn(500, 60), smoke_timeout_s=180, full_timeout_s=500))
async def test_workers_joining_and_leaving_while_first_signals_race_open_one_campaign_per_range(
    size: Churn, chaos_result: ChaosResult, empty_database_url, kafka_bootstrap_servers, worker_group,
    chaos_producer, databases,
) -> None:  # fmt: skip
    chaos_result.parameters = str(size)
    rng, seed = seeded_random()
    chaos_result.notes.append(f"seed {seed}")
    deployment = make_deployment(empty_database_url, kafka_bootstrap_servers, partitions=6)
    database = databases(deployment.database_url)
    topic = deployment.signals_topic
    group = worker_group(deployment)
    for _ in range(2):
        group.start()
    for worker in group.workers:
        await wait_ready(worker)

    # Every range's three signals are sent together under random keys, spread over the churn.
    signals = signal_mix(3 * size.ranges, portfolios=max(20, size.ranges // 30))
    producer = await chaos_producer(deployment.bootstrap_servers)
    publishing = PacedSignals(producer, topic, signals, seconds=size.seconds, random_keys=True)
    leaving: list[asyncio.Task[int | None]] = []
    stopping: set[str] = set()

    def staying() -> list[WorkerProcess]:
        return [w for w in group.alive() if w.name not in stopping]

    async def leave_gracefully(worker: WorkerProcess) -> int | None:
        stopping.add(worker.name)
        return await group.stop(worker)

    async def churn() -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + size.seconds
        while loop.time() < end:
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            members = staying()
            # Leaving alternates between a graceful stop and a kill, whichever came less often so far.
            leave = "kill" if group.kills < group.graceful_stops else "stop"
            if len(members) <= 1:
                action = "join"
            elif len(members) >= MAX_WORKERS:
                action = leave
            else:
                action = rng.choice(["join", leave])
            up = [w for w in members if await is_up(w)]
            if action == "stop" and not up:
                action = "kill"  # a graceful stop needs a worker past its start-up; a kill takes any
            if action == "join":
                group.start("joining")
            elif action == "kill":
                group.kill(rng.choice(members))
            else:
                leaving.append(asyncio.create_task(leave_gracefully(rng.choice(up))))

    async with Progress(database, topic, waiting=lambda applied: applied < publishing.sent) as progress:
        await asyncio.gather(publishing.run(), churn())
        # One worker stays to finish the run.
        if not staying():
            group.start("last")
        await reaches(partial(processed_signals, database, topic), len(signals), 180, "every signal applied")
    exits = await asyncio.gather(*leaving)
    chaos_result.recovery = f"longest stall {progress.longest_stall_s:.1f} s"
    chaos_result.notes.append(
        f"{len(group.workers) - 2} joins, {group.graceful_stops} graceful stops, {group.kills} kills"
    )
    assert group.kills and group.graceful_stops and len(group.workers) > 2, "the group never changed"
    assert all(code == 0 for code in exits), f"a graceful stop did not exit 0: {exits}"

    # Exactly one campaign per portfolio and range, every signal applied once, every event published.
    async with database.engine.connect() as connection:
        per_range = (
            await connection.execute(
                text("SELECT count(*) FROM campaigns GROUP BY portfolio_id, trading_range_id HAVING count(*) > 1")
            )
        ).all()
        campaigns = (await connection.execute(text("SELECT count(*) FROM campaigns"))).scalar_one()
    assert per_range == []
    assert campaigns == size.ranges
    tally = await tally_signals(database, deployment, [s["id"] for s in signals])
    chaos_result.record(tally)
    assert (tally.lost, tally.duplicated, tally.dead_letters) == (0, 0, 0)
    await assert_each_signal_applied_once_and_every_event_published(database, deployment, signals)
