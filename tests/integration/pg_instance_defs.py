"""A tiny code location for the PostgreSQL instance test: one asset and a fast sensor with a cursor."""

from __future__ import annotations

from dagster import (
    DefaultSensorStatus,
    Definitions,
    SensorEvaluationContext,
    SensorResult,
    asset,
    sensor,
)


@asset
def pg_probe() -> int:
    """A trivial asset, materialized to prove runs and events land in PostgreSQL."""
    return 42


@sensor(minimum_interval_seconds=1, default_status=DefaultSensorStatus.RUNNING)
def pg_cursor_sensor(context: SensorEvaluationContext) -> SensorResult:
    """Advances a counter cursor on every tick, requesting nothing."""
    count = int(context.cursor or "0") + 1
    return SensorResult(run_requests=[], cursor=f"pg-tick-{count}")


defs = Definitions(assets=[pg_probe], sensors=[pg_cursor_sensor])
