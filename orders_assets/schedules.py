"""Hourly refresh of today's and yesterday's partitions (late status changes land within a day)."""

from datetime import UTC, date, datetime, timedelta

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from orders_assets.partitions import ORDERS_START_DATE

# Dagster's documented run tags for a single run over a range of partitions.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

orders_job = define_asset_job(
    "orders_job",
    selection=AssetSelection.groups("orders"),
    description="orders -> order_rejects -> order_allocations -> sales_report -> sales_summary.",
)


def range_run_request(first: date, last: date, *, run_key: str | None) -> RunRequest:
    """One run over the days [first, last] (never before the first partition), in FCFS order."""
    first = max(first, date.fromisoformat(ORDERS_START_DATE))
    return RunRequest(
        run_key=run_key,
        tags={RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()},
    )


def hourly_request(now: datetime) -> RunRequest:
    """The run for one tick: yesterday and today (UTC) together."""
    today = now.astimezone(UTC).date()
    return range_run_request(today - timedelta(days=1), today, run_key=f"orders-{now:%Y-%m-%dT%H:%M}")


@schedule(
    job=orders_job,
    cron_schedule="15 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
def orders_hourly(context: ScheduleEvaluationContext) -> RunRequest:
    """Every hour: re-materialize yesterday and today in one run (the same run keeps FCFS order)."""
    return hourly_request(context.scheduled_execution_time)
