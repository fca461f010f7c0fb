"""Storefront reconciliation: what the storefront shows against what the ledger says it acknowledged.

The ledger (`storefront_sync/<batch>`) records what the storefront acknowledged; nothing in a push
notices if the storefront later loses it (a restart without persistence, a manual edit). The
`storefront_reconcile_job` runs `storefront_sync` in reconcile mode: it reads the storefront's
current state once (`GET /prices` for the webhook storefront, `productVariants` for Shopify), finds
the acknowledged SKUs it does not show (`find_drift`), and marks them. A marked SKU is pushed again
by the sync, through the same journal and diff as any change: once, with a new version. Marks that
a sync could not push yet stay in `_reconcile/storefront_sync/<batch>.parquet` (internal state) for
the next sync of the batch; a mark is void once the ledger's version of its SKU moves on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import polars as pl
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    StaticPartitionsDefinition,
    define_asset_job,
    sensor,
)

from resources.push_state import MARK_SCHEMA
from resources.schemas import UTC_TS
from resources.service_config import ServiceConfigResource
from resources.storefront import IN_DOUBT

RECONCILE_JOB_NAME = "storefront_reconcile_job"
RECONCILE_SENSOR_NAME = "storefront_reconcile"
RECONCILE_INTERVAL_SECONDS = 30
DRIFT_KINDS = ("missing", "price", "available", "supplier")
# Range tags: the same way Dagster (and the sweep) runs one job over many partitions.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# define_asset_job's return type is not exported by dagster's public API.
AssetJob: TypeAlias = Any
_ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def find_drift(ledger: pl.DataFrame, live: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Acknowledged ledger rows the storefront does not show as acknowledged (MARK_SCHEMA).

    Compared: presence, price (where the ledger set one), availability and routed supplier.
    SKUs in doubt are left out: their journaled chunk is resent by the next sync anyway.
    """
    acknowledged = ledger.filter(
        pl.col("acknowledged_at").is_not_null() & pl.col("pending_status").fill_null("").ne(IN_DOUBT)
    )
    # The live frame is the whole storefront and a sync calls this once per batch: keeping only the
    # batch's SKUs first (order kept, so keep="last" still picks the same row) saves a full-size
    # dedupe and join per batch (16 batches against a 1M-SKU storefront: 11.5 s -> 1.0 s).
    mine = live.filter(pl.col("sku").is_in(acknowledged.get_column("sku").implode()))
    shown = mine.select(
        "sku",
        pl.lit(True).alias("_shown"),
        pl.col("price").alias("live_price"),
        pl.col("available").alias("live_available"),
        pl.col("supplier").alias("live_supplier"),
    ).unique("sku", keep="last")
    joined = acknowledged.select("sku", "version", "price", "available", "supplier").join(
        shown, on="sku", how="left"
    )
    kind = (
        pl.when(pl.col("_shown").is_null())
        .then(pl.lit("missing"))
        .when(pl.col("price").is_not_null() & pl.col("price").ne_missing(pl.col("live_price")))
        .then(pl.lit("price"))
        .when(pl.col("available").ne_missing(pl.col("live_available")))
        .then(pl.lit("available"))
        .when(pl.col("supplier").ne_missing(pl.col("live_supplier")))
        .then(pl.lit("supplier"))
    )
    return (
        joined.with_columns(kind.alias("kind"), pl.lit(now).cast(UTC_TS).alias("detected_at"))
        .filter(pl.col("kind").is_not_null())
        .select([pl.col(name).cast(dtype) for name, dtype in MARK_SCHEMA.items()])
        .sort("sku")
    )


