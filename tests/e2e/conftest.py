"""`campaign-manager run` as a real process against the test servers, and Kafka clients to talk to it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from campaign_manager.embedded import free_port
from campaign_manager.examples import encode

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
READY_TIMEOUT_S = 60


@dataclass(frozen=True)
class Deployment:
    """One isolated installation: its own topics and consumer group on the shared test servers."""

    database_url: str
    bootstrap_servers: str
    signals_topic: str
    events_topic: str
    group_id: str
    partitions: int = 4
    trading_ranges_topic: str = "trading-ranges"
    position_events_topic: str = "position-events"
    market_prices_topic: str = "market-prices"

    @property
    def dlq_topic(self) -> str:
        return f"{self.signals_topic}.dlq"

    def environment(self, http_port: int) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "SIGNALS_TOPIC": self.signals_topic,
            "EVENTS_TOPIC": self.events_topic,
            "TRADING_RANGES_TOPIC": self.trading_ranges_topic,
            "POSITION_EVENTS_TOPIC": self.position_events_topic,
            "MARKET_PRICES_TOPIC": self.market_prices_topic,
            "KAFKA_GROUP_ID": self.group_id,
            "TOPIC_PARTITIONS": str(self.partitions),
            "HTTP_PORT": str(http_port),
            "PORTFOLIO_VALUE": "100000",
            # Fast rebalances for tests; production keeps the defaults.
            "KAFKA_SESSION_TIMEOUT_MS": "2000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
            "KAFKA_REBALANCE_TIMEOUT_MS": "2000",
            "LOG_LEVEL": "INFO",
        }


@dataclass
class WorkerProcess:
    deployment: Deployment
    name: str
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return ARTIFACTS / f"{self.deployment.group_id}-{self.name}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> WorkerProcess:
        ARTIFACTS.mkdir(exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "campaign_manager.cli", "run"],
            env=self.deployment.environment(self.http_port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> WorkerProcess:
        """Ready means: HTTP up, database reachable, partitions assigned."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, f"worker exited; see {self.log_path}"
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker {self.name} not ready after {timeout_s}s; see {self.log_path}")

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def deployment(migrated_database_url: str, kafka_bootstrap_servers: str) -> Deployment:
    suffix = uuid4().hex[:8]
    return Deployment(
        database_url=migrated_database_url,
        bootstrap_servers=kafka_bootstrap_servers,
        signals_topic=f"trade-signals-{suffix}",
        events_topic=f"campaign-events-{suffix}",
        group_id=f"campaign-manager-{suffix}",
        trading_ranges_topic=f"trading-ranges-{suffix}",
        position_events_topic=f"position-events-{suffix}",
        market_prices_topic=f"market-prices-{suffix}",
    )


@pytest.fixture
def start_worker(deployment: Deployment) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(name: str = "worker", wait: bool = True) -> WorkerProcess:
        worker = WorkerProcess(deployment, f"{name}-{len(workers)}").start()
        workers.append(worker)
        return worker.wait_ready() if wait else worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
async def producer(kafka_bootstrap_servers: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    yield producer
    await producer.stop()


async def publish_signals(producer: AIOKafkaProducer, topic: str, signals: list[dict[str, Any]]) -> None:
    """Send all, then wait for all acknowledgements (never one by one)."""
    futures = []
    for signal_ in signals:
        key, value = encode(signal_)
        futures.append(await producer.send(topic, value, key=key))
    await asyncio.gather(*futures)


async def publish(producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    """(key, value) records to any topic, in order; waits for all acknowledgements (never one by one)."""
    futures = [await producer.send(topic, value, key=key) for key, value in records]
    await asyncio.gather(*futures)


async def run_command(deployment: Deployment, *args: str, timeout_s: float = 120) -> tuple[int, str]:
    """`campaign-manager <args>` against the deployment's servers: its exit code and its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "campaign_manager.cli",
        *args,
        env=deployment.environment(free_port()),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    until: Callable[[list[ConsumerRecord]], bool],
    timeout_s: float = 60,
) -> list[ConsumerRecord]:
    """Every record of the topic from the start, until `until(records)` holds (or the timeout)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=f"test-reader-{uuid4().hex[:8]}",
        auto_offset_reset="earliest",  # the embedded broker cannot answer "latest"
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not until(records) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def get_json(url: str, params: dict[str, Any] | None = None) -> Any:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url, params=params)
    return response.json()


def events_of(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]
