"""The review page in a real browser: headless Chromium, driven by Playwright, against a running worker. An operator
finds campaigns by symbol and status, opens one, reads its Spring -> SOS -> LPS timeline and allocation, and sees
the page follow new signals and fills without reloading."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer

from campaign_manager.examples import aapl_campaign_signals, position_event, trade_signal, trading_range
from tests.e2e.conftest import ARTIFACTS, Deployment, get_json, publish, publish_signals, read_topic

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (`make install` installs it as root)
# Headless, and nothing that reaches beyond this machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ARTIFACTS / "screenshots"
# The README's picture: written when missing, or again with UPDATE_SCREENSHOTS=1 (a test run leaves it alone).
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "review-page.png"
WAIT_MS = 30_000  # a signal goes broker -> worker -> PostgreSQL -> the page's next poll


def _missing() -> str | None:
    try:
        import playwright  # noqa: F401 - only whether it is there
    except ImportError:
        return "the playwright package is not installed: run `make install`"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing: `make install` installs Debian's chromium when run as root with apt-get"
    return None


if (MISSING := _missing()) is not None:
    pytest.skip(MISSING, allow_module_level=True)

from playwright.async_api import Page, async_playwright, expect  # noqa: E402 - after the check that it exists

pytestmark = pytest.mark.e2e
expect.set_options(timeout=WAIT_MS)


@pytest.fixture
def deployment(deployment: Deployment, empty_database_url: str) -> Deployment:
    """A database of the test's own: the page shows every campaign and portfolio there is."""
    return dataclasses.replace(deployment, database_url=empty_database_url)


@dataclasses.dataclass
class Browser:
    page: Page
    errors: list[str]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await chromium.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            yield Browser(page, errors)
        finally:
            await chromium.close()


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png")


def position_record(event: dict[str, Any]) -> tuple[bytes, bytes]:
    return event["campaign_id"].encode(), json.dumps(event).encode()


