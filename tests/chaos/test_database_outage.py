"""PostgreSQL goes away mid-run (stopped fast, stopped immediately, or frozen with every one of its processes) while
signals keep arriving: the worker waits without exiting or dead-lettering anything, resumes within seconds of the
database's return, and every signal is applied exactly once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial

import pytest
from tests.chaos.conftest import ChaosResult, make_deployment, sizes
from tests.chaos.harness import (
    ControlledPostgres,
    PacedSignals,
    Watch,
    dead_letters_written,
    eventually,
    is_ready,
    processed_signals,
    reaches,
    tally_signals,
)
from tests.e2e.checks import assert_each_signal_applied_once_and_every_event_published, signal_mix

RESUME_BOUND_S = 5.0
RATE = 200  # signals a second, before, during and after the outage


@dataclass(frozen=True)
class Outage:
    seconds: float
    before_s: float = 2.0
    after_s: float = 2.0

    @property
    def signals(self) -> int:
        return int(RATE * (self.before_s + self.seconds + self.after_s)) // 3 * 3

    def __str__(self) -> str:
        return f"{self.seconds:.0f} s down, {self.signals:,} signals at {RATE}/s, 1 worker"


FAULTS = {
    "fast": "PostgreSQL stop -m fast",
    "immediate": "PostgreSQL stop -m immediate",
    "pause": "PostgreSQL SIGSTOP",
}


def _cases() -> list:
    cases = []
    for fault in FAULTS:
        for size in sizes(Outage(5), Outage(30, 5, 5), smoke_timeout_s=180, full_timeout_s=400):
            if fault == "fast" and size.id == "smoke":
                continue  # `make test` keeps to two: immediate (the harsher stop) and pause
            cases.append(pytest.param(fault, *size.values, id=f"{size.id}-{fault}", marks=size.marks))
    return cases


@pytest.mark.parametrize(("fault", "size"), _cases())
async def test_a_database_outage_mid_run_holds_the_worker_which_resumes_within_5_s_and_loses_nothing(
    fault: str, size: Outage, chaos_result: ChaosResult, own_postgres: ControlledPostgres, kafka_bootstrap_servers,
    worker_group, chaos_producer, databases,
) -> None:  # fmt: skip
    chaos_result.scenario, chaos_result.parameters = FAULTS[fault], str(size)
    deployment = make_deployment(own_postgres.url, kafka_bootstrap_servers, partitions=4)
    topic = deployment.signals_topic
    worker = worker_group(deployment).start(wait=True)
    signals = signal_mix(size.signals, portfolios=max(20, size.signals // 100))
    producer = await chaos_producer(deployment.bootstrap_servers)
    publishing = PacedSignals(producer, topic, signals, seconds=size.before_s + size.seconds + size.after_s)

    async with Watch([worker]) as watch:
        publish_task = asyncio.create_task(publishing.run())
        try:
            # The worker applies the stream...
            await asyncio.sleep(size.before_s)
            database = databases(deployment.database_url)
            applied_before = await processed_signals(database, topic)
            assert applied_before > 0
            await database.dispose()  # its connections would not outlive the outage either

            # ...when the database goes away for a while; signals keep arriving.
            if fault == "pause":
                own_postgres.pause()
            else:
                await asyncio.to_thread(own_postgres.stop, fault)
            await asyncio.sleep(size.seconds)
            if fault == "pause":
                own_postgres.resume()
            else:
                await asyncio.to_thread(own_postgres.start)
            back = time.monotonic()

            # It is back: the worker applies signals again within seconds.
            database = databases(deployment.database_url)
            applied_when_back = await processed_signals(database, topic)
            await reaches(
                partial(processed_signals, database, topic),
                applied_when_back + 1,
                60,
                "a signal applied after the return",
            )
            resumed_s = time.monotonic() - back
            chaos_result.recovery = f"resumed {resumed_s:.2f} s after the database returned"
            chaos_result.notes.append(
                f"{applied_before:,} applied before the outage, {publishing.sent - applied_when_back:,} waiting"
                " when the database returned"
            )
            await publish_task
        finally:
            publish_task.cancel()
        await reaches(partial(processed_signals, database, topic), size.signals, 120, "every signal applied")

        # The same process throughout, ready again, and nothing dead-lettered: not the data's fault.
        watch.assert_never_restarted()
        await eventually(lambda: is_ready(worker), timeout_s=30, what="the worker ready again")
    assert await dead_letters_written(database) == 0
    tally = await tally_signals(database, deployment, [s["id"] for s in signals])
    chaos_result.record(tally)
    assert (tally.lost, tally.duplicated, tally.dead_letters) == (0, 0, 0)
    await assert_each_signal_applied_once_and_every_event_published(database, deployment, signals)
    assert resumed_s <= RESUME_BOUND_S, f"resumed {resumed_s:.2f} s after the database returned"
