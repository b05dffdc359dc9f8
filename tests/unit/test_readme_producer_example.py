"""The producer example in the README publishes a signal the service accepts, keyed as the service expects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiokafka

from campaign_manager.contracts import TradeSignalMessage

README = Path(__file__).resolve().parents[2] / "README.md"


def producer_example() -> str:
    section = README.read_text().split("\n## Producers\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return code


def test_the_readme_producer_example_sends_a_valid_signal_keyed_by_its_trading_range(monkeypatch) -> None:
    sent: list[tuple[str, bytes, bytes | None]] = []

    class RecordingProducer:
        def __init__(self, **options: Any) -> None:
            self.options = options

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
            sent.append((topic, value, key))

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", RecordingProducer)

    exec(compile(producer_example(), "README.md", "exec"), {"__name__": "readme_example"})

    ((topic, value, key),) = sent
    signal = TradeSignalMessage.model_validate_json(value)
    assert topic == "trade-signals"
    assert key == str(signal.trading_range.id).encode()
