"""`make bench`: throughput and latency of the whole path, `trade-signals` -> worker -> `campaign-events`.

Each scenario gets its own embedded broker (Tansu keeps everything in memory and never frees it), its own database
in one embedded PostgreSQL (fsync on) and its own `campaign-manager run` process, so scenarios stay independent.
Latency of a signal = arrival of its first event here - its send here (one process: monotonic clock). The latency
run's signals then go once more, at its rate, through a fresh broker and straight back here (`broker_hop`): what
the embedded broker alone costs one hop of the two in a signal's path.

Then `market-prices`: campaigns open on 100 symbols, ticks offered at a fixed rate from batches built beforehand
(Python could not encode and send 100,000 a second one by one). Absorbed = ticks whose offsets the worker stored
in PostgreSQL, per second from the first send; stop latency = a tick through a stop handed to the producer -> its
CampaignInvalidated read here. Once beyond what one worker absorbs (`--price-rate`), once within (`--paced-price-rate`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from campaign_manager.embedded import free_port, start_embedded_kafka, start_embedded_postgres
from campaign_manager.examples import encode, trade_signal, trading_range
from campaign_manager.persistence.migrate import upgrade_to_head

SIGNALS_TOPIC, EVENTS_TOPIC = "trade-signals", "campaign-events"
READY_TIMEOUT_S = 60.0
STALL_TIMEOUT_S = 60.0  # give up when no new signal got its event for this long
WORKER_STOP_TIMEOUT_S = 30.0  # the worker flushes its outbox on SIGTERM
SEND_CHUNK = 2_000  # acknowledgements awaited together: bounds what is in flight
WORKER_LOG_LEVEL = "WARNING"  # per-signal INFO lines would dominate the worker's time
# Tansu holds a fetch looking for records at halving intervals of its max wait (after half of it, then a quarter
# more, ...), so records arriving meanwhile wait for its next look (Kafka answers at once): with aiokafka's 500 ms
# default our own reader would add ~200 ms to every latency.
BENCH_FETCH_MAX_WAIT_MS = 10
CAUSATION_ID = re.compile(rb'"causation_id":"([0-9a-f-]{36})"')  # cheaper than parsing every ~2 kB event
SIGNAL_ID = re.compile(rb'"id": ?"([0-9a-f-]{36})"')  # a trade signal's own id comes first (`examples.encode`)
TOPIC_PARTITIONS = 12  # the worker's default TOPIC_PARTITIONS
HOP_TOPIC = "bench-hop"

# Entries of a range, on a 100,000 portfolio: Spring 2.0% + SOS 1.5% + LPS 1.5% = the 5% campaign budget.
# pattern: (phase, level the entry is above, distance above it, stop distance; 1000 shares each)
ENTRIES = {"SPRING": ("C", "creek", 0.50, 2.00), "SOS": ("D", "ice", 0.25, 1.50), "LPS": ("D", "ice", 1.00, 1.50)}
RANGE_SHAPES = {  # signals of one range, in order -> weight
    ("SPRING", "SOS", "LPS"): 0.72,
    ("SPRING",): 0.10,
    ("SOS", "LPS"): 0.10,
    ("SPRING", "SOS", "LPS", "LPS"): 0.08,  # the 4th entry would take the campaign to 6.5%: rejected
}
OVER_RISK_SHARE = 0.025  # of signals in other shapes: stop 2.5 below entry = 2.5% risk, over the 2% per trade
SYMBOLS = 200
# A desk's many portfolios (strategies, accounts): about one range each, drawn at random, so the 10% heat limit bites
# where ranges pile up (about 1 signal in 10 here, as nothing closes) instead of rejecting nearly everything.
SIGNALS_PER_PORTFOLIO = 3


def signal_mix(count: int, rng: random.Random) -> list[tuple[str, bytes, bytes]]:
    """(signal id, key, value) of `count` signals: about count/2.7 ranges, interleaved, each range in order."""
    symbols: dict[str, float] = {}  # ticker -> price level
    while len(symbols) < SYMBOLS:
        symbols["".join(rng.choices(string.ascii_uppercase, k=rng.choice((3, 4))))] = rng.uniform(20, 400)
    timed: list[tuple[float, dict]] = []
    while len(timed) < count:
        symbol, price = rng.choice(list(symbols.items()))
        start = datetime(2022, 1, 3, 13, 30, tzinfo=UTC) + timedelta(days=rng.randrange(1000))
        levels = {"creek": price, "ice": price * 1.02}
        range_ = trading_range(
            symbol=symbol, start_time=start, creek=f"{price:.2f}", ice=f"{price * 1.02:.2f}", jump=f"{price * 1.10:.2f}"
        )
        portfolio = f"portfolio-{rng.randrange(max(1, count // SIGNALS_PER_PORTFOLIO)):05d}"
        shape = rng.choices(list(RANGE_SHAPES), weights=list(RANGE_SHAPES.values()))[0]
        at = rng.random()  # ranges overlap in time; a range's signals follow each other
        for day, pattern in enumerate(shape, start=1):
            phase, level, above, stop_distance = ENTRIES[pattern]
            if len(shape) < 4 and rng.random() < OVER_RISK_SHARE:
                stop_distance = 2.50
            entry = round(levels[level] + above, 2)
            message = trade_signal(
                range_,
                pattern_type=pattern,
                phase=phase,
                entry_price=f"{entry:.2f}",
                stop_loss=f"{entry - stop_distance:.2f}",
                portfolio_id=portfolio,
                generated_at=start + timedelta(days=day),
            )
            timed.append((at, message))
            at += rng.uniform(0.0001, 0.01)
    timed.sort(key=lambda item: item[0])  # stable: a range's signals keep their order
    return [(message["id"], *encode(message)) for _, message in timed[:count]]


@dataclass
class Measurement:
    name: str
    signals: int
    sent_at: dict[str, float] = field(default_factory=dict)  # signal id -> monotonic send time
    first_event_at: dict[str, float] = field(default_factory=dict)  # signal id -> arrival of its first event
    event_types: Counter[str] = field(default_factory=Counter)
    worker_peak_rss_mb: float = 0.0  # the largest resident set of any worker process, over the whole run

    @property
    def seconds(self) -> float:
        return max(self.first_event_at.values()) - min(self.sent_at.values())

    @property
    def sending_seconds(self) -> float:
        return max(self.sent_at.values()) - min(self.sent_at.values())

    @property
    def signals_per_s(self) -> float:
        return self.signals / self.seconds

    def latency_ms(self, percent: float) -> float:
        return _percentile_ms([self.first_event_at[s] - sent for s, sent in self.sent_at.items()], percent)

    def latency_by_window(self, window_s: float) -> list[tuple[float, float, float]]:
        """(window start s, p50 ms, p99 ms) of the signals sent in each `window_s` of the run: whether latency
        holds or drifts over time (on the embedded broker it drifts: see the README)."""
        started = min(self.sent_at.values())
        windows: dict[int, list[float]] = {}
        for signal_id, sent in self.sent_at.items():
            windows.setdefault(int((sent - started) // window_s), []).append(self.first_event_at[signal_id] - sent)
        return [
            (index * window_s, _percentile_ms(latencies, 50), _percentile_ms(latencies, 99))
            for index, latencies in sorted(windows.items())
        ]


def _percentile_ms(latencies_s: list[float], percent: float) -> float:
    ordered = sorted(latencies_s)
    return 1000 * ordered[round(percent / 100 * (len(ordered) - 1))]


async def publish(
    producer: AIOKafkaProducer, topic: str, signals: list, sent_at: dict[str, float], rate: int | None
) -> None:
    """Sends without awaiting each acknowledgement: `rate` signals a second, or as fast as possible if None."""
    if rate is None:
        await publish_prebuilt(producer, topic, signals, sent_at)
        return
    started, acks = time.monotonic(), []
    for index, (signal_id, key, value) in enumerate(signals):
        if (ahead := started + index / rate - time.monotonic()) > 0:
            await asyncio.sleep(ahead)
        sent_at[signal_id] = time.monotonic()
        acks.append(await producer.send(topic, value, key=key))
        if len(acks) == SEND_CHUNK:
            await asyncio.gather(*acks)
            acks = []
    await asyncio.gather(*acks)


async def publish_prebuilt(producer: AIOKafkaProducer, topic: str, signals: list, sent_at: dict[str, float]) -> None:
    """As fast as possible: the signals go into produce batches per partition first, as the default partitioner
    places them, and only then are handed over. Sent one by one, ~20 µs of this process's Python each would take
    CPU from the worker and the database on the same 2 cores, and the figure would be partly the bench's."""
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    queued: list[tuple[int, object, list[str]]] = []  # (partition, batch, ids of its signals), in sending order
    open_batches: dict[int, tuple[object, list[str]]] = {}
    for signal_id, key, value in signals:
        partition = partitioner(key, partitions, partitions)
        batch, ids = open_batches.get(partition) or open_batches.setdefault(partition, (producer.create_batch(), []))
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: queue it, start the next one
            queued.append((partition, batch, ids))
            batch, ids = open_batches[partition] = (producer.create_batch(), [])
            assert batch.append(key=key, value=value, timestamp=None) is not None, "a signal larger than a batch"
        ids.append(signal_id)
    queued.extend((partition, batch, ids) for partition, (batch, ids) in open_batches.items())
    acks = []
    for partition, batch, ids in queued:
        handed_over = time.monotonic()
        sent_at.update(dict.fromkeys(ids, handed_over))
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*acks)


