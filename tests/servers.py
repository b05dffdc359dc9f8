"""Real PostgreSQL and Kafka servers for the tests, chosen independently for each, in this order:

1. TEST_DATABASE_URL / TEST_KAFKA_BOOTSTRAP_SERVERS, servers someone already runs (CI services);
2. testcontainers, when a Docker engine answers;
3. the embedded servers of `campaign_manager.embedded`, which need neither.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from campaign_manager.embedded import (
    EmbeddedKafka,
    EmbeddedPostgres,
    free_port,
    start_embedded_kafka,
    start_embedded_postgres,
)

POSTGRES_IMAGE = "postgres:16-alpine"
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
DOCKER_PING_TIMEOUT_S = 3


@contextmanager
def database_server() -> Iterator[str]:
    """Yields the asyncpg SQLAlchemy URL of an empty database; drops it (or stops its server) afterwards."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        _announce("database", "the server of TEST_DATABASE_URL, in a new database", "TEST_DATABASE_URL is set")
        with scratch_database(url) as scratch_url:
            yield scratch_url
    elif _docker_answers():
        from testcontainers.community.postgres import PostgresContainer

        _announce("database", f"testcontainers {POSTGRES_IMAGE}", "a Docker engine answers")
        with PostgresContainer(POSTGRES_IMAGE, driver="asyncpg") as container:
            yield container.get_connection_url()
    else:
        _announce("database", "embedded PostgreSQL", "no TEST_DATABASE_URL and no Docker engine")
        with embedded_postgres() as server:
            yield server.url


@contextmanager
def kafka_server() -> Iterator[str]:
    """Yields bootstrap servers of a Kafka broker; stops it afterwards if it was started here."""
    if bootstrap_servers := os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS"):
        _announce("kafka", bootstrap_servers, "TEST_KAFKA_BOOTSTRAP_SERVERS is set")
        yield bootstrap_servers
    elif _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        _announce("kafka", f"testcontainers {KAFKA_IMAGE} (KRaft)", "a Docker engine answers")
        with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
    else:
        _announce("kafka", "embedded Tansu broker", "no TEST_KAFKA_BOOTSTRAP_SERVERS and no Docker engine")
        with embedded_kafka() as broker:
            yield broker.bootstrap_servers


@contextmanager
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL of its own in a temporary data directory, removed afterwards. Tests that stop or pause
    the server use this one, whatever TEST_DATABASE_URL says: they need its process and its data directory."""
    temp_dir = Path(tempfile.mkdtemp(prefix="cm-test-postgres-"))
    try:
        server = start_embedded_postgres(temp_dir / "data")
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def embedded_kafka() -> Iterator[EmbeddedKafka]:
    """An embedded broker process of its own on a free port, stopped afterwards (see `embedded_postgres`)."""
    broker = start_embedded_kafka(free_port())
    try:
        yield broker
    finally:
        broker.stop()


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of `server_url`, dropped afterwards even if connections linger."""
    # A shared server keeps other databases: each session gets its own (and a test that reads every row, one more).
    import asyncpg

    name = f"cm_test_{secrets.token_hex(6)}"
    admin_dsn = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def execute(sql: str) -> None:
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    _run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            make_url(server_url)
            .set(drivername="postgresql+asyncpg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        _run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    # In a thread of its own, so it works whether or not the caller already runs an event loop.
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(asyncio.run, coroutine).result()


@functools.cache
def _docker_answers() -> bool:
    """Whether a Docker engine answers within a few seconds, found the way testcontainers finds it."""
    try:
        import docker
        from testcontainers.core.docker_client import get_docker_host

        host = get_docker_host()
        client = (
            docker.DockerClient(base_url=host, timeout=DOCKER_PING_TIMEOUT_S)
            if host
            else docker.from_env(timeout=DOCKER_PING_TIMEOUT_S)
        )
        with client:
            return bool(client.ping())
    except Exception:  # noqa: BLE001 - no SDK, no socket, refused, timed out: all mean "no Docker"
        return False


def _announce(kind: str, choice: str, reason: str) -> None:
    print(f"test {kind} server: {choice} ({reason})", file=sys.stderr, flush=True)
