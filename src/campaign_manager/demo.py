"""`campaign-manager demo`: publishes the story's AAPL Spring -> SOS -> LPS signals to a running service and
prints the campaign events it reads back."""

from __future__ import annotations

import asyncio
import json
import time
from uuid import uuid4

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from campaign_manager.examples import aapl_campaign_signals, encode
from campaign_manager.messaging.kafka_clients import client_options
from campaign_manager.settings import Settings


async def run_demo(settings: Settings, bootstrap_servers: str, timeout_s: float = 30.0) -> int:
    signals = aapl_campaign_signals()
    signal_ids = {s["id"] for s in signals}
    options = client_options(settings)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", **options)
    # A fresh group reading from the start: the embedded broker cannot answer "latest" correctly.
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=bootstrap_servers,
        group_id=f"campaign-manager-demo-{uuid4()}",
        auto_offset_reset="earliest",
        **options,
    )
    await producer.start()
    await consumer.start()
    try:
        for signal in signals:
            key, value = encode(signal)
            await producer.send_and_wait(settings.signals_topic, value, key=key)
            print(f"published {signal['pattern_type']:<6} entry {signal['entry_price']} signal {signal['id']}")
        print(f"\nwaiting for campaign events on {settings.events_topic} ...\n")
        seen: set[str] = set()
        deadline = time.monotonic() + timeout_s
        campaign_id = None
        while seen != signal_ids and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    if event.get("causation_id") not in signal_ids:
                        continue
                    seen.add(event["causation_id"])
                    campaign = event.get("campaign") or {}
                    campaign_id = campaign.get("campaign_id", campaign_id)
                    print(
                        f"{event['event_type']:<22} {campaign.get('campaign_id')} v{event['campaign_version']} "
                        f"status={campaign.get('status')} allocation={campaign.get('total_allocation')}% "
                        f"avg_entry={campaign.get('weighted_avg_entry')} details={json.dumps(event['details'])[:120]}"
                    )
        if seen != signal_ids:
            print(f"\ntimed out after {timeout_s:.0f}s: is `make run` running against {bootstrap_servers}?")
            return 1
        print(f"\nsee it over HTTP: curl http://127.0.0.1:{settings.http_port}/api/v1/campaigns/{campaign_id}")
        return 0
    finally:
        await consumer.stop()
        await producer.stop()


def demo(settings: Settings) -> int:
    bootstrap = settings.kafka_bootstrap_servers or f"127.0.0.1:{settings.embedded_kafka_port}"
    return asyncio.run(run_demo(settings, bootstrap))
