"""Held price changes and their approval: `held_price_changes`, `price_approvals`, `approve_held_prices`.

The guard in `storefront_prices` holds a change that is too large (docs/architecture.md §4). An operator
approves it by launching `approve_held_prices` from the UI with run config

    ops:
      price_approvals:
        config:
          skus: ["SKU-000123", "SKU-000456"]   # or: all: true

which appends to `price_approvals` the exact changes approved: (sku, price, last_pushed_price). The next
`storefront_prices` materialization of that batch releases a held row only when its new price *and* the
price it moves away from are the approved ones, so a different price later is held again.
"""

from datetime import UTC, datetime
from typing import Any

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    Config,
    DefaultScheduleStatus,
    Failure,
    MetadataValue,
    ScheduleDefinition,
    asset,
    define_asset_job,
)
from pydantic import Field

from pricing_assets import OWNERS
from pricing_assets.logic.holds import (
    HELD_SCHEMA,
    outstanding_holds,
    prune_consumed,
    record_approvals,
    with_held_since,
)
from resources.push_state import APPROVALS_SCHEMA, LEDGER_KEY, ApprovalLog, PushState
from resources.schemas import column_schema
from resources.warehouse import WarehouseTables

HELD_KEY = AssetKey("held_price_changes")
APPROVALS_KEY = AssetKey("price_approvals")
STOREFRONT_PRICES_KEY = AssetKey("storefront_prices")
APPROVE_JOB_NAME = "approve_held_prices"
HELD_JOB_NAME = "held_price_changes_job"
HELD_SCHEDULE_CRON = "*/5 * * * *"
PREVIEW_ROWS = 20


def current_holds(warehouse: WarehouseTables) -> pl.DataFrame:
    """Every row the guard holds in the latest `storefront_prices` of each batch (no held_since)."""
    prices = warehouse.read_partitions(STOREFRONT_PRICES_KEY.path)
    columns = [name for name in HELD_SCHEMA if name != "held_since"]
    if prices is None or "held" not in prices.columns:
        return pl.DataFrame(schema={name: HELD_SCHEMA[name] for name in columns})
    return (
        prices.filter(pl.col("held").fill_null(False))
        .select([pl.col(name).cast(HELD_SCHEMA[name]) for name in columns])
        .sort("sku")
    )


def _preview(frame: pl.DataFrame, columns: list[str]) -> str:
    """A markdown table of the first rows, for the UI."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.head(PREVIEW_ROWS).iter_rows(named=True):
        lines.append("| " + " | ".join("" if row[c] is None else str(row[c]) for c in columns) + " |")
    if frame.height > PREVIEW_ROWS:
        lines.append(f"| … {frame.height - PREVIEW_ROWS} more |" + " |" * (len(columns) - 1))
    return "\n".join(lines)


class ApprovalConfig(Config):
    """Which held changes to approve: a list of SKUs, or all of them."""

    skus: list[str] = Field(default_factory=list, description="SKUs whose held change is approved")
    all: bool = Field(default=False, description="approve every change held right now")


@asset(
    key=APPROVALS_KEY,
    group_name="pricing",
    # It reads the holds (storefront_prices) and what the storefront acknowledged (the ledger).
    deps=[STOREFRONT_PRICES_KEY, AssetKey(LEDGER_KEY)],
    owners=OWNERS,
    kinds={"polars", "parquet"},
    metadata=column_schema(APPROVALS_SCHEMA),
    description="Approved price changes (sku, price, approved-from price, approved_at): the approval log.",
)
def price_approvals(
    context: AssetExecutionContext,
    config: ApprovalConfig,
    warehouse: WarehouseTables,
    approval_log: ApprovalLog,
    push_state: PushState,
) -> pl.DataFrame:
    """The approval log, with the changes chosen in this run's config added."""
    if config.all and config.skus:
        raise Failure(description="give either `skus` or `all: true`, not both")
    if not config.all and not config.skus:
        raise Failure(
            description="nothing to approve: set `skus: [...]` or `all: true` in the run config "
            "(ops.price_approvals.config)"
        )
    holds = current_holds(warehouse)
    log = prune_consumed(approval_log.read(), push_state.acknowledged())
    now = datetime.now(UTC)
    try:
        combined, approved = record_approvals(holds, log, None if config.all else config.skus, now)
    except ValueError as exc:
        raise Failure(description=f"approval refused: {exc}") from None
    for row in approved.iter_rows(named=True):
        context.log.info(
            f"approved {row['sku']} ({row['batch']}): {row['last_pushed_price']} -> {row['price']}"
        )
    metadata: dict[str, Any] = {
        "approved_now": MetadataValue.int(approved.height),
        "approvals_pending": MetadataValue.int(combined.height),
        "still_held": MetadataValue.int(outstanding_holds(holds, combined).height),
    }
    if approved.height:
        metadata["approved_preview"] = MetadataValue.md(
            _preview(approved, ["sku", "batch", "last_pushed_price", "price"])
        )
    context.add_output_metadata(metadata)
    return combined


