"""The JSON Schemas committed in `schemas/` are the ones the wire contracts generate today."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign_manager.schemas import contract_schemas, render

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_every_contract_has_a_schema_file() -> None:
    assert set(contract_schemas()) == {"trade-signal.schema.json", "campaign-event.schema.json"}


@pytest.mark.parametrize("name", sorted(contract_schemas()))
def test_committed_schema_matches_the_contract(name: str) -> None:
    committed = SCHEMAS / name
    hint = f"schemas/{name} is out of date with the pydantic contracts: run `make schemas` and commit the result"

    assert committed.is_file(), hint
    assert committed.read_text() == render(contract_schemas()[name]), hint
