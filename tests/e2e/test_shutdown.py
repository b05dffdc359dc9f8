"""SIGTERM in the middle of a run: the worker finishes its batch, flushes the outbox and exits 0 in bounded time;
a successor finishes the run with every signal applied exactly once."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from campaign_manager.persistence.store import Database
from tests.e2e.checks import (
    assert_each_signal_applied_once_and_every_event_published,
    at_least_processed,
    count_processed,
    signal_mix,
    wait_for,
)
from tests.e2e.conftest import Deployment, publish_signals

pytestmark = pytest.mark.e2e

SIGNALS = 3000
STOP_BOUND_S = 20.0  # the batch in flight, then the relay's flush (bounded at 10 s), then the process is gone


async def test_sigterm_mid_run_stops_cleanly_and_loses_or_repeats_nothing(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer, database: Database
) -> None:
    # A running worker (its consumers all joined) gets a backlog, and is asked to stop part-way through it.
    worker = start_worker("stopped")
    signals = signal_mix(SIGNALS)
    await publish_signals(producer, deployment.signals_topic, signals)
    await wait_for(
        lambda: at_least_processed(database, deployment.signals_topic, 300), timeout_s=60, what="the first batches"
    )
    asked = time.monotonic()
    assert worker.stop(timeout_s=60) == 0
    assert time.monotonic() - asked < STOP_BOUND_S
    applied = await count_processed(database, deployment.signals_topic)
    assert applied < SIGNALS, "the worker finished before the stop: the test proves nothing"

    # What it committed, it also published before exiting: nothing is left for a successor to send.
    async with database.engine.connect() as connection:
        unsent = await connection.scalar(
            text("SELECT count(*) FROM outbox_pending JOIN outbox USING (id) WHERE topic = :topic"),
            {"topic": deployment.events_topic},
        )
    assert unsent == 0

    # A successor finishes the run.
    start_worker("successor")
    await wait_for(
        lambda: at_least_processed(database, deployment.signals_topic, SIGNALS), timeout_s=120, what="all signals"
    )
    await assert_each_signal_applied_once_and_every_event_published(database, deployment, signals)
