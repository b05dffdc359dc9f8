"""Runs a topic's batch handler until it commits: the retry and poison-message policy of every consumer.

- Database unavailable: wait and retry the same batch, for as long as it takes (never dead-letter: not the data's
  fault). The partition simply pauses.
- Lost race (unique index, version conflict, deadlock): retry from a fresh read, a bounded number of times.
- Anything else is a bug or data the database refuses: retry the batch a few times, then apply its records one
  at a time; a record that still fails is dead-lettered with the error as its reason, and the partition moves on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import structlog

from campaign_manager.persistence.store import Database, KeptConnection
from campaign_manager.service.batches import ApplyBatch, BatchResult, InvalidRecord, ParsedRecord
from campaign_manager.service.retry import backoff_seconds, is_conflict, is_unavailable

log = structlog.get_logger(__name__)

MAX_CONFLICT_RETRIES = 20  # races resolve on the next read; 20 is far beyond what two workers produce
MAX_FAILED_ATTEMPTS = 3  # a deterministic failure fails the same way every time; 3 rules out flukes
# A connection attempt is cheap: retrying every 2 s at most means a returning database is back at work within ~2 s.
UNAVAILABLE_RETRY_CAP_S = 2.0


@dataclass
class BatchProcessor:
    database: Database
    apply: ApplyBatch
    on_committed: Callable[[str, BatchResult], None] = lambda topic, result: None
    # What one record is, for the log: `signal` gives `signal_processed` lines with a `signal_id`.
    record_name: str = "message"
    # Batches come one after another: each on the same connection, kept between them.
    connection: KeptConnection = field(init=False)

    def __post_init__(self) -> None:
        self.connection = self.database.kept_connection()

    async def process(self, topic: str, records: Sequence[ParsedRecord]) -> BatchResult:
        """Applies the batch exactly once; returns only after it is committed."""
        try:
            return await self._commit_with_retries(topic, records)
        except _GaveUp:
            log.error("batch_failed_isolating_records", topic=topic, records=len(records))
        results = [await self._process_alone(topic, record) for record in records]
        merged = BatchResult()
        for result in results:
            merged.outcomes += result.outcomes
            merged.dead_letters += result.dead_letters
            merged.allocation_warnings += result.allocation_warnings
            merged.refused_prices += result.refused_prices
            merged.next_offsets.update(result.next_offsets)
            merged.events_written += result.events_written
        return merged

    async def _process_alone(self, topic: str, record: ParsedRecord) -> BatchResult:
        try:
            return await self._commit_with_retries(topic, [record])
        except _GaveUp as gave_up:
            reason = f"processing failed {MAX_FAILED_ATTEMPTS} times: {type(gave_up.error).__name__}: {gave_up.error}"
            poison = InvalidRecord(record.record, reason[:1000], "ProcessingError")
        try:
            return await self._commit_with_retries(topic, [poison])
        except _GaveUp:
            # Not even its dead letter could be stored: try once more without the record's own headers.
            bare = InvalidRecord(replace(poison.record, headers=()), poison.reason, poison.error_type)
            return await self._commit_with_retries(topic, [bare])

    async def _commit_with_retries(self, topic: str, records: Sequence[ParsedRecord]) -> BatchResult:
        conflicts = failures = unavailable = 0
        started = time.perf_counter()
        while True:
            try:
                async with self.connection.transaction() as store:
                    result = await self.apply(store, topic, records)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_unavailable(error):
                    unavailable += 1
                    log.warning("database_unavailable_retrying", attempt=unavailable, error=str(error)[:300])
                    await asyncio.sleep(backoff_seconds(unavailable, cap=UNAVAILABLE_RETRY_CAP_S))
                    continue
                if is_conflict(error) and conflicts < MAX_CONFLICT_RETRIES:
                    conflicts += 1
                    log.info("write_conflict_retrying", attempt=conflicts, error=str(error)[:300])
                    await asyncio.sleep(backoff_seconds(conflicts, base=0.005, cap=0.5))
                    continue
                failures += 1
                log.error("batch_attempt_failed", attempt=failures, records=len(records), exc_info=error)
                if failures >= MAX_FAILED_ATTEMPTS:
                    raise _GaveUp(error) from error
                await asyncio.sleep(backoff_seconds(failures))
                continue
            log.debug(
                "batch_committed",
                records=len(records),
                applied=len(result.outcomes),
                events=result.events_written,
                milliseconds=round((time.perf_counter() - started) * 1000, 1),
            )
            self._log(topic, result)
            self.on_committed(topic, result)
            return result

    def _log(self, topic: str, result: BatchResult) -> None:
        event, id_field = f"{self.record_name}_processed", f"{self.record_name}_id"
        # A line per record: at a level above INFO not even built (its fields cost ~4% of the worker's CPU).
        for outcome in result.outcomes if log.is_enabled_for(logging.INFO) else ():
            log.info(
                event,
                topic=topic,
                outcome=outcome.outcome,
                **{id_field: str(outcome.message_id) if outcome.message_id else None},
                campaign_id=str(outcome.campaign_id) if outcome.campaign_id else None,
                human_campaign_id=outcome.human_campaign_id,
                correlation_id=outcome.correlation_id,
                kind=outcome.kind,
                reason=outcome.reason,
            )
        for campaign, allocation in result.allocation_warnings:
            log.warning(
                "campaign_allocation_near_limit",
                campaign_id=str(campaign.id),
                human_campaign_id=campaign.campaign_id,
                total_allocation=str(allocation),
                limit="5.0",
            )
        for campaign, price, reason in result.refused_prices:
            log.warning(
                "market_price_refused",
                campaign_id=str(campaign.id),
                human_campaign_id=campaign.campaign_id,
                symbol=campaign.symbol,
                price=str(price),
                reason=reason,
            )
        for dead in result.dead_letters:
            log.warning(
                "record_dead_lettered",
                topic=dead.record.topic,
                partition=dead.record.partition,
                offset=dead.record.offset,
                reason=dead.reason,
                error_type=dead.error_type,
            )


class _GaveUp(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
