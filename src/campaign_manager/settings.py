"""Every configuration variable of the service, read from the environment (or `.env`).

One class, one source of truth: the CLI, the worker, the HTTP API and the tests all build from `Settings`.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # --- servers: leave unset to start the embedded ones (needs the `embedded` extra) ---
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+asyncpg://user:pass@host:5432/db. Unset: embedded PostgreSQL.",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="Comma-separated host:port list. Unset: embedded broker on EMBEDDED_KAFKA_PORT."
    )
    data_dir: Path = Field(default=Path(".data"), description="Where the embedded PostgreSQL keeps its data.")
    embedded_kafka_port: int = 9092

    # --- Kafka ---
    kafka_group_id: str = "campaign-manager"
    kafka_client_id: str = "campaign-manager"
    kafka_enable_idempotence: bool = Field(
        default=False, description="Idempotent producer; needs a broker that supports InitProducerId."
    )
    signals_topic: str = "trade-signals"
    events_topic: str = "campaign-events"
    topic_partitions: int = Field(default=12, ge=1, description="Partitions of topics the service creates.")
    topic_replication_factor: int = Field(default=1, ge=1)
    create_topics: bool = Field(default=True, description="Create missing topics at start.")
    batch_max_records: int = Field(default=500, ge=1, le=10_000)
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    kafka_rebalance_timeout_ms: int = 10_000
    kafka_max_poll_interval_ms: int = 300_000
    kafka_batch_timeout_ms: int = Field(
        default=10,
        ge=1,
        description="How long the consumer waits for a batch; FastStream sleeps as long again when none came.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=50, ge=0, description="How long the broker may hold a fetch that has no new records."
    )

    # --- outbox relay ---
    relay_batch_size: int = Field(default=2_000, ge=1)
    relay_poll_interval_ms: int = Field(
        default=100, ge=1, description="How often the relay looks for events committed by other workers."
    )

    # --- business ---
    portfolio_value: Decimal | None = Field(
        default=None, description="Portfolio value used when a signal carries none; unset: such signals are rejected."
    )

    # --- database ---
    db_pool_size: int = 5
    db_max_overflow: int = 5

    # --- HTTP API ---
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    api_token: SecretStr | None = None

    # --- logging ---
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"

    @property
    def signals_dlq_topic(self) -> str:
        return f"{self.signals_topic}.dlq"

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def uses_embedded_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is None
