"""Turns a raw record into a validated message of its topic's contract, or into a specific reason it can't be one."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from campaign_manager.contracts import loads_exact
from campaign_manager.service.batches import InvalidRecord, ParsedRecord, ValidRecord
from campaign_manager.service.records import ConsumedRecord

MAX_REASON_LENGTH = 1000


def describe_validation_error(error: ValidationError) -> str:
    """`field.path: message` for every problem, e.g. `entry_price: Input should be greater than 0`."""
    parts = []
    for problem in error.errors(include_url=False):
        location = ".".join(str(part) for part in problem["loc"]) or "value"
        parts.append(f"{location}: {problem['msg']}")
    return "; ".join(parts)[:MAX_REASON_LENGTH]


def parse_record(record: ConsumedRecord, contract: type[BaseModel]) -> ParsedRecord:
    if record.value is None:
        return InvalidRecord(record, "message has no value (tombstone)", "EmptyMessage")
    if not record.value.strip():
        return InvalidRecord(record, "message value is empty", "EmptyMessage")
    try:
        document = loads_exact(record.value)
    except UnicodeDecodeError as exc:
        return InvalidRecord(
            record, f"message value is not UTF-8 text: {exc.reason} at byte {exc.start}", "DecodeError"
        )
    except ValueError as exc:  # json.JSONDecodeError and refused NaN/Infinity
        return InvalidRecord(record, f"message value is not valid JSON: {exc}"[:MAX_REASON_LENGTH], "DecodeError")
    except RecursionError:
        return InvalidRecord(record, "message value is nested too deeply", "DecodeError")
    if not isinstance(document, dict):
        return InvalidRecord(
            record, f"message value must be a JSON object, not {type(document).__name__}", "ValidationError"
        )
    try:
        return ValidRecord(record, contract.model_validate(document))
    except ValidationError as exc:
        return InvalidRecord(record, describe_validation_error(exc), "ValidationError")
