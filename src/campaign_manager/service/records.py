"""What the service layer receives from the messaging adapter."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConsumedRecord:
    """One Kafka record as it arrived: enough to dead-letter it byte for byte."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
