"""docker-compose.yml creates every topic the service reads and writes (auto creation is off on that broker)."""

from __future__ import annotations

import re

from campaign_manager.settings import Settings
from tests.unit.deployment_files import compose


def test_kafka_init_creates_every_consumed_topic_its_dead_letter_topic_and_the_events_topic() -> None:
    settings = Settings.model_construct()  # the documented defaults, whatever this environment sets
    script = "\n".join(compose()["services"]["kafka-init"]["command"])
    created = set(re.findall(r"([a-z.-]+):\d+", script))

    expected = {settings.events_topic} | {
        topic for consumed in settings.consumed_topics for topic in (consumed, settings.dlq_topic(consumed))
    }
    assert expected <= created
