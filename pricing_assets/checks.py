"""Blocking checks on `storefront_prices` and the row filter that keeps failing prices from the storefront.

The checks read the run's partitions of `storefront_prices` (one file for a single-partition run, every
partition of the range for a ranged sweep or backfill run; the frame the step just wrote when it is still
in memory) and apply the pure functions of `pricing_assets.logic.guard`. They do not take the asset as a
loaded input: Dagster maps an unpartitioned check's input to every partition of the asset, so each run
would read and judge the whole catalog (3 GiB and 70 s a run at 10M SKUs, bench scale) and one bad
batch would block the push of every other. Blocking: in a run that also selects `storefront_sync`,
a failed check stops it. The push sensor launches `storefront_sync` in its own run, so the same
invariants are also applied row by row there through `split_pushable`.
"""

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from pricing_assets.logic.guard import check_no_nonpositive_price, check_not_below_floor, nonpositive_price
from pricing_assets.logic.markup import below_floor
from resources.service_config import ServiceConfigResource
from resources.warehouse import WarehouseTables

NONPOSITIVE_CHECK = "no_nonpositive_price"
FLOOR_CHECK = "not_below_floor"
STOREFRONT_PRICES = "storefront_prices"


def _metadata(details: dict[str, Any], frame: pl.DataFrame) -> dict[str, MetadataValue]:
    """Check metadata the UI can show: counts as ints, examples as text, and the batches covered."""
    out: dict[str, MetadataValue] = {}
    for name, value in details.items():
        if isinstance(value, bool) or not isinstance(value, int):
            out[name] = MetadataValue.text(", ".join(value) if isinstance(value, list) else str(value))
        else:
            out[name] = MetadataValue.int(value)
    if "batch" in frame.columns:
        batches = sorted(frame.get_column("batch").drop_nulls().unique().to_list())
        out["batches"] = MetadataValue.text(f"{batches[0]}..{batches[-1]}" if batches else "none")
    return out


def run_prices(context: AssetCheckExecutionContext, warehouse: WarehouseTables) -> pl.DataFrame:
    """`storefront_prices` of the run's partitions (every partition when the run has none)."""
    partitioned = context.has_partition_key or context.has_partition_key_range
    keys = sorted(context.partition_keys) if partitioned else None
    frame = warehouse.read_partitions([STOREFRONT_PRICES], keys)
    if frame is None:
        raise FileNotFoundError(f"{STOREFRONT_PRICES}: no warehouse file for partitions {(keys or [])[:5]}")
    return frame


def _failing_by_batch(frame: pl.DataFrame, failing: Callable[[pl.DataFrame], int]) -> str:
    """`batch-003: 2, batch-007: 1`: which batches of a ranged run failed, and how many SKUs each.

    A check runs once per run, whatever the range, so this is how its result points at partitions.
    """
    if "batch" not in frame.columns:
        return "n/a"
    counts = [
        (batch, failing(part))
        for (batch,), part in sorted(
            frame.partition_by("batch", as_dict=True).items(), key=lambda kv: str(kv[0])
        )
    ]
    return ", ".join(f"{batch}: {count}" for batch, count in counts if count) or "none"


def _result(
    passed: bool, failing: int, details: dict[str, Any], frame: pl.DataFrame, what: str
) -> AssetCheckResult:
    """An ERROR-severity result (blocking) with a description naming how many SKUs failed."""
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=None if passed else f"{failing} SKU(s) {what}; nothing of this run may be pushed",
        metadata=_metadata(details, frame),
    )


def build_storefront_price_checks() -> list[AssetChecksDefinition]:
    """The blocking invariants of `storefront_prices`: no price <= 0, none below cost x (1 + min_margin)."""

    @asset_check(
        asset=STOREFRONT_PRICES,
        name=NONPOSITIVE_CHECK,
        blocking=True,
        description="No SKU gets a price of zero or less (unavailable SKUs have no price).",
    )
    def no_nonpositive_price(
        context: AssetCheckExecutionContext, warehouse: WarehouseTables
    ) -> AssetCheckResult:
        """Every priced SKU of the run's batches has a positive price."""
        storefront_prices = run_prices(context, warehouse)
        passed, details = check_no_nonpositive_price(storefront_prices)
        details["failing_batches"] = (
            _failing_by_batch(
                storefront_prices, lambda part: check_no_nonpositive_price(part)[1]["nonpositive_prices"]
            )
            if not passed
            else "none"
        )
        if not passed:
            context.log.error(f"prices <= 0 for {details['nonpositive_prices']} SKUs: {details['examples']}")
        return _result(passed, details["nonpositive_prices"], details, storefront_prices, "have a price <= 0")

    @asset_check(
        asset=STOREFRONT_PRICES,
        name=FLOOR_CHECK,
        blocking=True,
        description="No price is below cost x (1 + min_margin) from SERVICE_CONFIG, compared exactly.",
    )
    def not_below_floor(
        context: AssetCheckExecutionContext,
        warehouse: WarehouseTables,
        service_config: ServiceConfigResource,
    ) -> AssetCheckResult:
        """Every priced SKU of the run's batches is at or above its margin floor."""
        storefront_prices = run_prices(context, warehouse)
        min_margin = service_config.load().markup.min_margin
        passed, details = check_not_below_floor(storefront_prices, min_margin)
        details["failing_batches"] = (
            _failing_by_batch(
                storefront_prices, lambda part: check_not_below_floor(part, min_margin)[1]["below_floor"]
            )
            if not passed
            else "none"
        )
        if not passed:
            context.log.error(
                f"prices below the floor for {details['below_floor']} SKUs: {details['examples']}"
            )
        return _result(
            passed, details["below_floor"], details, storefront_prices, "are priced below the margin floor"
        )

    return [no_nonpositive_price, not_below_floor]


def violates_invariants(min_margin: Decimal) -> pl.Expr:
    """True for rows the blocking checks reject: a price <= 0, or below cost x (1 + min_margin)."""
    return (nonpositive_price() | below_floor(min_margin)).fill_null(False)


def split_pushable(prices: pl.DataFrame, min_margin: Decimal) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows that may be pushed, rows that failed the blocking invariants and must never be pushed)."""
    bad = violates_invariants(min_margin)
    return prices.filter(~bad), prices.filter(bad)


__all__ = [
    "FLOOR_CHECK",
    "NONPOSITIVE_CHECK",
    "build_storefront_price_checks",
    "split_pushable",
    "violates_invariants",
]