@asset(
    key=HELD_KEY,
    group_name="pricing",
    deps=[STOREFRONT_PRICES_KEY, APPROVALS_KEY],
    owners=OWNERS,
    kinds={"polars", "parquet"},
    metadata=column_schema(HELD_SCHEMA),
    description="Price changes the guard holds back, across all batches, waiting for approval.",
)
def held_price_changes(
    context: AssetExecutionContext, warehouse: WarehouseTables, approval_log: ApprovalLog
) -> pl.DataFrame:
    """Every change held now and not yet approved, with why and since when."""
    holds = current_holds(warehouse)
    approvals = approval_log.read()
    outstanding = outstanding_holds(holds, approvals)
    previous = warehouse.read(HELD_KEY.path) if warehouse.exists(HELD_KEY.path) else None
    table = with_held_since(outstanding, previous, datetime.now(UTC)).sort("batch", "sku")
    change = table.get_column("change_pct").abs()
    context.add_output_metadata(
        {
            "held": MetadataValue.int(table.height),
            "approved_awaiting_reprice": MetadataValue.int(holds.height - outstanding.height),
            "batches_with_holds": MetadataValue.int(table.get_column("batch").n_unique()),
            "max_abs_change_pct": MetadataValue.float(float(change.max() or 0.0)),
            "preview": MetadataValue.md(
                _preview(table, ["sku", "batch", "last_pushed_price", "price", "hold_reason", "held_since"])
            ),
        }
    )
    return table


def build_held_assets() -> list[AssetsDefinition]:
    """`price_approvals` and `held_price_changes`."""
    return [price_approvals, held_price_changes]


def build_approve_job() -> Any:
    """`approve_held_prices`: record the approvals given in run config, then refresh the held table."""
    return define_asset_job(
        APPROVE_JOB_NAME,
        selection=AssetSelection.assets(APPROVALS_KEY, HELD_KEY),
        description="Approve held price changes (config ops.price_approvals.config: skus: [...] or "
        "all: true); the next storefront_prices run of their batches releases them.",
    )


def build_held_job() -> Any:
    """`held_price_changes_job`: rebuild the held table from the latest storefront_prices."""
    return define_asset_job(
        HELD_JOB_NAME,
        selection=AssetSelection.assets(HELD_KEY),
        description="Rebuild held_price_changes from the latest storefront_prices and approvals.",
    )


def build_held_schedule(job: Any) -> ScheduleDefinition:
    """Refresh `held_price_changes` every 5 minutes, so the UI shows what the sweep holds."""
    return ScheduleDefinition(
        name="held_price_changes_schedule",
        cron_schedule=HELD_SCHEDULE_CRON,
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Rebuilds the held price changes table from the latest storefront_prices.",
    )
