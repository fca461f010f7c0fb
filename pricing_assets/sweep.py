"""The `price_sweep` sensor: walks the catalog batches so the whole catalog is priced every sweep_minutes."""

from __future__ import annotations

import json
import math
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

from resources.runtime import RuntimeConfig

SWEEP_INTERVAL_SECONDS = 30
# Range tags are how Dagster itself launches one run over several partitions (backfills do the same).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# define_asset_job's return type is not exported by dagster's public API.
AssetJob = Any


@dataclass(frozen=True)
class SweepCursor:
    """Where the sweep is: the next batch index and how many full passes have completed."""

    next_index: int = 0
    cycle: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> SweepCursor:
        """Read a cursor string (None or empty: the start of the first cycle)."""
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(next_index=int(data["next_index"]), cycle=int(data["cycle"]))

    def dump(self) -> str:
        """The cursor as stored by Dagster."""
        return json.dumps({"next_index": self.next_index, "cycle": self.cycle}, sort_keys=True)


def batches_per_tick(total: int, sweep_minutes: int, interval_seconds: int) -> int:
    """How many batches each tick launches so `total` batches are covered within sweep_minutes."""
    ticks_per_sweep = max(1, (sweep_minutes * 60) // interval_seconds)
    return max(1, math.ceil(total / ticks_per_sweep))


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


def build_sweep_job(selection: AssetSelection, partitions_def: StaticPartitionsDefinition) -> AssetJob:
    """The job a sweep tick launches: supplier offers, best offers and storefront prices for a range."""
    return define_asset_job(
        "price_sweep_job",
        selection=selection,
        partitions_def=partitions_def,
        description="Fetch offers and price a range of catalog batches (launched by price_sweep).",
    )


def build_price_sweep_sensor(job: AssetJob, partitions_def: StaticPartitionsDefinition) -> _SensorDefinition:
    """The sweep sensor over `partitions_def`, launching `job` for one contiguous range per tick."""

    @sensor(
        name="price_sweep",
        job=job,
        minimum_interval_seconds=SWEEP_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.STOPPED,
        description="Sweeps every catalog batch once per sweep_minutes, resuming from its cursor.",
    )
    def price_sweep(
        context: SensorEvaluationContext, service_config: RuntimeConfig
    ) -> SensorResult | SkipReason:
        """Launch the next range of batches and advance the cursor."""
        keys = partitions_def.get_partition_keys()
        config = service_config.load()
        cursor = SweepCursor.parse(context.cursor)
        per_tick = batches_per_tick(len(keys), config.sweep_minutes, SWEEP_INTERVAL_SECONDS)
        chosen, after = plan_tick(keys, cursor, per_tick)
        tags = {RANGE_START_TAG: chosen[0], RANGE_END_TAG: chosen[-1], "sweep/cycle": str(cursor.cycle)}
        request = RunRequest(run_key=run_key(cursor, chosen), tags=tags)
        context.log.info(f"sweep cycle {cursor.cycle}: {chosen[0]}..{chosen[-1]} ({len(chosen)} batches)")
        return SensorResult(run_requests=[request], cursor=after.dump())

    return price_sweep
