"""A dead letter, read back from the DLQ, gives the original record to publish again."""

from __future__ import annotations

from campaign_manager.messaging.dlq import DeadLetter
from campaign_manager.service.outgoing import dead_letter_message
from campaign_manager.service.records import ConsumedRecord


def dead_letter_as_consumed(record: ConsumedRecord, dlq_offset: int = 7) -> DeadLetter:
    """What the DLQ holds after the outbox relay published the dead letter of `record`."""
    message = dead_letter_message(
        record, reason="entry_price: Input should be greater than 0", error_type="ValidationError", dlq_topic="t.dlq"
    )
    headers = tuple((name, value.encode()) for name, value in message.headers.items())
    return DeadLetter("t.dlq", 2, dlq_offset, message.key, message.payload, headers)


def test_replay_restores_the_original_key_value_and_headers_without_the_dead_letter_ones() -> None:
    original = ConsumedRecord(
        topic="trade-signals",
        partition=3,
        offset=41,
        key=b"range-1",
        value=b'{"entry_price": "-1"}',
        headers=(("traceparent", b"00-abc-01"), ("content-type", b"application/json")),
    )

    letter = dead_letter_as_consumed(original)

    assert letter.original_topic == "trade-signals"
    assert (letter.key, letter.value) == (original.key, original.value)
    assert letter.replay_headers == list(original.headers)


def test_the_description_names_where_it_was_where_it_goes_and_why() -> None:
    letter = dead_letter_as_consumed(ConsumedRecord("trade-signals", 0, 5, b"range-1", b"{}"))

    assert letter.describe() == (
        "t.dlq[2]@7 -> trade-signals key=range-1 ValidationError: entry_price: Input should be greater than 0"
    )


def test_a_record_without_an_origin_header_has_nowhere_to_go() -> None:
    letter = DeadLetter("t.dlq", 0, 0, None, b"{}", (("x-dlq-reason", b"?"),))

    assert letter.original_topic is None
    assert letter.error_type == "unknown"
    assert letter.replay_headers == []
