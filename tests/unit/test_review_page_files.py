"""The review page's files: served by the HTTP app at `/` and `/static/`, shipped in the package, and loading nothing
from anywhere else. (Its behaviour in a browser: tests/e2e/test_review_page.py.)"""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest

from campaign_manager.http.app import STATIC, create_app
from campaign_manager.persistence.store import Database

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "campaign_manager"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # Serving files runs no query: the engine is created but never connects.
    database = Database.connect("postgresql+asyncpg://localhost/unused")
    transport = httpx.ASGITransport(app=create_app(database))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client
    await database.dispose()


def referenced_assets() -> list[str]:
    return re.findall(r'(?:href|src)="(/static/[^"]+)"', (STATIC / "index.html").read_text())


async def test_the_page_is_served_at_the_root_with_a_policy_that_allows_only_its_own_files(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert '<main id="main"' in response.text


async def test_every_file_the_page_references_is_served_with_its_type(client: httpx.AsyncClient) -> None:
    assets = referenced_assets()
    assert {Path(a).suffix for a in assets} == {".css", ".js", ".svg"}

    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200, asset
        expected = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}[Path(asset).suffix]
        assert response.headers["content-type"].startswith(expected), asset
        assert response.headers["cache-control"] == "no-cache", asset


def test_the_page_loads_nothing_from_another_host() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        # The one absolute URL is the SVG namespace, a name rather than a place to fetch from.
        others = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'`)]*", text)) - {
            "http://www.w3.org/2000/svg"
        }
        assert not others, f"{path.name} refers to {sorted(others)}"


def test_the_pages_files_are_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = globs["campaign_manager"]

    for path in STATIC.iterdir():
        relative = path.relative_to(PACKAGE).as_posix()
        assert any(fnmatch(relative, glob) for glob in shipped), f"{relative} is not in the package data"