async def measure(
    name: str,
    bootstrap: str,
    signals: list,
    rate: int | None,
    *,
    send_to: str = SIGNALS_TOPIC,
    read_from: str = EVENTS_TOPIC,
    signal_id: re.Pattern[bytes] = CAUSATION_ID,
) -> Measurement:
    """Sends `signals` to `send_to`; times, per signal, the first record of `read_from` whose `signal_id` names it."""
    result = Measurement(name, len(signals))
    consumer = AIOKafkaConsumer(
        read_from,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=BENCH_FETCH_MAX_WAIT_MS,
    )
    # Paced, a signal goes out at once (aiokafka's default linger): the latency measured is the service's, not the
    # time a signal waits here for company. Unpaced, 5 ms of linger fills batches.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0 if rate else 5, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not consumer.assignment():  # joined before the first send, so no latency includes the group join
            if time.monotonic() > deadline:
                raise RuntimeError(f"no partition of {read_from} assigned to the bench consumer")
            await consumer.getmany(timeout_ms=100)
        collecting = asyncio.create_task(collect_events(consumer, result, signal_id))
        await publish(producer, send_to, signals, result.sent_at, rate)
        await collecting
    finally:
        await producer.stop()
        await consumer.stop()
    return result


async def collect_events(consumer: AIOKafkaConsumer, result: Measurement, signal_id_of: re.Pattern[bytes]) -> None:
    progress_at = time.monotonic()
    while len(result.first_event_at) < result.signals:
        batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
        now = time.monotonic()
        for record in (r for records in batches.values() for r in records):
            match = signal_id_of.search(record.value or b"")
            signal_id = match.group(1).decode() if match else None
            if signal_id not in result.sent_at:
                continue
            result.event_types[dict(record.headers).get("event-type", b"?").decode()] += 1
            if signal_id not in result.first_event_at:
                result.first_event_at[signal_id], progress_at = now, now
        if now - progress_at > STALL_TIMEOUT_S:
            missing = result.signals - len(result.first_event_at)
            raise RuntimeError(f"{result.name}: no new event for {STALL_TIMEOUT_S:.0f}s, {missing} signals unanswered")


