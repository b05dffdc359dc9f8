"""A batch of ticks comes down to two prices per symbol: the lowest (for stops) and the latest (for marking)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from campaign_manager.service.prices import PriceTick, SymbolPrices, coalesce

T0 = datetime(2024, 10, 15, 14, 30, tzinfo=UTC)


def tick(symbol: str, price: str, seconds: float) -> PriceTick:
    return PriceTick(symbol, Decimal(price), T0 + timedelta(seconds=seconds))


def test_a_single_tick_is_both_the_lowest_and_the_latest() -> None:
    assert coalesce([tick("AAPL", "150.00", 0)]) == {"AAPL": SymbolPrices(Decimal("150.00"), T0, Decimal("150.00"), T0)}


def test_a_dip_then_a_recovery_keeps_the_dip_as_lowest_and_the_recovery_as_latest() -> None:
    prices = coalesce([tick("AAPL", "150.00", 0), tick("AAPL", "146.40", 1), tick("AAPL", "149.00", 2)])

    # The dip through a stop is not lost to the recovery that followed it in the same batch.
    assert prices["AAPL"] == SymbolPrices(
        lowest=Decimal("146.40"),
        lowest_at=T0 + timedelta(seconds=1),
        latest=Decimal("149.00"),
        latest_at=T0 + timedelta(seconds=2),
    )


def test_the_latest_price_is_the_one_with_the_latest_time_not_the_last_to_arrive() -> None:
    # A late tick (traded earlier, consumed later) does not replace a newer price.
    prices = coalesce([tick("AAPL", "150.00", 5), tick("AAPL", "151.00", 3)])

    assert prices["AAPL"].latest == Decimal("150.00")
    assert prices["AAPL"].latest_at == T0 + timedelta(seconds=5)


def test_of_ticks_with_the_same_time_the_later_offset_is_the_latest() -> None:
    prices = coalesce([tick("AAPL", "150.00", 1), tick("AAPL", "150.50", 1)])

    assert prices["AAPL"].latest == Decimal("150.50")


def test_of_equal_lows_the_first_is_kept_with_its_time() -> None:
    prices = coalesce([tick("AAPL", "149.00", 1), tick("AAPL", "149.00", 2), tick("AAPL", "150.00", 3)])

    assert (prices["AAPL"].lowest, prices["AAPL"].lowest_at) == (Decimal("149.00"), T0 + timedelta(seconds=1))


def test_each_symbol_is_coalesced_on_its_own() -> None:
    prices = coalesce(
        [tick("AAPL", "150.00", 0), tick("MSFT", "410.00", 0), tick("AAPL", "149.00", 1), tick("MSFT", "412.00", 2)]
    )

    assert {symbol: (p.lowest, p.latest) for symbol, p in prices.items()} == {
        "AAPL": (Decimal("149.00"), Decimal("149.00")),
        "MSFT": (Decimal("410.00"), Decimal("412.00")),
    }


def test_no_ticks_give_no_prices() -> None:
    assert coalesce([]) == {}
