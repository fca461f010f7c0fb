"""Partitions of the orders location: UTC days, today's included (it fills up hour by hour)."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition

# Structural, so a constant rather than configuration: moving it would re-key existing partitions.
ORDERS_START_DATE = "2026-01-01"

# end_offset=1 adds the current, still open day: the hourly schedule materializes it as it grows.
daily_partitions = DailyPartitionsDefinition(start_date=ORDERS_START_DATE, timezone="UTC", end_offset=1)