async def create_database(server_url: str, name: str) -> str:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def running_worker(database_url: str, bootstrap: str, work_dir: Path, **settings: str) -> Iterator[int]:
    """`campaign-manager run` on the given servers, ready; yields its pid, then SIGTERM (kill if it hangs)."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("campaign-manager")), "run"]  # the venv's console script
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HTTP_PORT": str(port),
        "LOG_LEVEL": WORKER_LOG_LEVEL,
        **settings,
    }
    log_path = work_dir / f"worker-{port}.log"
    with log_path.open("wb") as log:  # cwd: keep the project's .env out of the worker's settings
        worker = subprocess.Popen(command, env=env, cwd=work_dir, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _is_ready(port):
            if worker.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker not ready (exit code {worker.poll()}); its log:\n{tail}")
            time.sleep(0.2)
        yield worker.pid
    finally:
        worker.terminate()
        try:
            worker.wait(WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _is_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:  # refused while starting, or 503 until the consumer has partitions
        return False


# Campaigns a desk accumulates: mostly over (completed, invalidated), one in ten still open, each with its range,
# its position, its signal and one published event, spread over 5,000 symbols and 20,000 portfolios of their own.
_STORED_CAMPAIGNS_SQL = [
    """CREATE TEMP TABLE seed AS SELECT g, gen_random_uuid() AS range_id, gen_random_uuid() AS campaign_id,
        gen_random_uuid() AS signal_id, gen_random_uuid() AS position_id,
        'ST' || lpad((g % 5000)::text, 4, '0') AS symbol, 'stored-' || (g % 20000) AS portfolio_id,
        CASE WHEN g % 10 = 0 THEN 'ACTIVE' WHEN g % 10 < 4 THEN 'INVALIDATED' ELSE 'COMPLETED' END AS status,
        timestamptz '2020-01-01 14:30Z' + (g % 1500) * interval '1 day' AS started
        FROM generate_series(1, $1::int) g""",
    """INSERT INTO trading_ranges (id, symbol, timeframe, start_time, creek, ice, jump, phase)
        SELECT range_id, symbol, '1d', started, 100, 102, 110, 'C' FROM seed""",
    """INSERT INTO processed_signals (signal_id, outcome, campaign_id, source_topic, source_partition, source_offset)
        SELECT signal_id, 'CREATED', campaign_id, 'trade-signals', g % 12, g FROM seed""",
    """INSERT INTO campaigns (id, campaign_id, campaign_id_base, portfolio_id, symbol, timeframe, trading_range_id,
        status, phase, total_risk, total_allocation, current_risk, weighted_avg_entry, total_shares, total_pnl,
        start_date, completed_at, portfolio_value, realized_pnl)
        SELECT campaign_id, symbol || '-' || g, symbol || '-' || g, portfolio_id, symbol, '1d', range_id, status, 'C',
        200, 0.2, CASE WHEN status = 'ACTIVE' THEN 200 ELSE 0 END, 100.5,
        CASE WHEN status = 'ACTIVE' THEN 100 ELSE 0 END, CASE WHEN status = 'COMPLETED' THEN 450 ELSE -200 END,
        started, CASE WHEN status <> 'ACTIVE' THEN started + interval '9 days' END, 100000,
        CASE WHEN status = 'COMPLETED' THEN 450 WHEN status = 'INVALIDATED' THEN -200 ELSE 0 END FROM seed""",
    """INSERT INTO campaign_positions (position_id, campaign_id, signal_id, pattern_type, entry_date, entry_price,
        shares, stop_loss, target_price, current_price, current_pnl, status, allocation_percent, risk_amount,
        entry_shares, realized_pnl, exit_price, closed_at)
        SELECT position_id, campaign_id, signal_id, 'SPRING', started, 100.5, CASE WHEN status = 'ACTIVE' THEN 100
        ELSE 0 END, 98.5, 110, 100.5, 0, CASE WHEN status = 'ACTIVE' THEN 'OPEN' ELSE 'CLOSED' END, 0.2, 200, 100,
        CASE WHEN status = 'COMPLETED' THEN 450 WHEN status = 'INVALIDATED' THEN -200 ELSE 0 END,
        CASE WHEN status = 'COMPLETED' THEN 105 WHEN status = 'INVALIDATED' THEN 98.5 END,
        CASE WHEN status <> 'ACTIVE' THEN started + interval '9 days' END FROM seed""",
    """INSERT INTO outbox (event_id, topic, message_key, payload, aggregate_id, event_type, occurred_at)
        SELECT gen_random_uuid(), 'campaign-events', convert_to(campaign_id::text, 'UTF8'),
        convert_to(repeat('x', 1500), 'UTF8'), campaign_id, 'CampaignCreated', started FROM seed""",
    "INSERT INTO portfolios (portfolio_id) SELECT DISTINCT portfolio_id FROM seed",
    "DROP TABLE seed",
]


async def store_campaigns(database_url: str, count: int) -> None:
    """`count` campaigns already stored, as after months of trading, before the worker starts (it migrates first
    here, so the tables exist)."""
    await upgrade_to_head(database_url)
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            async with driver.transaction():
                await driver.execute(_STORED_CAMPAIGNS_SQL[0], count)
                for statement in _STORED_CAMPAIGNS_SQL[1:]:
                    await driver.execute(statement)
            await driver.execute("VACUUM ANALYZE")
            await driver.execute("CHECKPOINT")  # the load's dirty pages written now, not during the measurement
    finally:
        await engine.dispose()


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (Linux: VmHWM), in MiB; 0 where /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_scenario(
    name: str,
    signals: list,
    rate: int | None,
    server_url: str,
    work_dir: Path,
    workers: int,
    stored_campaigns: int = 0,
    **settings: str,
) -> Measurement:
    print(f"[{name}] fresh broker, database and {workers} worker(s); {len(signals):,} signals ...", flush=True)
    database_url = asyncio.run(create_database(server_url, f"bench_{name}"))
    if stored_campaigns:
        started = time.monotonic()
        asyncio.run(store_campaigns(database_url, stored_campaigns))
        print(f"[{name}] {stored_campaigns:,} campaigns stored in {time.monotonic() - started:.0f}s", flush=True)
    broker = start_embedded_kafka(free_port())
    try:
        with contextlib.ExitStack() as running:
            pids = [
                running.enter_context(running_worker(database_url, broker.bootstrap_servers, work_dir, **settings))
                for _ in range(workers)
            ]
            print(f"[{name}] worker pid(s) {', '.join(map(str, pids))} ready", flush=True)
            result = asyncio.run(measure(name, broker.bootstrap_servers, signals, rate))
            result.worker_peak_rss_mb = max(peak_rss_mb(pid) for pid in pids)
            return result
    finally:
        broker.stop()


def run_broker_hop(signals: list, rate: int) -> Measurement:
    """The floor under the latency figure: the latency run's signals at its rate through a fresh embedded broker
    and straight back to this bench, with no worker between. One hop; a signal's path to its event has two."""
    print(f"[broker_hop] fresh broker, no worker; {len(signals):,} signals at {rate:,}/s ...", flush=True)
    broker = start_embedded_kafka(free_port())
    try:
        return asyncio.run(_measure_hop(broker.bootstrap_servers, signals, rate))
    finally:
        broker.stop()


