"""The demo as a newcomer meets it, in a real browser: Debian's chromium driven by Playwright.

One demo (`python -m sandbox.demo`, free ports, a temp folder) serves the module. After its bootstrap,
the browser checks that the UI lists both code locations loaded, that the asset catalog shows the
pricing assets, launches the README's "Try it" materialization from the catalog (every supplier's
offers, best offers, storefront prices and the push, partition batch-000), waits on the run's page
until it succeeds, and finds the push on the storefront page. The bootstrap's own promise is checked
on the files: yesterday's sales report is there and has costs. And a switch flipped in the demo's
SERVICE_CONFIG_FILE reaches the next run, with no restart.
"""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from sandbox.orders_db import orders_metadata
from tests.demo.stack import RunningDemo, start_demo

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(900)]

CHROMIUM = Path("/usr/bin/chromium")
# Flags for a headless chromium on a shared machine without a GPU, sandbox or network.
# (--headless and --no-sandbox are Playwright's own defaults, --user-data-dir its persistent context's.)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TRY_IT = (
    'key:"supplier_offers/*" or key:"supplier_quarantine/*" or key:"best_offers" or key:"storefront_prices" '
    'or key:"storefront_sync"'
)
RUN_SECONDS = 300
# The UI's pages fetch their data over GraphQL after the page loads: on a busy 2-core machine the
# asset list took just over Playwright's default 5 s to render (it was there a moment later).
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    """The demo, bootstrapped; stopped with SIGTERM after the module, leaving nothing behind."""
    running = start_demo(tmp_path_factory.mktemp("demo"))
    try:
        running.wait_ready()
        yield running
        # Stopped while it serves (the lifecycle tests stop it during its bootstrap).
        running.stop(signal.SIGTERM)
        left = running.left_behind()
        assert not left, [proc.command[:100] for proc in left]
    finally:
        running.kill_everything()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Debian's chromium with a fresh profile (fails in CI, skips elsewhere, when it is not installed)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not installed (`make tools` installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


# The UI opens its "Join the Dagster community" pop-up a second after a page loads on 127.0.0.1,
# unless this browser has dismissed it (the key the UI itself sets on Skip). Clicking Skip from a
# locator handler raced the pop-up's own checkbox, which covered the button while it laid out.
DISMISSED_COMMUNITY_POPUP = "window.localStorage.setItem('communityNux', JSON.stringify('1'));"


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A tab in which the UI's "Join the Dagster community" pop-up counts as dismissed."""
    tab = browser.new_page()
    tab.add_init_script(DISMISSED_COMMUNITY_POPUP)
    yield tab
    expect(tab.get_by_text("Join the Dagster community")).to_have_count(0)
    tab.close()


def test_ui_lists_both_code_locations_loaded(demo, page):
    page.goto(f"{demo.ui.url}/locations")
    expect(page.get_by_text("2 code locations")).to_be_visible()
    for location in ("pricing", "orders"):
        expect(page.locator(f"a[href='/locations/{location}/']")).to_be_visible()
    # One "Loaded <when>" status per location, and no failed one with its error button.
    expect(page.get_by_text(re.compile(r"^Loaded"))).to_have_count(2)
    expect(page.get_by_text("Failed", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("error", re.IGNORECASE))).to_have_count(0)


