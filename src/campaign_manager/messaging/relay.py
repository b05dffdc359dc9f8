"""The outbox relay: publishes committed outbox messages in id order and stamps them published.

Exactly one worker relays at a time: the holder of a PostgreSQL advisory lock. That keeps events of one campaign
in commit order (two transactions that touch one campaign are serialised by its row lock, so the later one's
outbox ids are larger). The others wait to take over if the holder's connection drops.

Delivery is at-least-once: a crash between the broker's acknowledgement and the stamp republishes a few messages,
which consumers drop by `event_id`. If the broker is down, messages wait in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from campaign_manager.persistence.store import Database
from campaign_manager.service.retry import backoff_seconds

log = structlog.get_logger(__name__)

RELAY_LOCK_SQL = "hashtext('campaign-manager-outbox-relay')"
NOTIFY_CHANNEL = "campaign_outbox"

# Sends one message without waiting for the broker; the returned future resolves on the broker's acknowledgement.
Send = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable["asyncio.Future[Any]"]]

EVENT_SOURCE = b"campaign-manager"
JSON_CONTENT_TYPE = b"application/json"


def event_headers(event_id: str, event_type: str, occurred_at: datetime, subject: str) -> list[tuple[str, bytes]]:
    """A campaign event's headers: its type and id for plain consumers, and the same as CloudEvents 1.0 attributes
    in Kafka binary mode (`ce_*`), with the JSON value as the event data."""
    event_id_bytes, event_type_bytes = event_id.encode(), event_type.encode()
    return [
        ("content-type", JSON_CONTENT_TYPE),
        ("event-type", event_type_bytes),
        ("event-id", event_id_bytes),
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id_bytes),
        ("ce_type", b"campaign-manager." + event_type_bytes),
        ("ce_source", EVENT_SOURCE),
        ("ce_time", occurred_at.isoformat().replace("+00:00", "Z").encode()),
        ("ce_subject", subject.encode()),
    ]


def _headers(row: Any) -> list[tuple[str, bytes]]:
    if row["headers"] is not None:  # a dead letter: its own headers, as stored
        return [(name, value.encode()) for name, value in json.loads(row["headers"]).items()]
    subject = str(row["aggregate_id"]) if row["aggregate_id"] else (row["message_key"] or b"").decode()
    return event_headers(str(row["event_id"]), row["event_type"], row["occurred_at"], subject)


class OutboxRelay:
    def __init__(self, database: Database, send: Send, *, batch_size: int, poll_interval_s: float) -> None:
        self.database = database
        self.send = send
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        """Something was just committed to the outbox: look now rather than at the next poll."""
        self._wakeup.set()

    async def run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                async with self.database.engine.connect() as connection:
                    if await self._lead(connection):
                        attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - database or broker outage: wait, then try again
                attempt += 1
                log.warning("outbox_relay_interrupted", attempt=attempt, error=str(error)[:300])
                await self._sleep(backoff_seconds(attempt))

    def stop(self) -> None:
        """Publish what is already committed, then leave `run` (the caller bounds how long it waits)."""
        self._stopping.set()
        self._wakeup.set()

    async def _lead(self, connection: AsyncConnection) -> bool:
        # Plain asyncpg on this dedicated connection, in autocommit: the advisory lock is held by the session,
        # and each statement below commits on its own.
        driver = (await connection.get_raw_connection()).driver_connection
        if not await driver.fetchval(f"SELECT pg_try_advisory_lock({RELAY_LOCK_SQL})"):
            await self._sleep(1.0)  # another worker relays; check again for a takeover
            return False
        log.info("outbox_relay_leading")

        def on_notify(*_: object) -> None:
            self._wakeup.set()

        await driver.add_listener(NOTIFY_CHANNEL, on_notify)
        try:
            while not self._stopping.is_set():
                self._wakeup.clear()
                while await self._publish_batch(driver) == self.batch_size:
                    pass
                if self._stopping.is_set():
                    break
                await self._sleep(self.poll_interval_s)
            # Flush what committed before the stop was asked for.
            while await self._publish_batch(driver) == self.batch_size:
                pass
        finally:
            with contextlib.suppress(Exception):
                await driver.remove_listener(NOTIFY_CHANNEL, on_notify)
            with contextlib.suppress(Exception):
                await driver.execute(f"SELECT pg_advisory_unlock({RELAY_LOCK_SQL})")
        return True

    async def _publish_batch(self, driver: Any) -> int:
        started = time.perf_counter()
        rows = await driver.fetch(
            "SELECT id, topic, message_key, payload, headers::text AS headers, event_id, event_type, occurred_at,"
            " aggregate_id FROM outbox"
            " WHERE published_at IS NULL ORDER BY id LIMIT $1",
            self.batch_size,
        )
        if not rows:
            return 0
        # Hand every message to the producer first, then wait for all acknowledgements: one round of waiting
        # per batch, not per message.
        pending = [await self.send(row["topic"], row["message_key"], row["payload"], _headers(row)) for row in rows]
        selected = time.perf_counter()
        results = await asyncio.gather(*pending, return_exceptions=True)
        acknowledged = time.perf_counter()
        delivered = [
            row["id"] for row, result in zip(rows, results, strict=True) if not isinstance(result, BaseException)
        ]
        if delivered:
            await driver.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", delivered)
            log.debug(
                "outbox_published",
                messages=len(delivered),
                select_ms=round((selected - started) * 1000, 1),
                acknowledge_ms=round((acknowledged - selected) * 1000, 1),
                mark_ms=round((time.perf_counter() - acknowledged) * 1000, 1),
            )
        failed = len(rows) - len(delivered)
        if failed:
            first_error = next(r for r in results if isinstance(r, BaseException))
            raise RuntimeError(f"{failed} of {len(rows)} outbox messages not acknowledged: {first_error!r}")
        return len(rows)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)