async def test_an_operator_filters_opens_a_campaign_and_watches_it_change_without_reloading(
    deployment: Deployment, start_worker, producer: AIOKafkaProducer, browser: Browser
) -> None:
    page = browser.page
    worker = start_worker()
    portfolio = f"desk-{uuid4().hex[:6]}"
    aapl = aapl_campaign_signals(portfolio_id=portfolio)
    spring, sos, lps = aapl

    # The AAPL Spring and SOS (MARKUP, 3.5%) and an MSFT Spring (ACTIVE, 2%) in one portfolio: 5,500 at risk.
    await publish_signals(
        producer,
        deployment.signals_topic,
        [spring, sos, trade_signal(trading_range(symbol="MSFT"), portfolio_id=portfolio)],
    )
    await read_topic(deployment.bootstrap_servers, deployment.events_topic, until=lambda r: len(r) >= 4)

    # The list: both campaigns, and the portfolio's heat against its 10% limit, in words as well as bars.
    await page.goto(f"{worker.base_url}/")
    table = page.get_by_role("table", name=re.compile("^Campaigns"))
    await expect(table.locator("caption")).to_have_text("Campaigns 1–2 of 2, newest first")
    columns = ["Campaign", "Status", "Phase", "Allocation used of 5%", "Current risk", "Weighted avg entry"]
    for column in [*columns, "Realized P&L", "Unrealized P&L"]:
        await expect(table.get_by_role("columnheader", name=column, exact=True)).to_be_visible()
    heat = page.get_by_role("region", name="Portfolio heat")
    await expect(heat).to_contain_text(portfolio)
    await expect(heat).to_contain_text("Heat 5.50% of 10%")
    await expect(heat).to_contain_text("5,500.00 of 10,000.00 open risk")
    await expect(heat).to_contain_text("2 open campaigns · 5.50% allocated")
    aapl_row = table.get_by_role("row", name=re.compile("^AAPL-2024-10-15"))
    await expect(aapl_row).to_contain_text("MARKUP")
    await expect(aapl_row).to_contain_text("3.50% of 5%")
    await expect(aapl_row).to_contain_text("3,500.00")
    await expect(aapl_row).to_contain_text("149.375")
    await screenshot(page, "review-list")

    # Filtering by symbol, from the keyboard.
    await page.get_by_label("Symbol").fill("AAPL")
    await page.get_by_label("Symbol").press("Enter")
    await expect(table.locator("caption")).to_have_text("Campaigns 1–1 of 1, symbol AAPL, newest first")
    await expect(table.get_by_role("link", name="MSFT-2024-10-15")).to_have_count(0)

    # Filtering by status.
    await page.get_by_role("button", name="Clear filters").click()
    await page.get_by_label("Status").select_option("ACTIVE")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(table.locator("caption")).to_have_text("Campaigns 1–1 of 1, status ACTIVE, newest first")
    await expect(table.get_by_role("row", name=re.compile("^MSFT-2024-10-15"))).to_contain_text("ACTIVE")
    await page.get_by_role("button", name="Clear filters").click()
    await expect(table.locator("caption")).to_have_text("Campaigns 1–2 of 2, newest first")

    # Opening the campaign with the keyboard: Tab reaches its link, which shows where the focus is.
    await page.get_by_role("button", name="Clear filters").focus()
    link = table.get_by_role("link", name="AAPL-2024-10-15")
    for _ in range(5):
        await page.keyboard.press("Tab")
        if await link.evaluate("element => element === document.activeElement"):
            break
    assert await link.evaluate("element => getComputedStyle(element).outlineStyle") == "solid"
    await page.keyboard.press("Enter")

    # The campaign: its allocation, its levels and entries on the chart, and its Spring -> SOS timeline so far.
    await expect(page.get_by_role("heading", level=1)).to_have_text("AAPL-2024-10-15 MARKUP")
    assert await page.evaluate("document.activeElement.tagName") == "H1"
    assert page.url.endswith("#/campaigns/AAPL-2024-10-15")
    allocation = page.locator("dl.facts > div", has_text="Allocation used of 5%").locator("dd")
    await expect(allocation).to_have_text("3.50% of 5%")
    chart = page.get_by_role("img", name="Price levels of AAPL-2024-10-15")
    await expect(chart).to_contain_text("Creek 148.00")
    await expect(chart).to_contain_text("Jump 156.00")
    await expect(chart).to_contain_text("stop 146.50")
    timeline = page.locator("ol.timeline > li")
    await expect(timeline.locator("strong")).to_have_text(
        ["Campaign created with a Spring position", "SOS position added", "Status ACTIVE → MARKUP"]
    )
    await expect(timeline.nth(0)).to_contain_text("1,000 shares at 148.50, stop 146.50")
    positions = page.get_by_role("table", name="2 positions, in the order opened")
    await expect(positions.get_by_role("row")).to_have_count(3)

    # The LPS arrives while the page is open: it follows without a reload.
    await page.evaluate("window.stillTheSamePage = true")
    await publish_signals(producer, deployment.signals_topic, [lps])
    await expect(timeline.locator("strong")).to_have_text(
        [
            "Campaign created with a Spring position",
            "SOS position added",
            "Status ACTIVE → MARKUP",
            "LPS position added",
        ]
    )
    await expect(allocation).to_have_text("5.00% of 5%")
    await expect(page.get_by_role("table", name="3 positions, in the order opened")).to_be_visible()
    await expect(page.get_by_role("status")).to_contain_text("Updated")
    await expect(page.locator("main")).to_contain_text("Heat 7.00% of 10%")
    await screenshot(page, "review-campaign")
    if os.environ.get("UPDATE_SCREENSHOTS") or not README_SCREENSHOT.exists():
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=README_SCREENSHOT)

    # And so does the broker's fill of the Spring.
    campaign = await get_json(f"{worker.base_url}/api/v1/campaigns/AAPL-2024-10-15")
    spring_position = next(p for p in campaign["positions"] if p["pattern_type"] == "SPRING")
    fill = position_event(campaign["id"], spring_position["position_id"], "FILLED", price="148.40", shares="1000")
    await publish(producer, deployment.position_events_topic, [position_record(fill)])
    await expect(timeline.last).to_contain_text("Spring position filled")
    await expect(timeline.last).to_contain_text("1,000 shares at 148.40 (planned 1,000 at 148.50)")
    # The Spring stays first (the order opened), now at its fill price.
    rows = page.get_by_role("table", name="3 positions, in the order opened").locator("tbody tr")
    await expect(rows.locator("th")).to_have_text(["Spring", "SOS", "LPS"])
    await expect(rows.first).to_contain_text("148.40")

    # Back on the list, a new campaign appears by itself too.
    await page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="Campaigns").click()
    await expect(table.locator("caption")).to_have_text("Campaigns 1–2 of 2, newest first")
    await publish_signals(
        producer, deployment.signals_topic, [trade_signal(trading_range(symbol="NVDA"), portfolio_id=portfolio)]
    )
    await expect(table.locator("caption")).to_have_text("Campaigns 1–3 of 3, newest first")
    # 7,000 less the 100 the Spring's better fill took off its risk, plus the NVDA Spring's 2,000.
    await expect(heat).to_contain_text("Heat 8.90% of 10%")
    assert await page.evaluate("window.stillTheSamePage") is True

    # A campaign that does not exist says so.
    await page.goto(f"{worker.base_url}/#/campaigns/NOPE-2024-01-01")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Campaign not found")

    # 404s the page asked for on purpose (the unknown campaign) are the only errors the browser saw.
    assert [e for e in browser.errors if "404" not in e] == []