def test_catalog_materialize_and_the_storefront_shows_the_push(demo, page):
    page.goto(f"{demo.ui.url}/assets?asset-selection={urllib.parse.quote(TRY_IT)}")
    for key in (
        "best_offers",
        "storefront_prices",
        "storefront_sync",
        "supplier_offers/alpha",
        "supplier_offers/beta",
        "supplier_offers/gamma",
        "supplier_offers/delta",
    ):
        expect(page.locator(f"a[href='/assets/{key}']")).to_be_visible()
    # Select every listed asset (the header checkbox), then Materialize -> partition batch-000.
    page.get_by_role("checkbox").first.locator("xpath=..").click()
    page.get_by_role("button", name="Materialize selected").first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_text("Select a partition or create one").click()
    page.keyboard.type("batch-000")
    page.locator(".dagster-popover").last.get_by_text("batch-000", exact=True).first.click()
    page.keyboard.press("Escape")
    dialog.get_by_role("button", name="Launch 1 run").click()
    run_link = page.locator("a[href*='/runs/']").first
    expect(run_link).to_be_visible()
    run_path = run_link.get_attribute("href")
    assert run_path

    page.goto(f"{demo.ui.url}{run_path}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=RUN_SECONDS * 1000)

    page.goto(f"{demo.sandbox_url}/storefront/")
    pushes = int(page.locator("#counter-pushes b").inner_text())
    assert pushes >= 1
    expect(page.locator("#pushes")).to_contain_text("batch-000")
    assert page.locator("#counter-bad_signatures b").inner_text() == "0"
    assert page.locator("#counter-duplicates b").inner_text() == "0"
    # Every supplier was selected, so batch-000's SKUs are priced, and nearly all of them available.
    priced = int(page.locator("#counter-prices b").inner_text())
    available = int(page.locator("#counter-available b").inner_text())
    assert priced > 0 and available >= 0.9 * priced


def test_yesterdays_sales_report_is_there_after_the_bootstrap(demo):
    warehouse = demo.folder / "warehouse"
    now = datetime.now(UTC)
    yesterday = (now - timedelta(days=1)).date().isoformat()
    assert (warehouse / "catalog.parquet").is_file()
    assert (warehouse / "supplier_files" / "delta.parquet").is_file()
    report = pl.read_parquet(warehouse / "sales_report" / f"{yesterday}.parquet")
    assert report.height > 0
    assert report.get_column("units").sum() > 0
    assert report.get_column("cost").null_count() == 0
    # Price history covers the day, so its lines found a supplier: few backorders, not all of them.
    allocations = pl.read_parquet(warehouse / "order_allocations" / f"{yesterday}.parquet")
    backordered = allocations.filter(pl.col("allocation") == "backordered").height
    assert backordered < 0.05 * allocations.height
    # The orders the reports read all lie in the past.
    engine = sa.create_engine(f"sqlite:///{demo.folder / 'sandbox_data' / 'orders.db'}")
    _, orders, _ = orders_metadata()
    with engine.connect() as conn:
        latest = conn.execute(sa.select(sa.func.max(orders.c.created_at))).scalar_one()
    engine.dispose()
    assert latest.replace(tzinfo=UTC) <= datetime.now(UTC)


def test_switches_flip_under_the_running_demo_through_its_service_config_file(demo, monkeypatch):
    config_file = demo.folder / "sandbox_data" / "service_config.json"
    assert config_file.is_file()  # created by the demo, named by SERVICE_CONFIG_FILE in every process
    monkeypatch.setenv("DAGSTER_HOME", str(demo.folder / "dagster_home"))
    beta = AssetKey(["supplier_offers", "beta"])

    def fetch_beta() -> dict[str, object]:
        run_id = demo.ui.launch("pricing", assets=[beta.path], tags={"dagster/partition": "batch-001"})
        assert demo.ui.wait_run(run_id, RUN_SECONDS) == "SUCCESS"
        with DagsterInstance.get() as instance:
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=beta, asset_partitions=["batch-001"]), limit=1
            ).records
        assert records and records[0].run_id == run_id
        return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}

    config_file.write_text(json.dumps({"suppliers": {"beta": {"enabled": False}}}))
    assert fetch_beta().get("skipped") == "disabled"
    config_file.write_text(json.dumps({"dry_run": False}))
    assert "skipped" not in fetch_beta()


def test_the_webserver_answers_the_demos_pool_slot_queries(demo):
    # The same queries the demo sends when it stops: they must fit the real schema.
    assert isinstance(demo.ui.runs_holding_pool_slots(), set)
    assert isinstance(demo.ui.free_slots_of_finished_runs(), list)
