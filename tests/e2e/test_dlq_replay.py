"""`campaign-manager dlq replay` against a running worker: dead letters go back to the topic they came from."""

from __future__ import annotations

import asyncio
import sys
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer

from campaign_manager.embedded import free_port
from tests.e2e.conftest import Deployment, read_topic

pytestmark = pytest.mark.e2e


async def dlq_replay(deployment: Deployment, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "campaign_manager.cli",
        "dlq",
        "replay",
        "--idle-timeout",
        "2",
        *args,
        env=deployment.environment(free_port()),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_a_dead_letter_is_listed_by_a_dry_run_and_published_again_by_a_replay(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer
) -> None:
    start_worker()
    first_key, second_key = f"range-{uuid4().hex[:8]}".encode(), f"range-{uuid4().hex[:8]}".encode()

    # An upstream bug publishes two records that are not JSON.
    await producer.send_and_wait(
        deployment.signals_topic, b"{not json", key=first_key, headers=[("traceparent", b"00-abc-01")]
    )
    await producer.send_and_wait(
        deployment.signals_topic, b"{still not json", key=second_key, headers=[("traceparent", b"00-def-01")]
    )

    # The worker dead-letters both, with the reason and where they came from.
    dead_letters = await read_topic(deployment.bootstrap_servers, deployment.dlq_topic, until=lambda r: len(r) >= 2)
    assert len(dead_letters) == 2
    first_headers = dict(next(r for r in dead_letters if r.key == first_key).headers)
    assert first_headers["x-dlq-error-type"] == b"DecodeError"
    assert first_headers["x-original-topic"] == deployment.signals_topic.encode()

    # A dry run lists them and publishes nothing.
    output = await dlq_replay(deployment, "--dry-run")
    assert sum(line.startswith(f"would replay {deployment.dlq_topic}[") for line in output.splitlines()) == 2
    assert f"-> {deployment.signals_topic} key={first_key.decode()} DecodeError" in output
    assert f"would replay 2 of 2 dead letters on {deployment.dlq_topic}" in output

    # A dry run for another kind of failure finds none of them.
    output = await dlq_replay(deployment, "--dry-run", "--error-type", "ProcessingError")
    assert "would replay 0 of 2 dead letters" in output

    # A replay limited to one record publishes exactly one.
    output = await dlq_replay(deployment, "--limit", "1")
    assert f"replayed 1 of 1 dead letters on {deployment.dlq_topic}" in output

    # The replayed record is back on the signals topic: the original key, value and headers, no dead-letter ones.
    signals = await read_topic(deployment.bootstrap_servers, deployment.signals_topic, until=lambda r: len(r) >= 3)
    assert len(signals) == 3
    by_key = {
        key: sorted((r for r in signals if r.key == key), key=lambda r: r.offset) for key in (first_key, second_key)
    }
    original, replayed = by_key[first_key] if len(by_key[first_key]) == 2 else by_key[second_key]
    assert replayed.value == original.value
    assert replayed.headers == original.headers
    assert [name for name, _ in replayed.headers] == ["traceparent"]

    # The worker reads it again and, as it is still not JSON, dead-letters it again.
    dead_letters = await read_topic(deployment.bootstrap_servers, deployment.dlq_topic, until=lambda r: len(r) >= 3)
    assert len(dead_letters) == 3
