"""The `price_sweep` sensor: walks the catalog batches so the whole catalog is priced every sweep_minutes.

Each launch is one `price_cycle_job` run over a contiguous range: fetch, select, price, and push in the
same run (storefront_sync in reconcile mode, so a storefront that lost prices is repaired by the next
sweep). `price_sweep_job` is the same without the push, for runs launched by hand; the storefront_push
sensor pushes what it materializes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    StaticPartitionsDefinition,
    define_asset_job,
    sensor,
)
from dagster import SensorDefinition as _SensorDefinition

from pricing_assets.push_sensor import PUSHES_IN_RUN, PUSHES_IN_RUN_TAG
from pricing_assets.reconcile import RECONCILE_RUN_CONFIG
from pricing_assets.sweep_executor import sweep_executor
from resources.service_config import ServiceConfigResource

SWEEP_INTERVAL_SECONDS = 30
MAX_RUNTIME_TAG = "dagster/max_runtime"
SWEEP_MAX_RUNTIME_SECONDS = 600
SWEEP_JOB_NAME = "price_sweep_job"
CYCLE_JOB_NAME = "price_cycle_job"
SWEEP_SENSOR_NAME = "price_sweep"
# Range tags are how Dagster itself launches one run over several partitions (backfills do the same).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# define_asset_job's return type is not exported by dagster's public API.
AssetJob = Any


@dataclass(frozen=True)
class SweepCursor:
    """Where the sweep is: next batch index, completed passes, and when the last range was launched."""

    next_index: int = 0
    cycle: int = 0
    launched_at: float = 0.0  # unix seconds; 0 = never

    @classmethod
    def parse(cls, raw: str | None) -> SweepCursor:
        """Read a cursor string (None or empty: the start of the first cycle)."""
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(
            next_index=int(data["next_index"]),
            cycle=int(data["cycle"]),
            launched_at=float(data.get("launched_at", 0.0)),
        )

    def dump(self) -> str:
        """The cursor as stored by Dagster."""
        payload = {"next_index": self.next_index, "cycle": self.cycle, "launched_at": self.launched_at}
        return json.dumps(payload, sort_keys=True)


def batches_per_tick(total: int, sweep_minutes: int, interval_seconds: int) -> int:
    """How many batches each tick launches so `total` batches are covered within sweep_minutes."""
    ticks_per_sweep = max(1, (sweep_minutes * 60) // interval_seconds)
    return max(1, math.ceil(total / ticks_per_sweep))


def plan_runs(total: int, sweep_minutes: int, min_per_run: int) -> tuple[int, float]:
    """(batches per run, seconds between launches) so `total` batches are covered each sweep.

    A run pays seconds of process start-up before any work, so runs are made as large as
    `min_per_run` allows and spaced evenly over the sweep instead of one small run per tick.
    """
    per_run = min(total, max(min_per_run, batches_per_tick(total, sweep_minutes, SWEEP_INTERVAL_SECONDS)))
    runs = math.ceil(total / per_run)
    return per_run, sweep_minutes * 60 / runs


def plan_tick(keys: list[str], cursor: SweepCursor, per_tick: int) -> tuple[list[str], SweepCursor]:
    """The contiguous batches for this tick and the cursor after it (wrapping to a new cycle)."""
    start = cursor.next_index % len(keys)
    end = min(start + per_tick, len(keys))
    chosen = keys[start:end]
    if end >= len(keys):
        return chosen, SweepCursor(next_index=0, cycle=cursor.cycle + 1)
    return chosen, SweepCursor(next_index=end, cycle=cursor.cycle)


def run_key(cursor: SweepCursor, chosen: list[str]) -> str:
    """Deterministic: the same cycle and batches always give the same key, so a re-tick never doubles."""
    return f"sweep-{cursor.cycle}-{chosen[0]}-{chosen[-1]}"


def build_sweep_job(selection: AssetSelection) -> AssetJob:
    """`price_sweep_job`: supplier offers, best offers and storefront prices for a range, no push."""
    return _range_job(
        SWEEP_JOB_NAME,
        selection,
        "Fetch offers and price a range of catalog batches (the storefront_push sensor pushes them).",
    )


def build_cycle_job(selection: AssetSelection) -> AssetJob:
    """`price_cycle_job`: the sweep and the push of what changed, in one run (launched by price_sweep)."""
    return _range_job(
        CYCLE_JOB_NAME,
        selection,
        "Fetch offers, price and push a range of catalog batches (launched by price_sweep).",
        # Measured (bench soak): a push in its own run waited for the push sensor's tick, the queue
        # and a run process start-up, 25 s at p95 after the sweep's end on a 2-core machine.
        {PUSHES_IN_RUN_TAG: PUSHES_IN_RUN},
    )


def _range_job(
    name: str,
    selection: AssetSelection,
    description: str,
    tags: dict[str, str] | None = None,
) -> AssetJob:
    """A job over a range of catalog batches (partitioned like its assets), with a max runtime."""
    return define_asset_job(
        name,
        selection=selection,
        # In process unless SWEEP_EXECUTOR says otherwise (pricing_assets/sweep_executor.py). Measured
        # (bench/sweep.py): each step process of the multiprocess executor costs ~2.5 s of spawn and
        # imports on a 2-core machine, far more than the steps' work; suppliers are still fetched
        # concurrently inside their steps, and pools serialize them across runs anyway.
        executor_def=sweep_executor(),
        description=description,
        # Run monitoring ends a run over this (a dead run worker would keep its pool slots for ever);
        # a sweep run is due every sweep_minutes, so ten minutes is far past any healthy one.
        tags={MAX_RUNTIME_TAG: str(SWEEP_MAX_RUNTIME_SECONDS), **(tags or {})},
    )


def build_price_sweep_sensor(
    job: AssetJob, partitions_def: StaticPartitionsDefinition, clock: Callable[[], float] = time.time
) -> _SensorDefinition:
    """The sweep sensor over `partitions_def`, launching `job` for one contiguous range when it is due."""

    @sensor(
        name=SWEEP_SENSOR_NAME,
        job=job,
        minimum_interval_seconds=SWEEP_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.STOPPED,
        description="Sweeps every catalog batch once per sweep_minutes, resuming from its cursor.",
    )
    def price_sweep(
        context: SensorEvaluationContext, service_config: ServiceConfigResource
    ) -> SensorResult | SkipReason:
        """Launch the next range of batches and advance the cursor."""
        keys = partitions_def.get_partition_keys()
        config = service_config.load()
        cursor = SweepCursor.parse(context.cursor)
        per_run, spacing = plan_runs(len(keys), config.sweep_minutes, config.sweep_batches_per_run)
        now = clock()
        # A tick can come a little early; 5 % slack keeps the sweep from slipping a whole interval.
        if cursor.launched_at and now - cursor.launched_at < spacing * 0.95:
            return SkipReason(f"next range due in {spacing - (now - cursor.launched_at):.0f} s")
        chosen, after = plan_tick(keys, cursor, per_run)
        after = SweepCursor(next_index=after.next_index, cycle=after.cycle, launched_at=now)
        tags = {RANGE_START_TAG: chosen[0], RANGE_END_TAG: chosen[-1], "sweep/cycle": str(cursor.cycle)}
        # storefront_sync reads what the storefront shows and repairs drift in the same pass.
        request = RunRequest(run_key=run_key(cursor, chosen), run_config=RECONCILE_RUN_CONFIG, tags=tags)
        context.log.info(f"sweep cycle {cursor.cycle}: {chosen[0]}..{chosen[-1]} ({len(chosen)} batches)")
        return SensorResult(run_requests=[request], cursor=after.dump())

    return price_sweep
