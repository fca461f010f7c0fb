"""Late changes to older days: the incremental read by `updated_at` that re-runs the days it touches."""

from datetime import UTC, date, datetime, timedelta

import polars as pl
from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from orders_assets.schedules import orders_job, range_run_request
from resources.orders_db import OrdersDatabase


def late_change_request(changes: pl.DataFrame, *, today: date, cursor: str) -> RunRequest | None:
    """A run over [oldest changed day, today] for changes older than yesterday, else None.

    Later days are included because their allocations count units the changed day took from the
    same stock snapshots; the hourly schedule already covers yesterday and today alone.
    """
    older = changes.filter(pl.col("day") < (today - timedelta(days=1)).isoformat())
    if older.height == 0:
        return None
    first = date.fromisoformat(older.get_column("day").min())
    return range_run_request(first, today, run_key=f"late-{first.isoformat()}-{cursor}")


@sensor(
    job=orders_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
)
def orders_late_changes(context: SensorEvaluationContext, orders_db: OrdersDatabase) -> SensorResult:
    """Watch `updated_at` past a watermark; a change to a day older than yesterday re-runs it."""
    now = datetime.now(UTC)
    if not context.cursor:
        latest = orders_db.max_updated_at()
        return SensorResult(
            skip_reason="watermark initialised; changes after it will be picked up",
            cursor=(min(latest, now) if latest else now).isoformat(),
        )
    watermark = datetime.fromisoformat(context.cursor)
    changes = orders_db.changed_days(since=watermark, until=now)
    if changes.height == 0:
        return SensorResult(skip_reason=f"no order updated since {context.cursor}", cursor=context.cursor)
    cursor = changes.get_column("max_updated_at").max().isoformat()
    request = late_change_request(changes, today=now.date(), cursor=cursor)
    if request is None:
        return SensorResult(
            skip_reason="only today's and yesterday's orders changed (hourly schedule)", cursor=cursor
        )
    return SensorResult(run_requests=[request], cursor=cursor)
