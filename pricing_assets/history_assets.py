"""`price_history`: the daily change log of every supplier offer, and the schedule that keeps it current.

Each materialization of today's partition observes every supplier's current offers (all batches of
`supplier_offers/<id>`), folds them into the log read back from the latest partition
(`update_price_history`), and writes the rows valid during that day (`day_slice`). A past day is
rebuilt from its file and the later ones (no new observation), so re-running any partition never
duplicates rows.
Semantics and the as-of query: docs/pricing.md, operations: docs/pricing_operations.md.
"""

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    BackfillPolicy,
    DefaultScheduleStatus,
    MetadataValue,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    asset,
    define_asset_job,
    schedule,
)

from pricing_assets import OWNERS
from pricing_assets.logic.history import combine_partitions, day_slice, update_price_history
from pricing_assets.partitions import daily_partitions
from resources.config import Registry
from resources.schemas import OFFERS_SCHEMA, PRICE_HISTORY_SCHEMA, column_schema, empty_frame
from resources.warehouse import WarehouseTables

PRICE_HISTORY_KEY = AssetKey("price_history")
HISTORY_JOB_NAME = "price_history_job"
HISTORY_SCHEDULE_CRON = "*/5 * * * *"


def read_current_offers(warehouse: WarehouseTables, supplier_ids: list[str]) -> pl.DataFrame:
    """Every supplier's last good offers across all batches (suppliers with no files are left out)."""
    frames = []
    for supplier_id in supplier_ids:
        frame = warehouse.read_partitions(["supplier_offers", supplier_id])
        if frame is not None and frame.height:
            frames.append(frame.select([pl.col(c).cast(t) for c, t in OFFERS_SCHEMA.items()]))
    return pl.concat(frames) if frames else empty_frame(OFFERS_SCHEMA)


def written_days(warehouse: WarehouseTables) -> list[str]:
    """The `price_history` partitions written so far, oldest first."""
    folder = warehouse.root().joinpath(*PRICE_HISTORY_KEY.path)
    return sorted(path.stem for path in folder.glob("*.parquet")) if folder.exists() else []


def read_history(warehouse: WarehouseTables, day: date) -> pl.DataFrame | None:
    """The part of the log a run of `day` needs, one row per (sku, supplier, valid_from); None if empty.

    Today (or any day at or after the last written one): that day's file if written, else the latest
    earlier one; every offer still open is in it, so the read stays one day's size however long the
    history grows. An earlier day: its file and every later one, for the closings recorded since.
    """
    days = written_days(warehouse)
    key = day.isoformat()
    if not days:
        return None
    if key < days[-1]:
        chosen = [d for d in days if d >= key]
    elif key in days:
        chosen = [key]
    else:
        chosen = [days[-1]]
    frame = warehouse.read_partitions(PRICE_HISTORY_KEY.path, chosen)
    if frame is None:
        return None
    return combine_partitions(frame.select(list(PRICE_HISTORY_SCHEMA)))


def history_for_day(
    history: pl.DataFrame | None,
    offers: pl.DataFrame,
    *,
    day: date,
    now: datetime,
    fx: Mapping[str, Decimal],
) -> pl.DataFrame:
    """The rows of `day` after this run: today observes `offers` at `now`, a past day does not."""
    today = now.astimezone(UTC).date()
    if day > today:
        raise ValueError(f"price_history partition {day.isoformat()} is in the future (today is {today})")
    if day == today:
        log = update_price_history(history, offers, seen_at=now, fx=fx)
    else:
        log = history if history is not None else empty_frame(PRICE_HISTORY_SCHEMA)
    # Sorted, so a re-run with nothing new rewrites a byte-identical day file.
    return day_slice(log, day).sort("sku", "supplier", "valid_from")


def build_price_history_asset(registry: Registry) -> AssetsDefinition:
    """The `price_history` daily asset over every supplier of the registry."""
    offer_deps = [
        AssetDep(AssetKey(["supplier_offers", supplier_id]), partition_mapping=AllPartitionMapping())
        for supplier_id in registry.order
    ]

    @asset(
        key=PRICE_HISTORY_KEY,
        group_name="pricing",
        partitions_def=daily_partitions,
        # A past day reads its file and every later one: one day per run keeps those reads small.
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
        deps=offer_deps,
        owners=OWNERS,
        kinds={"polars", "parquet"},
        metadata=column_schema(PRICE_HISTORY_SCHEMA, partition_column="day"),
        # Runs read the log and rewrite a day: two at once could each miss the other's changes.
        pool="price_history",
    )
    def price_history(context: AssetExecutionContext, warehouse: WarehouseTables) -> pl.DataFrame:
        """Supplier offers valid during the day (valid_from/valid_to): a row per change per SKU x supplier."""
        day = date.fromisoformat(context.partition_key)
        now = datetime.now(UTC)
        before = read_history(warehouse, day)
        observing = day == now.date()
        offers = read_current_offers(warehouse, registry.order) if observing else empty_frame(OFFERS_SCHEMA)
        rows = history_for_day(before, offers, day=day, now=now, fx=registry.fx_rates())
        previous_rows = 0 if before is None else before.height
        opened = rows.filter(pl.col("valid_from") == pl.lit(now).cast(pl.Datetime("us", "UTC"))).height
        closed = rows.filter(pl.col("valid_to") == pl.lit(now).cast(pl.Datetime("us", "UTC"))).height
        context.add_output_metadata(
            {
                "rows": MetadataValue.int(rows.height),
                "observed": MetadataValue.bool(observing),
                "offers_observed": MetadataValue.int(offers.height),
                "suppliers_observed": MetadataValue.int(offers.get_column("supplier").n_unique()),
                "opened_now": MetadataValue.int(opened),
                "closed_now": MetadataValue.int(closed),
                "history_rows_read": MetadataValue.int(previous_rows),
                "open_offers": MetadataValue.int(rows.filter(pl.col("valid_to").is_null()).height),
            }
        )
        return rows

    return price_history


def build_price_history_job() -> Any:
    """The job the schedule launches: `price_history` for one day."""
    return define_asset_job(
        HISTORY_JOB_NAME,
        selection=AssetSelection.assets(PRICE_HISTORY_KEY),
        description="Record changes of supplier offers into today's price_history partition.",
    )


def build_price_history_schedule(job: Any) -> ScheduleDefinition:
    """Every 5 minutes (the sweep's pace): today's `price_history` partition, one run per tick."""

    @schedule(
        name="price_history_schedule",
        cron_schedule=HISTORY_SCHEDULE_CRON,
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Observe every supplier's current offers into today's price_history partition.",
    )
    def price_history_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        """Today's partition (UTC), keyed by the tick so a re-evaluated tick launches nothing new."""
        tick = context.scheduled_execution_time.astimezone(UTC)
        return RunRequest(run_key=f"price_history-{tick.isoformat()}", partition_key=tick.date().isoformat())

    return price_history_schedule
