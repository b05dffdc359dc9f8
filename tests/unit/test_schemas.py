"""The documents committed in `schemas/` are the ones the wire contracts, the subscriber and publishers, and the
HTTP routes generate today."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign_manager.schemas import contract_schemas, documents, render

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_every_contract_has_a_schema_file() -> None:
    assert set(contract_schemas()) == {
        "trade-signal.schema.json",
        "position-event.schema.json",
        "trading-range-event.schema.json",
        "market-price.schema.json",
        "campaign-event.schema.json",
    }


def test_the_asyncapi_and_openapi_documents_are_committed_beside_the_schemas() -> None:
    assert set(documents()) == set(contract_schemas()) | {"asyncapi.json", "openapi.json"}


@pytest.fixture(scope="module")
def generated() -> dict[str, dict]:
    return documents()


@pytest.mark.parametrize("name", sorted(set(contract_schemas()) | {"asyncapi.json", "openapi.json"}))
def test_committed_document_matches_what_the_code_generates(name: str, generated: dict[str, dict]) -> None:
    committed = SCHEMAS / name
    hint = f"schemas/{name} is out of date with the code: run `make schemas` and commit the result"

    assert committed.is_file(), hint
    assert committed.read_text() == render(generated[name]), hint
