"""The retry policy tells a lost race and an unavailable database from a failure, whoever raised the error."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from campaign_manager.persistence.store import VersionConflict
from campaign_manager.service.retry import backoff_seconds, is_conflict, is_unavailable


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        asyncpg.exceptions.SerializationError("could not serialize"),
        VersionConflict("campaigns changed concurrently"),
        sa_exc.DBAPIError("INSERT", {}, asyncpg.exceptions.UniqueViolationError("duplicate key")),
    ],
)
def test_a_lost_race_is_a_conflict_whether_asyncpg_or_sqlalchemy_raised_it(error: Exception) -> None:
    assert is_conflict(error)
    assert not is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.UndefinedTableError('relation "campaigns" does not exist'),
        asyncpg.exceptions.InterfaceError("cannot perform operation: connection is closed"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ],
)
def test_an_unavailable_database_is_waited_for_not_blamed_on_the_data(error: Exception) -> None:
    assert is_unavailable(error)
    assert not is_conflict(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CheckViolationError('new row violates check constraint "ck_positions_shares"'),
        asyncpg.exceptions.NumericValueOutOfRangeError("numeric field overflow"),
        asyncpg.exceptions.InterfaceError("the server expects 3 arguments for this query, 2 were passed"),
        RuntimeError("a bug"),
    ],
)
def test_an_error_of_the_data_or_the_code_is_neither(error: Exception) -> None:
    assert not is_conflict(error)
    assert not is_unavailable(error)


def test_backoff_doubles_up_to_five_seconds() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [0.1, 0.2, 0.4]
    assert backoff_seconds(50) == 5.0
