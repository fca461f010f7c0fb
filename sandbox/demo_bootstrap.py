"""What `make demo` does once the UI answers, so a newcomer starts with a complete picture.

Every start: the catalog and every file supplier's feed (the encrypted CDN file) are materialized, so
the first sweep and `debug_sku` see every supplier. First start only (no `price_history` yet): every
supplier's offers are fetched for all catalog batches and recorded in `price_history` as valid since
the first day of the sandbox's orders (the sandbox's prices have not moved since: its world only
changes on `POST /_control/market`), so past orders have costs. Then the orders of those days run
through `orders_job`, so yesterday's and today's sales reports are there from the start.
Every run goes through the webserver, as one launched from the UI would. On a first start the
`price_history_schedule` is held (stopped, then reset to its default) until the backfill is written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time

import polars as pl

from pricing_assets.history_assets import (
    PRICE_HISTORY_KEY,
    history_for_day,
    read_current_offers,
    written_days,
)
from pricing_assets.logic.batching import batch_keys
from pricing_assets.logic.history import update_price_history
from resources.config import Registry, load_registry
from resources.schemas import OFFERS_SCHEMA, empty_frame
from resources.suppliers import REST_KINDS
from resources.warehouse import Warehouse
from sandbox.bootstrap import demo_days
from sandbox.dagster_ui import RANGE_END_TAG, RANGE_START_TAG, DagsterUi, UiError
from sandbox.demo import Settings, StopSignal

RUN_SECONDS = 600  # one bootstrap run, queued and executed
BOOTSTRAP_TAG = {"demo/bootstrap": "true"}
HISTORY_SCHEDULE = "price_history_schedule"


class BootstrapFailed(RuntimeError):
    """A bootstrap run did not succeed; the demo keeps serving so the UI shows why."""


def backfill_price_history(
    warehouse: Warehouse, registry: Registry, days: list[date], offers: pl.DataFrame
) -> list[str]:
    """Write `price_history` for `days` with `offers` valid since the first day began; the days written.

    Writes nothing if any `price_history` partition exists (the history is never rewritten).
    """
    if written_days(warehouse):
        return []
    if offers.height == 0:
        raise BootstrapFailed("no supplier offers in the warehouse to backfill price_history from")
    since = datetime.combine(days[0], time(0), tzinfo=UTC)
    log = update_price_history(None, offers, seen_at=since, fx=registry.fx_rates())
    # As of the end of the last day: today's file holds the open rows the next observation folds into.
    as_of = datetime.combine(days[-1], time(23, 59, 59), tzinfo=UTC)
    empty = empty_frame(OFFERS_SCHEMA)
    written = []
    for day in days:
        rows = history_for_day(log, empty, day=day, now=as_of, fx=registry.fx_rates())
        key = day.isoformat()
        warehouse.write(rows.with_columns(day=pl.lit(key)), PRICE_HISTORY_KEY.path, key)
        written.append(key)
    return written


class Bootstrap:
    """The demo's start-up runs, in order; `before_daemon` must run before the daemon starts."""

    def __init__(
        self, ui: DagsterUi, settings: Settings, stop: StopSignal, log: Callable[[str], None]
    ) -> None:
        self.ui = ui
        self.stop = stop
        self.log = log
        self.registry = load_registry()
        self.warehouse = Warehouse(base_dir=str(settings.warehouse_dir))
        self.first_start = not written_days(self.warehouse)
        self.paused_history_schedule = False

    def before_daemon(self) -> None:
        """On a first start, hold the price_history schedule until the backfill is written.

        Its observation of today writes today's partition from the history it reads; one that ran
        between the offers fetch and the backfill would keep a second history beside the backfilled one.
        """
        if self.first_start:
            self.paused_history_schedule = self.ui.stop_schedule("pricing", HISTORY_SCHEDULE)

    def run(self) -> None:
        """Catalog and CDN feeds every start; offers, price history and orders on the first start."""
        try:
            self._run_all()
        except (BootstrapFailed, UiError) as exc:
            self.log(f"bootstrap incomplete: {exc}")
        finally:
            if self.paused_history_schedule:
                try:
                    self.ui.reset_schedule("pricing", HISTORY_SCHEDULE)
                except UiError as exc:
                    self.log(f"could not restart {HISTORY_SCHEDULE}: {exc} (switch it on under Automation)")

    def _run_all(self) -> None:
        # Each supplier step writes its quarantine table too: selected with it, so it is written.
        files = [
            [prefix, entry.id]
            for entry in self.registry.suppliers
            if entry.kind == "cdn_file"
            for prefix in ("supplier_files", "supplier_files_quarantine")
        ]
        self._run("catalog and CDN files", "pricing", assets=[["catalog"], *files])
        days = demo_days(datetime.now(UTC))
        if self.first_start:
            batches = batch_keys(self.registry.catalog_batches)
            fetched = self._run(
                f"every supplier's offers, {len(batches)} batches",
                "pricing",
                assets=[
                    *(["supplier_offers", supplier] for supplier in self.registry.order),
                    *(["supplier_quarantine", e.id] for e in self.registry.suppliers if e.kind in REST_KINDS),
                ],
                tags={RANGE_START_TAG: batches[0], RANGE_END_TAG: batches[-1]},
            )
            offers = read_current_offers(self.warehouse, self.registry.order)
            written = backfill_price_history(self.warehouse, self.registry, days, offers)
            if written:
                self.ui.report_materialization(
                    PRICE_HISTORY_KEY.path,
                    written,
                    f"Backfilled by the demo on its first start: the {offers.height} offers of run {fetched} "
                    f"recorded as valid since {days[0].isoformat()} 00:00 UTC (the sandbox's prices have not "
                    "moved since).",
                )
                self.log(
                    f"price_history backfilled for {written[0]} .. {written[-1]} ({offers.height} offers)"
                )
        self._run(
            f"orders of {days[0].isoformat()} .. {days[-1].isoformat()}",
            "orders",
            job="orders_job",
            tags={RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()},
        )

    def _run(
        self,
        what: str,
        location: str,
        *,
        job: str | None = None,
        assets: list[list[str]] | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Launch one bootstrap run and wait for it; its run id, or BootstrapFailed."""
        kwargs = {"job": job} if job else {}
        run_id = self.ui.launch(
            location, assets=assets or (), tags={**BOOTSTRAP_TAG, **(tags or {})}, **kwargs
        )
        self.log(f"bootstrap: {what} (run {run_id[:8]})")
        status = self.ui.wait_run(run_id, RUN_SECONDS, stop=lambda: self.stop.requested)
        self.stop.check()
        if status != "SUCCESS":
            raise BootstrapFailed(f"run {run_id} ({what}) ended {status}: {self.ui.url}/runs/{run_id}")
        return run_id
