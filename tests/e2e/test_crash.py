"""kill -9 in the middle of a run: every signal applied exactly once, every event published at least once."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

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

SIGNALS = 5000


async def test_kill_9_while_processing_5000_signals_applies_each_exactly_once(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer, database: Database
) -> None:
    signals = signal_mix(SIGNALS)
    await publish_signals(producer, deployment.signals_topic, signals)

    # The worker starts on the backlog and is killed without warning part-way through.
    victim = start_worker("victim", wait=False)  # its signal consumer starts before /readyz says so
    await wait_for(
        lambda: at_least_processed(database, deployment.signals_topic, 300), timeout_s=60, what="the first batches"
    )
    victim.kill()
    applied_before_crash = await count_processed(database, deployment.signals_topic)
    assert applied_before_crash < SIGNALS, "the worker finished before the kill: the test proves nothing"
    print(f"killed with {applied_before_crash} of {SIGNALS} signals applied")

    # A new worker takes over and finishes the run.
    start_worker("successor")
    await wait_for(
        lambda: at_least_processed(database, deployment.signals_topic, SIGNALS),
        timeout_s=120,
        what="all signals applied",
    )

    await assert_each_signal_applied_once_and_every_event_published(database, deployment, signals)
