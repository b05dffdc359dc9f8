"""`make bench`: throughput and latency of the whole path, `trade-signals` -> worker -> `campaign-events`.

Each scenario gets its own embedded broker (Tansu keeps everything in memory and never frees it), its own database
in one embedded PostgreSQL (fsync on) and its own `campaign-manager run` process, so scenarios stay independent.
Latency of a signal = arrival of its first event here - its send here (one process: monotonic clock).
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
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from campaign_manager.embedded import free_port, start_embedded_kafka, start_embedded_postgres
from campaign_manager.examples import encode, trade_signal, trading_range

SIGNALS_TOPIC, EVENTS_TOPIC = "trade-signals", "campaign-events"
READY_TIMEOUT_S = 60.0
STALL_TIMEOUT_S = 60.0  # give up when no new signal got its event for this long
WORKER_STOP_TIMEOUT_S = 30.0  # the worker flushes its outbox on SIGTERM
SEND_CHUNK = 2_000  # acknowledgements awaited together: bounds what is in flight
WORKER_LOG_LEVEL = "WARNING"  # per-signal INFO lines would dominate the worker's time
# Tansu parks a fetch for its whole max wait even when records arrive meanwhile (Kafka answers at once): with
# aiokafka's 500 ms default our own reader would add ~200 ms to every latency.
BENCH_FETCH_MAX_WAIT_MS = 10
CAUSATION_ID = re.compile(rb'"causation_id":"([0-9a-f-]{36})"')  # cheaper than parsing every ~2 kB event

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
# A desk's many portfolios (strategies, accounts): about two ranges each, so the 10% heat limit bites now and then,
# as it would on a real desk, instead of rejecting nearly everything on a few crowded portfolios.
SIGNALS_PER_PORTFOLIO = 6


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
        latencies = sorted(self.first_event_at[s] - sent for s, sent in self.sent_at.items())
        return 1000 * latencies[round(percent / 100 * (len(latencies) - 1))]


async def publish(producer: AIOKafkaProducer, signals: list, sent_at: dict[str, float], rate: int | None) -> None:
    """Sends without awaiting each acknowledgement: `rate` signals a second, or as fast as possible if None."""
    started, acks = time.monotonic(), []
    for index, (signal_id, key, value) in enumerate(signals):
        if rate and (ahead := started + index / rate - time.monotonic()) > 0:
            await asyncio.sleep(ahead)
        sent_at[signal_id] = time.monotonic()
        acks.append(await producer.send(SIGNALS_TOPIC, value, key=key))
        if len(acks) == SEND_CHUNK:
            await asyncio.gather(*acks)
            acks = []
    await asyncio.gather(*acks)


async def measure(name: str, bootstrap: str, signals: list, rate: int | None) -> Measurement:
    result = Measurement(name, len(signals))
    consumer = AIOKafkaConsumer(
        EVENTS_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=BENCH_FETCH_MAX_WAIT_MS,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not consumer.assignment():  # joined before the first send, so no latency includes the group join
            if time.monotonic() > deadline:
                raise RuntimeError(f"no partition of {EVENTS_TOPIC} assigned to the bench consumer")
            await consumer.getmany(timeout_ms=100)
        collecting = asyncio.create_task(collect_events(consumer, result))
        await publish(producer, signals, result.sent_at, rate)
        await collecting
    finally:
        await producer.stop()
        await consumer.stop()
    return result


async def collect_events(consumer: AIOKafkaConsumer, result: Measurement) -> None:
    progress_at = time.monotonic()
    while len(result.first_event_at) < result.signals:
        batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
        now = time.monotonic()
        for record in (r for records in batches.values() for r in records):
            match = CAUSATION_ID.search(record.value or b"")
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


def run_scenario(
    name: str, signals: list, rate: int | None, server_url: str, work_dir: Path, workers: int, **settings: str
) -> Measurement:
    print(f"[{name}] fresh broker, database and {workers} worker(s); {len(signals):,} signals ...", flush=True)
    database_url = asyncio.run(create_database(server_url, f"bench_{name}"))
    broker = start_embedded_kafka(free_port())
    try:
        with contextlib.ExitStack() as running:
            pids = [
                running.enter_context(running_worker(database_url, broker.bootstrap_servers, work_dir, **settings))
                for _ in range(workers)
            ]
            print(f"[{name}] worker pid(s) {', '.join(map(str, pids))} ready", flush=True)
            return asyncio.run(measure(name, broker.bootstrap_servers, signals, rate))
    finally:
        broker.stop()


def report(results: list[Measurement], workers: int) -> None:
    print(
        f"\n{'scenario':<12}{'signals':>9}{'sending s':>11}{'total s':>9}{'signals/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}  events seen (until every signal had one)"
    )
    for r in results:
        types = ", ".join(f"{t} {n}" for t, n in sorted(r.event_types.items()))
        print(
            f"{r.name:<12}{r.signals:>9,}{r.sending_seconds:>11.1f}{r.seconds:>9.1f}{r.signals_per_s:>11,.0f}"
            f"{r.latency_ms(50):>9.1f}{r.latency_ms(99):>9.1f}{r.latency_ms(100):>9.1f}  {types}"
        )
    print(
        f"\nworker LOG_LEVEL={WORKER_LOG_LEVEL}: per-signal INFO logs would dominate; fsync on;"
        f" {workers} worker process(es); broker, PostgreSQL, workers and this bench share {os.cpu_count()} cores"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m campaign_manager.bench", description=__doc__)
    parser.add_argument("--signals", type=int, default=50_000, help="signals of the throughput scenario")
    parser.add_argument("--latency-rate", type=int, default=1_000, help="signals per second offered")
    parser.add_argument("--latency-seconds", type=int, default=10)
    parser.add_argument("--naive", action="store_true", help="also: throughput with BATCH_MAX_RECORDS=1")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the consumer group")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up as Ctrl-C does

    scenarios = [  # name, signals, signals a second offered (None: as fast as possible), worker settings
        ("throughput", signal_mix(args.signals, rng), None, {}),
        ("latency", signal_mix(args.latency_rate * args.latency_seconds, rng), args.latency_rate, {}),
    ]
    if args.naive:  # one transaction per signal
        scenarios.append(("naive", signal_mix(args.signals, rng), None, {"BATCH_MAX_RECORDS": "1"}))
    with contextlib.ExitStack() as cleanup:
        work_dir = Path(tempfile.mkdtemp(prefix="campaign-manager-bench-"))
        cleanup.callback(shutil.rmtree, work_dir, ignore_errors=True)
        postgres = start_embedded_postgres(work_dir / "postgres")
        cleanup.callback(postgres.stop)
        results = [
            run_scenario(*scenario[:3], postgres.url, work_dir, args.workers, **scenario[3]) for scenario in scenarios
        ]
    throughput, latency = results[0], results[1]
    report(results, args.workers)
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
        "rejected": throughput.event_types["SignalRejected"],
    }
    if args.naive:
        summary["naive_signals_per_s"] = round(results[2].signals_per_s, 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
