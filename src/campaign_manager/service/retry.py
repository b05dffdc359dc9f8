"""Which failures are worth retrying, and how long to wait before the next try."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import exc as sa_exc

from campaign_manager.persistence.store import VersionConflict

# SQLSTATEs of a lost race: the retry reads fresh state and usually succeeds at once.
CONFLICT_STATES = {"40001", "40P01", "23505", "55P03"}
# SQLSTATE classes that are never the data's fault, so never a reason to dead-letter: an unavailable server
# (08 connection, 53 resources, 57 shutdown) and a schema that does not match the code (42 undefined table or
# column, 3F schema, 0A unsupported, 58/XX system). Wait and retry, for as long as it takes.
UNAVAILABLE_STATE_CLASSES = ("08", "53", "57", "42", "3F", "0A", "58", "XX")


def _sqlstate(error: BaseException) -> str:
    # The unit of work talks to asyncpg directly (its errors carry `sqlstate`); SQLAlchemy wraps the same errors
    # as DBAPIError with the driver's error in `orig`.
    source = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    return str(getattr(source, "sqlstate", None) or getattr(source, "pgcode", None) or "")


def is_conflict(error: BaseException) -> bool:
    return isinstance(error, VersionConflict) or _sqlstate(error) in CONFLICT_STATES


def is_unavailable(error: BaseException) -> bool:
    """The database (or the network to it) is down or restarting, or its schema is wrong: never the data's fault."""
    if isinstance(error, (OSError, ConnectionError, asyncio.TimeoutError, sa_exc.TimeoutError)):
        return True
    if isinstance(error, asyncpg.PostgresError):
        return _sqlstate(error).startswith(UNAVAILABLE_STATE_CLASSES)
    if isinstance(error, asyncpg.InterfaceError):  # client side: "connection is closed", "... was released"
        return "connection" in str(error).lower()
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, sa_exc.InterfaceError):
            return True
        state = _sqlstate(error)
        if state.startswith(UNAVAILABLE_STATE_CLASSES):
            return True
        # asyncpg reports a dropped connection without a SQLSTATE.
        return isinstance(error.orig, (OSError, ConnectionError)) or (
            "connection" in str(error.orig).lower() and not state
        )
    return False


def backoff_seconds(attempt: int, *, base: float = 0.05, cap: float = 5.0) -> float:
    """Exponential backoff: 50 ms, 100 ms, ... capped at 5 s so recovery is noticed within seconds."""
    return min(cap, base * (2 ** min(attempt, 16)))
