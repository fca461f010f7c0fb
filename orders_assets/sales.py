"""The sales report and summary: revenue, cost and margin of placed and paid orders (docs/orders.md).

Revenue counts placed and paid orders only: cancelled and refunded orders leave the report entirely
(units, revenue and cost), and backordered lines are not sales yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import polars as pl

from orders_assets.schemas import REVENUE_STATUSES, SALES_REPORT_SCHEMA, SALES_SUMMARY_SCHEMA, empty_table


def sales_report(allocations: pl.DataFrame) -> pl.DataFrame:
    """Per day x SKU x supplier: orders, units, revenue, cost (at order time) and margin.

    Only allocated lines of placed or paid orders count.
    """
    sold = allocations.filter(
        (pl.col("allocation") == "allocated") & pl.col("status").is_in(list(REVENUE_STATUSES))
    )
    report = (
        sold.group_by("day", "sku", "supplier")
        .agg(
            pl.col("order_id").n_unique().cast(pl.Int64).alias("orders"),
            pl.col("quantity").sum().cast(pl.Int64).alias("units"),
            (pl.col("quantity") * pl.col("unit_price")).sum().alias("revenue"),
            (pl.col("quantity") * pl.col("unit_cost")).sum().alias("cost"),
        )
        .with_columns((pl.col("revenue") - pl.col("cost")).alias("margin"))
    )
    return report.select([pl.col(n).cast(t) for n, t in SALES_REPORT_SCHEMA.items()]).sort(
        ["day", "sku", "supplier"]
    )


def _cents(value: Decimal | None) -> int:
    return int((value or Decimal(0)).scaleb(2).to_integral_value())


@dataclass(frozen=True)
class Summary:
    """The rolling per-day totals, a markdown rendering, and plottable numbers."""

    frame: pl.DataFrame
    markdown: str
    metrics: dict[str, int | float]


def sales_summary(report: pl.DataFrame | None, *, window_days: int = 30, top_skus: int = 5) -> Summary:
    """Per-day totals of the last `window_days` days present in the report, plus top SKUs by margin."""
    if report is None or report.height == 0:
        return Summary(empty_table(SALES_SUMMARY_SCHEMA), "_No sales in the warehouse yet._", {"days": 0})
    days = report.get_column("day").unique().sort(descending=True).head(window_days)
    recent = report.filter(pl.col("day").is_in(days.implode()))
    per_day = (
        recent.group_by("day")
        .agg(
            pl.col("sku").n_unique().cast(pl.Int64).alias("skus"),
            pl.col("units").sum().cast(pl.Int64),
            pl.col("revenue").sum(),
            pl.col("cost").sum(),
            pl.col("margin").sum(),
        )
        .select([pl.col(n).cast(t) for n, t in SALES_SUMMARY_SCHEMA.items()])
        .sort("day")
    )
    top = (
        recent.group_by("sku")
        .agg(pl.col("units").sum(), pl.col("revenue").sum(), pl.col("margin").sum())
        .sort(["margin", "sku"], descending=[True, False])
        .head(top_skus)
    )
    rows = ["| day | units | revenue | cost | margin | margin % |", "|---|---:|---:|---:|---:|---:|"]
    for day, _skus, units, revenue, cost, margin in per_day.sort("day", descending=True).iter_rows():
        share = f"{(margin / revenue * 100):.1f}" if revenue else "-"
        rows.append(f"| {day} | {units} | {revenue:.2f} | {cost:.2f} | {margin:.2f} | {share} |")
    rows += [
        "",
        f"Top {top.height} SKUs by margin:",
        "",
        "| sku | units | revenue | margin |",
        "|---|---:|---:|---:|",
    ]
    rows += [
        f"| {sku} | {units} | {revenue:.2f} | {margin:.2f} |"
        for sku, units, revenue, margin in top.iter_rows()
    ]
    latest = per_day.row(-1, named=True)
    metrics: dict[str, int | float] = {
        "days": per_day.height,
        "units_latest_day": int(latest["units"]),
        # Money as integer cents: exact, and still a number the UI can plot.
        "revenue_cents_latest_day": _cents(latest["revenue"]),
        "cost_cents_latest_day": _cents(latest["cost"]),
        "margin_cents_latest_day": _cents(latest["margin"]),
        "revenue_cents_window": _cents(per_day.get_column("revenue").sum()),
        "margin_cents_window": _cents(per_day.get_column("margin").sum()),
    }
    if latest["revenue"]:
        # A ratio for the plot, not an amount of money.
        metrics["margin_pct_latest_day"] = round(float(latest["margin"] / latest["revenue"] * 100), 2)
    return Summary(per_day, "\n".join(rows), metrics)