async def _measure_hop(bootstrap: str, signals: list, rate: int) -> Measurement:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(HOP_TOPIC, num_partitions=TOPIC_PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    return await measure(
        "broker_hop", bootstrap, signals, rate, send_to=HOP_TOPIC, read_from=HOP_TOPIC, signal_id=SIGNAL_ID
    )


def report(results: list[Measurement], workers: int) -> None:
    print(
        f"\n{'scenario':<12}{'signals':>9}{'sending s':>11}{'total s':>9}{'signals/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'RSS MB':>8}  events seen (until every signal had one)"
    )
    for r in results:
        types = ", ".join(f"{t} {n}" for t, n in sorted(r.event_types.items()))
        print(
            f"{r.name:<12}{r.signals:>9,}{r.sending_seconds:>11.1f}{r.seconds:>9.1f}{r.signals_per_s:>11,.0f}"
            f"{r.latency_ms(50):>9.1f}{r.latency_ms(99):>9.1f}{r.latency_ms(100):>9.1f}"
            f"{r.worker_peak_rss_mb:>8.0f}  {types}"
        )
    for r in (r for r in results if r.name in ("latency", "broker_hop")):
        windows = ", ".join(f"{start:.0f}s {p50:.0f}/{p99:.0f}" for start, p50, p99 in r.latency_by_window(WINDOW_S))
        print(f"{r.name}: p50/p99 ms of the signals sent in each {WINDOW_S:.0f} s: {windows}")
    print(
        f"\nworker LOG_LEVEL={WORKER_LOG_LEVEL}: per-signal INFO logs would dominate; fsync on;"
        f" {workers} worker process(es); broker, PostgreSQL, workers and this bench share {os.cpu_count()} cores"
    )


# --- the price scenario ------------------------------------------------------------------------------------------

PRICES_TOPIC = "market-prices"
PRICE_SYMBOLS = 100
PRICE_SLICE_S = 0.02  # the ticks of one slice go out together: one pre-built batch per partition
PRICE_PARTITIONS = TOPIC_PARTITIONS
PRICE_RISK = 1_500  # per Spring, on a 100,000 portfolio: 1.5%, within the 2% per trade


@dataclass
class PriceCampaign:
    """A Spring-only campaign whose stop one tick of the scenario crosses, at its planned moment."""

    symbol: str
    stop: float
    portfolio: str
    signal: dict
    crossing_slice: int
    crossing_price: str
    campaign_id: str | None = None


@dataclass
class PricePlan:
    campaigns: list[PriceCampaign]
    slices: list[dict[int, object]]  # per slice: partition -> aiokafka BatchBuilder, filled before the clock starts
    crossings: dict[tuple[int, int], list[PriceCampaign]]  # (slice, partition) -> campaigns its batch breaks
    ticks: int


@dataclass
class PriceMeasurement:
    ticks: int
    offered_from: float = 0.0
    offered_until: float = 0.0
    absorbed_at: float = 0.0
    stop_sent_at: dict[str, float] = field(default_factory=dict)  # campaign id -> send of the tick through its stop
    invalidated_at: dict[str, float] = field(default_factory=dict)  # campaign id -> arrival of CampaignInvalidated
    event_types: Counter[str] = field(default_factory=Counter)

    @property
    def offered_per_s(self) -> float:
        return self.ticks / (self.offered_until - self.offered_from)

    @property
    def ticks_per_s(self) -> float:
        """Ticks consumed and committed by the worker a second, from the first sent to the last stored offset."""
        return self.ticks / (self.absorbed_at - self.offered_from)

    def stop_latency_ms(self, percent: float) -> float:
        latencies = sorted(self.invalidated_at[c] - sent for c, sent in self.stop_sent_at.items())
        return 1000 * latencies[round(percent / 100 * (len(latencies) - 1))]


def price_plan(
    producer: AIOKafkaProducer, rng: random.Random, rate: int, seconds: float, campaigns_per_symbol: int
) -> PricePlan:
    """100 symbols, each with `campaigns_per_symbol` Spring campaigns whose stops sit 1% apart below 95% of the
    symbol's level. Ticks trade between 97% and 103% of it, above every stop, except one planned tick per
    campaign: at its moment (spread over the run, highest stop first) it dips between that stop and the next."""
    levels: dict[str, float] = {}
    while len(levels) < PRICE_SYMBOLS:
        levels["".join(rng.choices(string.ascii_uppercase, k=rng.choice((3, 4))))] = rng.uniform(20, 400)
    n_slices = round(seconds / PRICE_SLICE_S)
    campaigns = []
    for symbol, level in levels.items():
        for k in range(campaigns_per_symbol):
            entry, stop = round(level, 2), round(level * (0.95 - 0.01 * k), 2)
            range_ = trading_range(
                symbol=symbol,
                start_time=datetime(2024, 1, 2, 14, 30, tzinfo=UTC) + timedelta(days=k),
                creek=f"{level * 0.98:.2f}",
                ice=f"{level:.2f}",
                jump=f"{level * 1.10:.2f}",
            )
            portfolio = f"prices-{symbol}-{k}"
            signal_ = trade_signal(
                range_,
                entry_price=f"{entry:.2f}",
                stop_loss=f"{stop:.2f}",
                position_size=str(int(PRICE_RISK / (entry - stop))),
                portfolio_id=portfolio,
            )
            moment = (k + rng.uniform(0.1, 0.9)) / campaigns_per_symbol
            crossing = f"{stop - level * 0.004:.2f}"  # below this stop, above the next one down (1% lower)
            campaigns.append(PriceCampaign(symbol, stop, portfolio, signal_, int(moment * n_slices), crossing))

    partitioner = DefaultPartitioner()
    partitions = list(range(PRICE_PARTITIONS))
    symbols = list(levels)
    keys = {s: s.encode() for s in symbols}
    partition_of = {s: partitioner(keys[s], partitions, partitions) for s in symbols}
    prefixes = {s: b'{"symbol":"' + keys[s] + b'","price":"' for s in symbols}
    normal = {s: [f"{levels[s] * rng.uniform(0.97, 1.03):.2f}".encode() for _ in range(256)] for s in symbols}
    crossing_ticks: dict[int, list[PriceCampaign]] = {}
    for campaign in campaigns:
        crossing_ticks.setdefault(campaign.crossing_slice, []).append(campaign)

    per_slice = round(rate * PRICE_SLICE_S)
    start = datetime.now(UTC)
    slices: list[dict[int, object]] = []
    crossings: dict[tuple[int, int], list[PriceCampaign]] = {}
    ticks = 0
    for index in range(n_slices):
        time_suffix = b'","time":"' + (start + timedelta(seconds=index * PRICE_SLICE_S)).isoformat().encode() + b'"}'
        batches: dict[int, object] = {}
        chosen = rng.choices(symbols, k=per_slice)
        picks = rng.choices(range(256), k=per_slice)
        planned = [(s, normal[s][i]) for s, i in zip(chosen, picks, strict=True)]
        for campaign in crossing_ticks.get(index, ()):
            planned.insert(rng.randrange(len(planned) + 1), (campaign.symbol, campaign.crossing_price.encode()))
            crossings.setdefault((index, partition_of[campaign.symbol]), []).append(campaign)
        for symbol, price in planned:
            partition = partition_of[symbol]
            if (builder := batches.get(partition)) is None:
                builder = batches[partition] = producer.create_batch()
            appended = builder.append(timestamp=None, key=keys[symbol], value=prefixes[symbol] + price + time_suffix)
            assert appended is not None, "batch full: raise the bench producer's max_batch_size"
        ticks += len(planned)
        slices.append(batches)
    return PricePlan(campaigns, slices, crossings, ticks)


async def measure_prices(
    name: str,
    bootstrap: str,
    database_url: str,
    rng: random.Random,
    rate: int,
    seconds: float,
    campaigns_per_symbol: int,
) -> PriceMeasurement:
    consumer = AIOKafkaConsumer(
        EVENTS_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=BENCH_FETCH_MAX_WAIT_MS,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1024 * 1024)
    engine = create_async_engine(database_url)
    await consumer.start()
    await producer.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no partition of {EVENTS_TOPIC} assigned to the bench consumer")
            await consumer.getmany(timeout_ms=100)

        print(f"[{name}] building {rate * seconds:,.0f} ticks ...", flush=True)
        plan = price_plan(producer, rng, rate, seconds, campaigns_per_symbol)
        result = PriceMeasurement(plan.ticks)
        await open_price_campaigns(producer, consumer, plan.campaigns)
        print(f"[{name}] {len(plan.campaigns)} campaigns open; {plan.ticks:,} ticks over {seconds}s", flush=True)
        collecting = asyncio.create_task(collect_invalidations(consumer, result, len(plan.campaigns)))
        absorbing = asyncio.create_task(wait_absorbed(engine, result))
        await offer_ticks(producer, plan, result)
        await absorbing
        await collecting
    finally:
        await producer.stop()
        await consumer.stop()
        await engine.dispose()
    return result


async def open_price_campaigns(
    producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, campaigns: list[PriceCampaign]
) -> None:
    by_portfolio = {c.portfolio: c for c in campaigns}
    signals = [encode(c.signal) for c in campaigns]
    await asyncio.gather(*[await producer.send(SIGNALS_TOPIC, value, key=key) for key, value in signals])
    progress_at, opened = time.monotonic(), 0
    while opened < len(campaigns):
        for record in (r for records in (await consumer.getmany(timeout_ms=100)).values() for r in records):
            if dict(record.headers).get("event-type") == b"CampaignCreated":
                campaign = json.loads(record.value)["campaign"]
                by_portfolio[campaign["portfolio_id"]].campaign_id = campaign["id"]
                opened, progress_at = opened + 1, time.monotonic()
        if time.monotonic() - progress_at > STALL_TIMEOUT_S:
            raise RuntimeError(f"prices: only {opened} of {len(campaigns)} campaigns opened")


async def offer_ticks(producer: AIOKafkaProducer, plan: PricePlan, result: PriceMeasurement) -> None:
    """Hands each slice's pre-built batches to the producer at the slice's moment (or as soon as it can)."""
    acks: list[asyncio.Future] = []
    started = time.monotonic()
    for index, batches in enumerate(plan.slices):
        if (ahead := started + index * PRICE_SLICE_S - time.monotonic()) > 0:
            await asyncio.sleep(ahead)
        for partition, builder in batches.items():
            acks.append(await producer.send_batch(builder, PRICES_TOPIC, partition=partition))
            queued = time.monotonic()
            for campaign in plan.crossings.get((index, partition), ()):
                result.stop_sent_at[campaign.campaign_id] = queued
        if len(acks) >= 50 * PRICE_PARTITIONS:
            await asyncio.gather(*acks)
            acks = []
    await asyncio.gather(*acks)
    result.offered_from, result.offered_until = started, time.monotonic()


async def wait_absorbed(engine: AsyncEngine, result: PriceMeasurement) -> None:
    """Until the worker's stored offsets of the prices topic account for every tick offered."""
    query = text("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE topic = :topic")
    progress, progress_at = -1, time.monotonic()
    while True:
        async with engine.connect() as connection:
            absorbed = (await connection.execute(query, {"topic": PRICES_TOPIC})).scalar_one()
        now = time.monotonic()
        if absorbed >= result.ticks:
            result.absorbed_at = now
            return
        if absorbed != progress:
            progress, progress_at = absorbed, now
        elif now - progress_at > STALL_TIMEOUT_S:
            raise RuntimeError(f"prices: the worker stored {absorbed:,} of {result.ticks:,} offsets, then stalled")
        await asyncio.sleep(0.05)


async def collect_invalidations(consumer: AIOKafkaConsumer, result: PriceMeasurement, expected: int) -> None:
    progress_at = time.monotonic()
    while len(result.invalidated_at) < expected:
        batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
        now = time.monotonic()
        for record in (r for records in batches.values() for r in records):
            event_type = dict(record.headers).get("event-type", b"?").decode()
            result.event_types[event_type] += 1
            if event_type == "CampaignInvalidated":
                result.invalidated_at[record.key.decode()] = progress_at = now
        if now - progress_at > STALL_TIMEOUT_S:
            missing = expected - len(result.invalidated_at)
            raise RuntimeError(f"prices: no CampaignInvalidated for {STALL_TIMEOUT_S:.0f}s, {missing} campaigns open")


def run_price_scenario(
    name: str,
    rng: random.Random,
    rate: int,
    seconds: float,
    campaigns_per_symbol: int,
    server_url: str,
    work_dir: Path,
) -> PriceMeasurement:
    print(f"[{name}] fresh broker, database and worker; {PRICE_SYMBOLS} symbols, {rate:,} ticks/s ...", flush=True)
    database_url = asyncio.run(create_database(server_url, f"bench_{name}"))
    broker = start_embedded_kafka(free_port())
    try:
        with running_worker(database_url, broker.bootstrap_servers, work_dir) as pid:
            print(f"[{name}] worker pid {pid} ready", flush=True)
            return asyncio.run(
                measure_prices(name, broker.bootstrap_servers, database_url, rng, rate, seconds, campaigns_per_symbol)
            )
    finally:
        broker.stop()


def report_prices(name: str, r: PriceMeasurement) -> None:
    early = [c for c, sent in r.stop_sent_at.items() if r.invalidated_at[c] < sent]
    print(
        f"\n{name}: {r.ticks:,} ticks offered at {r.offered_per_s:,.0f}/s over {r.offered_until - r.offered_from:.1f}s;"
        f" absorbed {r.ticks_per_s:,.0f}/s (all stored {r.absorbed_at - r.offered_until:.2f}s after the last send);"
        f" {len(r.invalidated_at)} stops broken: tick -> CampaignInvalidated p50 {r.stop_latency_ms(50):.1f} ms,"
        f" p99 {r.stop_latency_ms(99):.1f} ms, max {r.stop_latency_ms(100):.1f} ms;"
        f" events {', '.join(f'{t} {n}' for t, n in sorted(r.event_types.items()))}"
    )
    if early:
        print(f"{name}: WARNING {len(early)} campaigns invalidated before their planned tick was sent")


# Latency percentiles saved for the report: a curve, and the tail that matters.
PERCENTILES = (*range(0, 100, 5), 99, 99.9, 100)
WINDOW_S = 2.0  # the latency run's percentiles are also given per window of this many seconds of sending
RESULTS_PATH = Path("test-artifacts/bench/results.json")


def save_results(path: Path, summary: dict, details: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    measured = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count()}
    path.write_text(json.dumps(measured | {"summary": summary, "scenarios": details}, indent=2))
    print(f"figures saved to {path} (`make bench-report` draws them)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m campaign_manager.bench", description=__doc__)
    parser.add_argument("--signals", type=int, default=50_000, help="signals of the throughput scenario")
    parser.add_argument("--latency-rate", type=int, default=1_000, help="signals per second offered")
    parser.add_argument("--latency-seconds", type=int, default=10)
    parser.add_argument("--naive", action="store_true", help="also: throughput with BATCH_MAX_RECORDS=1")
    parser.add_argument(
        "--stored-campaigns",
        type=int,
        default=1_000_000,
        help="campaigns already in the database of a second throughput run (0: no such run)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the consumer group")
    parser.add_argument("--price-rate", type=int, default=100_000, help="ticks per second offered")
    parser.add_argument(
        "--paced-price-rate", type=int, default=50_000, help="ticks per second of a second run, within capacity"
    )
    parser.add_argument("--price-seconds", type=float, default=10.0)
    parser.add_argument("--price-campaigns", type=int, default=5, help="campaigns per symbol whose stop breaks")
    parser.add_argument(
        "--results", type=Path, default=RESULTS_PATH, help="where to save the figures `make bench-report` draws"
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--prices-only", action="store_true", help="only the price scenarios")
    only.add_argument("--signals-only", action="store_true", help="only the signal scenarios")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up as Ctrl-C does

    # name, signals, signals a second offered (None: as fast as possible), worker settings
    scenarios: list[tuple[str, list, int | None, dict]] = [
        ("throughput", signal_mix(args.signals, rng), None, {}),
        ("latency", signal_mix(args.latency_rate * args.latency_seconds, rng), args.latency_rate, {}),
    ]
    if args.naive:  # one transaction per signal
        scenarios.append(("naive", signal_mix(args.signals, rng), None, {"BATCH_MAX_RECORDS": "1"}))
    if args.prices_only:
        scenarios = []
    with contextlib.ExitStack() as cleanup:
        work_dir = Path(tempfile.mkdtemp(prefix="campaign-manager-bench-"))
        cleanup.callback(shutil.rmtree, work_dir, ignore_errors=True)
        postgres = start_embedded_postgres(work_dir / "postgres")
        cleanup.callback(postgres.stop)
        results = [
            run_scenario(*scenario[:3], postgres.url, work_dir, args.workers, **scenario[3]) for scenario in scenarios
        ]
        if not args.prices_only:  # what the broker alone adds to the latency run: its signals, its rate, one hop
            results.append(run_broker_hop(scenarios[1][1], args.latency_rate))
        price_runs = {  # offered beyond what one worker absorbs, then within it
            name: run_price_scenario(name, rng, rate, args.price_seconds, args.price_campaigns, postgres.url, work_dir)
            for name, rate in (("prices", args.price_rate), ("prices_paced", args.paced_price_rate))
            if not args.signals_only
        }
        if args.stored_campaigns and not args.prices_only:
            # The throughput run again, after months of trading; last, as the upkeep of a million fresh rows (the
            # server's background writer and autovacuum) would otherwise run into the scenarios after it.
            stored = signal_mix(args.signals, rng)
            results.append(
                run_scenario(
                    "stored", stored, None, postgres.url, work_dir, args.workers, stored_campaigns=args.stored_campaigns
                )
            )
    prices, paced = price_runs.get("prices"), price_runs.get("prices_paced")
    prices_summary = (
        {}
        if prices is None or paced is None
        else {
            "ticks_per_s": round(prices.ticks_per_s, 1),
            "stop_event_p99_ms": round(prices.stop_latency_ms(99), 1),
            "stop_event_p50_ms": round(prices.stop_latency_ms(50), 1),
            "ticks_offered_per_s": round(prices.offered_per_s, 1),
            "price_ticks": prices.ticks,
            "stop_events": len(prices.invalidated_at),
            "paced_ticks_offered_per_s": round(paced.offered_per_s, 1),
            "paced_ticks_per_s": round(paced.ticks_per_s, 1),
            "paced_stop_event_p99_ms": round(paced.stop_latency_ms(99), 1),
        }
    )
    details = [
        {"name": r.name, "kind": "signals", "per_s": round(r.signals_per_s, 1), "count": r.signals,
         "latency_ms": {str(q): round(r.latency_ms(q), 2) for q in PERCENTILES},
         "latency_windows": [{"from_s": start, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}
                             for start, p50, p99 in r.latency_by_window(WINDOW_S)]}
        for r in results
    ] + [
        {"name": name, "kind": "prices", "per_s": round(run.ticks_per_s, 1), "count": run.ticks,
         "offered_per_s": round(run.offered_per_s, 1),
         "latency_ms": {str(q): round(run.stop_latency_ms(q), 2) for q in PERCENTILES}}
        for name, run in price_runs.items()
    ]  # fmt: skip
    if args.prices_only:
        for name, run in price_runs.items():
            report_prices(name, run)
        save_results(args.results, prices_summary, details)
        print(json.dumps(prices_summary))
        return 0
    throughput, latency = results[0], results[1]
    hop = next(r for r in results if r.name == "broker_hop")
    report(results, args.workers)
    for name, run in price_runs.items():
        report_prices(name, run)
    summary = {
        "signals_per_s": round(throughput.signals_per_s, 1),
        "p50_ms": round(latency.latency_ms(50), 1),
        "p99_ms": round(latency.latency_ms(99), 1),
        "max_ms": round(latency.latency_ms(100), 1),
        "throughput_p50_ms": round(throughput.latency_ms(50), 1),
        "throughput_p99_ms": round(throughput.latency_ms(99), 1),
        "signals": throughput.signals,
        "workers": args.workers,
        "latency_offered_per_s": args.latency_rate,
        "latency_signals": latency.signals,
        "p99_ms_by_window": [round(p99, 1) for _, _, p99 in latency.latency_by_window(WINDOW_S)],
        "broker_hop_p50_ms": round(hop.latency_ms(50), 1),
        "broker_hop_p99_ms": round(hop.latency_ms(99), 1),
        "broker_hop_p99_ms_by_window": [round(p99, 1) for _, _, p99 in hop.latency_by_window(WINDOW_S)],
        "rejected": throughput.event_types["SignalRejected"],
        "worker_peak_rss_mb": round(max(r.worker_peak_rss_mb for r in results), 1),
    }
    if args.stored_campaigns:
        stored = next(r for r in results if r.name == "stored")
        summary["stored_campaigns"] = args.stored_campaigns
        summary["stored_signals_per_s"] = round(stored.signals_per_s, 1)
        summary["stored_ratio"] = round(stored.signals_per_s / throughput.signals_per_s, 2)
    if args.naive:
        summary["naive_signals_per_s"] = round(next(r for r in results if r.name == "naive").signals_per_s, 1)
    summary |= prices_summary
    save_results(args.results, summary, details)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
