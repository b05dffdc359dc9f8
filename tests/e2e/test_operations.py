"""What an operator sees of a running worker: its Prometheus metrics and its readiness."""

from __future__ import annotations

import asyncio
import time
from uuid import uuid4

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from campaign_manager.examples import aapl_campaign_signals
from tests.e2e.conftest import Deployment, get_json, publish_signals

pytestmark = pytest.mark.e2e


async def scrape(base_url: str) -> dict[tuple[str, frozenset], float]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def processed(metrics: dict[tuple[str, frozenset], float], topic: str, outcome: str) -> float:
    return metrics[("campaign_manager_messages_processed_total", frozenset({("topic", topic), ("outcome", outcome)}))]


async def test_metrics_count_what_the_worker_did_and_readiness_names_every_check(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    worker = start_worker()
    signals = aapl_campaign_signals(portfolio_id=f"pf-{uuid4().hex[:8]}")

    # Three signals that build a campaign, one of them sent twice, and a record that is not JSON.
    await publish_signals(producer, deployment.signals_topic, [*signals, signals[0]])
    await producer.send_and_wait(deployment.signals_topic, b"{not json", key=b"broken")

    # The counters reach what was sent.
    deadline = time.monotonic() + 30
    while True:
        metrics = await scrape(worker.base_url)
        # Batches are timed when their handler returns, a moment after their transaction counted them.
        timed = metrics[("campaign_manager_batch_records_sum", frozenset())]
        if timed >= 5 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert {
        o: processed(metrics, deployment.signals_topic, o)
        for o in ("applied", "rejected", "duplicate", "dead_lettered")
    } == {
        "applied": 3,
        "rejected": 0,
        "duplicate": 1,
        "dead_lettered": 1,
    }
    dead_letter_key = frozenset({("topic", deployment.signals_topic), ("error_type", "DecodeError")})
    assert metrics[("campaign_manager_dead_letters_total", dead_letter_key)] == 1
    assert metrics[("campaign_manager_batch_records_sum", frozenset())] == 5
    assert metrics[("campaign_manager_batch_duration_seconds_count", frozenset())] >= 1

    # Every record fetched: the partitions it has read from show no lag.
    lags = {labels: v for (name, labels), v in metrics.items() if name == "campaign_manager_consumer_lag"}
    assert lags
    assert deployment.signals_topic in {dict(labels)["topic"] for labels in lags}  # and the other consumed topics
    assert set(lags.values()) == {0}
    assert ("campaign_manager_outbox_backlog", frozenset()) in metrics
    assert metrics[("campaign_manager_outbox_oldest_unsent_age_seconds", frozenset())] < 60

    # Readiness names each check it made.
    ready = await get_json(f"{worker.base_url}/readyz")
    assert ready == {
        "status": "ready",
        "checks": {"database": "ok", "outbox": "ok", "consumer": "ok"},
        "failing": [],
    }