@dataclass
class Repair:
    """The marks of one batch applied to one sync."""

    active: pl.DataFrame  # marks whose SKU still has the ledger version they were taken at

    @classmethod
    def of(cls, marks: pl.DataFrame, ledger: pl.DataFrame) -> Repair:
        """Only marks the ledger has not moved past (a newer acknowledged push already replaced it)."""
        current = ledger.select("sku", "version")
        return cls(marks.join(current, on=["sku", "version"], how="semi"))

    @property
    def skus(self) -> list[str]:
        """The SKUs to push again."""
        return self.active.get_column("sku").to_list()

    def ledger_for_diff(self, ledger: pl.DataFrame) -> pl.DataFrame:
        """The ledger as the diff should see it: a marked SKU's availability unknown, so it differs
        from any target and goes out again with version + 1 (its acknowledged price is kept, which
        is what an unavailable SKU is pushed with)."""
        if self.active.is_empty():
            return ledger
        marked = pl.col("sku").is_in(self.skus)
        return ledger.with_columns(
            pl.when(marked).then(None).otherwise(pl.col("available")).alias("available")
        )

    def targets(self, targets: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
        """Targets where a marked SKU without a pushable target (held, or no price row) is restored
        to what the ledger says the storefront acknowledged."""
        if self.active.is_empty():
            return targets
        pushable = targets.filter(~pl.col("held")).get_column("sku")
        restore = self.active.filter(~pl.col("sku").is_in(pushable.implode())).get_column("sku")
        if restore.is_empty():
            return targets
        acknowledged = ledger.filter(pl.col("sku").is_in(restore.implode())).select(
            "sku",
            "price",
            "currency",
            "available",
            "supplier",
            pl.lit(False).alias("held"),
            pl.lit(None, dtype=pl.String).alias("hold_reason"),
        )
        kept = targets.filter(~pl.col("sku").is_in(restore.implode()))
        return pl.concat([kept, acknowledged], how="diagonal_relaxed")

    def settle(
        self, synced: pl.DataFrame, before: pl.DataFrame
    ) -> tuple[pl.DataFrame, list[str], pl.DataFrame]:
        """(ledger to write, SKUs repaired now, marks still open) after the sync.

        A marked SKU whose version moved on was acknowledged again: repaired. The others keep their
        acknowledged availability in the ledger (the diff only saw it as unknown) and stay marked.
        """
        if self.active.is_empty():
            return synced, [], self.active
        versions = synced.select("sku", pl.col("version").alias("_now"))
        state = self.active.join(versions, on="sku", how="left")
        repaired = state.filter(pl.col("_now").fill_null(0) > pl.col("version")).get_column("sku").to_list()
        still = self.active.filter(~pl.col("sku").is_in(repaired))
        if still.is_empty():
            return synced, repaired, still
        original = before.select("sku", pl.col("available").alias("_available"))
        restored = (
            synced.join(original, on="sku", how="left")
            .with_columns(
                pl.when(pl.col("sku").is_in(still.get_column("sku").implode()))
                .then(pl.col("_available"))
                .otherwise(pl.col("available"))
                .alias("available")
            )
            .drop("_available")
        )
        return restored, repaired, still


def drift_counts(drift: pl.DataFrame) -> dict[str, int]:
    """Drifted SKUs per kind, every kind present."""
    counts = dict(drift.group_by("kind").len().iter_rows()) if drift.height else {}
    return {kind: int(counts.get(kind, 0)) for kind in DRIFT_KINDS}


# Metadata a storefront_sync materialization carries when it compared the storefront with the ledger.
RECONCILED_METADATA = "skus_checked"
# Run config of a reconcile run: storefront_sync in reconcile mode.
RECONCILE_RUN_CONFIG = {"ops": {"storefront_sync": {"config": {"reconcile": True}}}}


def build_reconcile_job() -> AssetJob:
    """`storefront_reconcile_job`: storefront_sync in reconcile mode (read the storefront, repair drift)."""
    return define_asset_job(
        RECONCILE_JOB_NAME,
        selection=AssetSelection.assets(AssetKey("storefront_sync")),
        config=RECONCILE_RUN_CONFIG,
        description="Compare what the storefront shows with the ledger and push the drifted SKUs again.",
    )


def slot(now: float, period_seconds: float) -> int:
    """The reconcile period `now` falls in: one run key per period, so a re-evaluated tick adds none."""
    return int(now // period_seconds)


def build_reconcile_sensor(
    job: AssetJob,
    partitions_def: StaticPartitionsDefinition,
    clock: Callable[[], float] = time.time,
) -> SensorDefinition:
    """Launches the reconcile job once per sweep period (SERVICE_CONFIG sweep_minutes) over every batch."""

    @sensor(
        name=RECONCILE_SENSOR_NAME,
        job=job,
        minimum_interval_seconds=RECONCILE_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Once per sweep period: compare the storefront with the ledger and repair drift.",
    )
    def storefront_reconcile(
        context: SensorEvaluationContext, service_config: ServiceConfigResource
    ) -> SensorResult | SkipReason:
        """One reconcile run per period, none while one is still queued or running."""
        period = service_config.load().sweep_minutes * 60
        current = slot(clock(), period)
        # The cursor is the last period launched: later ticks of that period skip without a request.
        if context.cursor == str(current):
            return SkipReason(f"reconciled in this period already ({period // 60} min periods)")
        pushed = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("storefront_sync")), limit=1
        )
        if not pushed.records:
            return SkipReason("nothing acknowledged yet: storefront_sync was never materialized")
        newest = pushed.records[0]
        materialization = newest.asset_materialization
        if (
            materialization is not None
            and RECONCILED_METADATA in materialization.metadata
            and clock() - newest.timestamp < period
        ):
            # The sweep's price_cycle_job runs storefront_sync in reconcile mode: no second run.
            return SkipReason(f"reconciled by run {newest.run_id} less than a period ago")
        busy = context.instance.get_runs(
            filters=RunsFilter(job_name=RECONCILE_JOB_NAME, statuses=_ACTIVE), limit=1
        )
        if busy:
            return SkipReason(f"reconcile run {busy[0].run_id} is still {busy[0].status.value.lower()}")
        keys = partitions_def.get_partition_keys()
        request = RunRequest(
            run_key=f"storefront_reconcile:{current}",
            run_config=RECONCILE_RUN_CONFIG,
            tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
        )
        return SensorResult(run_requests=[request], cursor=str(current))

    return storefront_reconcile
