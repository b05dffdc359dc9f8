"""Fault injection: real worker processes against real PostgreSQL and a real broker, with faults injected into
them; every outcome is read from the database and the topics. Each scenario comes in two sizes: `smoke` runs in
`make test`, `full` (marked `chaos`) in `make chaos`. A table of the results is printed at the end of the run and
written to test-artifacts/."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer
from tests.chaos.harness import ChaosDeployment, ControlledBroker, ControlledPostgres, Tally, WorkerGroup
from tests.e2e.conftest import ARTIFACTS
from tests.servers import embedded_kafka, embedded_postgres

from campaign_manager.persistence.store import Database

RESULTS_FILE = "chaos-results.md"
SMOKE_RESULTS_FILE = "chaos-smoke-results.md"


def sizes(smoke: Any, full: Any, *, smoke_timeout_s: int, full_timeout_s: int) -> list[Any]:
    """The two sizes of a scenario as parameters: `smoke` for `make test`, `full` (marked `chaos`) for `make chaos`.
    Each has a timeout, so a hang fails the scenario instead of blocking the run."""
    return [
        pytest.param(smoke, id="smoke", marks=[pytest.mark.e2e, pytest.mark.timeout(smoke_timeout_s)]),
        pytest.param(full, id="full", marks=[pytest.mark.chaos, pytest.mark.timeout(full_timeout_s)]),
    ]


# --- the results table -----------------------------------------------------------------------------------------


@dataclass
class ChaosResult:
    """One row of the results table; a scenario fills it in as it goes, so a failure still shows what it saw."""

    scenario: str
    size: str
    parameters: str = ""
    sent: int | None = None
    applied: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    events: int | None = None  # written to the outbox
    published: int | None = None  # distinct events read back from the events topic
    dead_letters: int | None = None
    recovery: str = ""
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    duration_s: float | None = None
    outcome: str = "not run"

    def record(self, tally: Tally) -> None:
        self.sent, self.applied, self.lost, self.duplicated = tally.sent, tally.applied, tally.lost, tally.duplicated
        self.events, self.published, self.dead_letters = tally.events, tally.published, tally.dead_letters
        if tally.redelivered:
            self.notes.append(f"{tally.redelivered:,} events delivered twice (at least once)")

    def row(self) -> list[str]:
        def n(value: int | None) -> str:
            return "" if value is None else f"{value:,}"

        events = "" if self.events is None else f"{n(self.events)} / {n(self.published)}"
        duration = "" if self.duration_s is None else f"{self.duration_s:.0f} s"
        return [
            self.scenario,
            self.size,
            self.parameters,
            n(self.sent),
            n(self.applied),
            n(self.lost),
            n(self.duplicated),
            events,
            n(self.dead_letters),
            self.recovery,
            duration,
            self.outcome,
            "; ".join(self.notes),
        ]


HEADER = [
    "scenario",
    "size",
    "parameters",
    "sent",
    "applied",
    "lost",
    "duplicated",
    "events outbox / published",
    "dead letters",
    "recovery",
    "duration",
    "result",
    "notes",
]
RESULTS: list[ChaosResult] = []
RESULT_KEY = pytest.StashKey[ChaosResult]()


@pytest.fixture
def chaos_result(request: pytest.FixtureRequest) -> ChaosResult:
    scenario = request.node.originalname.removeprefix("test_").replace("_", " ")
    size = "full" if request.node.get_closest_marker("chaos") else "smoke"
    result = ChaosResult(scenario=getattr(request.module, "SCENARIO", scenario), size=size)
    RESULTS.append(result)
    request.node.stash[RESULT_KEY] = result
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    result = item.stash.get(RESULT_KEY, None)
    if result is not None:
        if report.failed and result.outcome != "FAIL":
            result.outcome = "FAIL" if report.when == "call" else f"FAIL ({report.when})"
        elif report.when == "call" and report.passed:
            result.outcome = "pass"
        if report.when == "call":
            result.duration_s = time.monotonic() - result.started
    return report


def render(results: list[ChaosResult]) -> list[str]:
    """The results as a Markdown table."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"

    return [line(HEADER), "|" + "---|" * len(HEADER), *(line(r.row()) for r in results)]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not RESULTS:
        return
    lines = render(RESULTS)
    terminalreporter.write_sep("=", "fault injection results")
    for line in lines:
        terminalreporter.write_line(line)
    ARTIFACTS.mkdir(exist_ok=True)
    full = any(r.size == "full" for r in RESULTS)
    path = ARTIFACTS / (RESULTS_FILE if full else SMOKE_RESULTS_FILE)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(f"# Fault injection results ({stamp})\n\n" + "\n".join(lines) + "\n")
    terminalreporter.write_line(f"(also in {path.relative_to(ARTIFACTS.parent)})")


# --- servers and workers ---------------------------------------------------------------------------------------


@pytest.fixture
def own_postgres() -> Iterator[ControlledPostgres]:
    """A PostgreSQL of the scenario's own, to stop or pause without disturbing any other test."""
    with embedded_postgres() as server:
        controlled = ControlledPostgres(server)
        try:
            yield controlled
        finally:
            controlled.restore()


@pytest.fixture
def own_broker() -> Iterator[ControlledBroker]:
    """A broker process of the scenario's own, to freeze without disturbing any other test."""
    with embedded_kafka() as broker:
        controlled = ControlledBroker(broker)
        try:
            yield controlled
        finally:
            controlled.restore()


def make_deployment(database_url: str, bootstrap_servers: str, *, partitions: int) -> ChaosDeployment:
    suffix = uuid4().hex[:8]
    return ChaosDeployment(
        database_url=database_url,
        bootstrap_servers=bootstrap_servers,
        signals_topic=f"trade-signals-{suffix}",
        events_topic=f"campaign-events-{suffix}",
        group_id=f"chaos-{suffix}",
        partitions=partitions,
        trading_ranges_topic=f"trading-ranges-{suffix}",
        position_events_topic=f"position-events-{suffix}",
        market_prices_topic=f"market-prices-{suffix}",
    )


@pytest.fixture
def worker_group() -> Iterator[Callable[[ChaosDeployment], WorkerGroup]]:
    """Makes a group of worker processes for a deployment; every one still running is stopped afterwards."""
    groups: list[WorkerGroup] = []

    def make(deployment: ChaosDeployment) -> WorkerGroup:
        group = WorkerGroup(deployment)
        groups.append(group)
        return group

    yield make
    for group in groups:
        group.stop_all()


@pytest.fixture
async def chaos_producer() -> AsyncIterator[Callable[[str], Any]]:
    """Producers for any broker, started on first use and stopped afterwards."""
    producers: dict[str, AIOKafkaProducer] = {}

    async def producer_for(bootstrap_servers: str) -> AIOKafkaProducer:
        if bootstrap_servers not in producers:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
            await producer.start()
            producers[bootstrap_servers] = producer
        return producers[bootstrap_servers]

    yield producer_for
    for producer in producers.values():
        await producer.stop()


@pytest.fixture
async def databases() -> AsyncIterator[Callable[[str], Database]]:
    """Connections for the scenario's checks, disposed of afterwards."""
    opened: list[Database] = []

    def connect(url: str) -> Database:
        database = Database.connect(url, pool_size=2, max_overflow=2)
        opened.append(database)
        return database

    yield connect
    for database in opened:
        await database.dispose()
