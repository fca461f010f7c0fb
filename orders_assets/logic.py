"""Pure polars transformations of the orders location: validation, allocation, sales report, summary.

Nothing here does I/O; assets.py wires these functions to the database and the warehouse.
Rules (docs/architecture.md §4, docs/orders.md):
- A line is rejected for the first failing rule in REJECT_REASONS order; duplicates are judged among
  lines that passed every other rule, keyed by (order_id, sku), keeping the first in
  (quantity, unit_price) order.
- Allocation is first come first served by (created_at, order_id, sku). A line goes whole to the
  cheapest supplier (by store-currency `cost`, ties by supplier id) whose snapshot valid at the order's
  time still has enough units; otherwise it is `backordered` (no partial fills). Units allocated from
  one snapshot (sku, supplier, valid_from) never exceed its stock; a snapshot with unknown stock that is
  flagged in stock is unlimited. Cancelled orders take no stock; refunded ones keep theirs (the goods
  were delivered before the refund).
- Revenue counts placed and paid orders only: cancelled and refunded orders leave the report entirely
  (units, revenue and cost), and backordered lines are not sales yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import pandera.polars as pa
import polars as pl

from resources.schemas import MONEY, PRICE_HISTORY_SCHEMA, UTC_TS

STATUSES: tuple[str, ...] = ("placed", "paid", "cancelled", "refunded")
REVENUE_STATUSES: tuple[str, ...] = ("placed", "paid")
# Statuses whose lines take stock: everything but cancelled (a refund comes after delivery).
ALLOCATING_STATUSES: tuple[str, ...] = ("placed", "paid", "refunded")
# Reject reasons, in the order they are tested (a line gets the first that applies).
REJECT_REASONS: tuple[str, ...] = (
    "line_without_order",
    "order_without_lines",
    "unknown_status",
    "unknown_sku",
    "non_positive_quantity",
    "negative_price",
    "currency_mismatch",
    "duplicate_line",
)
ALLOCATION_STATES: tuple[str, ...] = ("allocated", "backordered", "cancelled")

DAY = pl.String()

# orders/<day>: accepted order lines, allow-listed columns only (no payment or address data).
ORDERS_SCHEMA: dict[str, pl.DataType] = {
    "day": DAY,
    "order_id": pl.Int64(),
    "customer_id": pl.String(),
    "status": pl.String(),
    "currency": pl.String(),
    "payment_method": pl.String(),
    "created_at": UTC_TS,
    "updated_at": UTC_TS,
    "sku": pl.String(),
    "quantity": pl.Int64(),
    "unit_price": MONEY,
}

# order_rejects/<day>: lines (or empty orders) that failed validation, with the reason.
ORDER_REJECTS_SCHEMA: dict[str, pl.DataType] = {
    "day": DAY,
    "order_id": pl.Int64(),
    "status": pl.String(),
    "currency": pl.String(),
    "created_at": UTC_TS,
    "sku": pl.String(),
    "quantity": pl.Int64(),
    "unit_price": MONEY,
    "reason": pl.String(),
}

# order_allocations/<day>: every accepted line with its supplier (or why it has none).
ORDER_ALLOCATIONS_SCHEMA: dict[str, pl.DataType] = {
    "day": DAY,
    "fcfs_rank": pl.Int64(),  # 1-based position in the day's first-come-first-served queue
    "order_id": pl.Int64(),
    "customer_id": pl.String(),
    "status": pl.String(),
    "created_at": UTC_TS,
    "sku": pl.String(),
    "quantity": pl.Int64(),
    "unit_price": MONEY,
    "allocation": pl.String(),  # allocated | backordered | cancelled
    "supplier": pl.String(),
    "unit_cost": MONEY,  # the supplier's cost (store currency) valid at created_at
    "snapshot_valid_from": UTC_TS,  # the price_history row the units came from
    "snapshot_stock": pl.Int64(),  # its stock; null = unknown (unlimited)
}

# sales_report/<day>: per day x SKU x supplier.
SALES_REPORT_SCHEMA: dict[str, pl.DataType] = {
    "day": DAY,
    "sku": pl.String(),
    "supplier": pl.String(),
    "orders": pl.Int64(),
    "units": pl.Int64(),
    "revenue": MONEY,
    "cost": MONEY,
    "margin": MONEY,
}

# sales_summary: per-day totals over the rolling window.
SALES_SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "day": DAY,
    "skus": pl.Int64(),
    "units": pl.Int64(),
    "revenue": MONEY,
    "cost": MONEY,
    "margin": MONEY,
}

_SNAPSHOT_COLUMNS = ("sku", "supplier", "cost", "stock", "in_stock", "valid_from", "valid_to")


def _empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def day_expr(column: str = "created_at") -> pl.Expr:
    """The UTC day (YYYY-MM-DD) of a timestamp column."""
    return pl.col(column).dt.date().cast(pl.String)


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class Validated:
    """Accepted lines, rejected rows, and how many source rows went in."""

    accepted: pl.DataFrame
    rejects: pl.DataFrame
    ingested: int


def orders_schema(store_currency: str) -> pa.DataFrameSchema:
    """The pandera contract every accepted `orders` frame satisfies."""
    return pa.DataFrameSchema(
        {
            "day": pa.Column(pl.String, pa.Check.str_matches(r"^\d{4}-\d{2}-\d{2}$")),
            "order_id": pa.Column(pl.Int64),
            "customer_id": pa.Column(pl.String, nullable=True),
            "status": pa.Column(pl.String, pa.Check.isin(list(STATUSES))),
            "currency": pa.Column(pl.String, pa.Check.eq(store_currency)),
            "payment_method": pa.Column(pl.String, nullable=True),
            "created_at": pa.Column(UTC_TS),
            "updated_at": pa.Column(UTC_TS),
            "sku": pa.Column(pl.String),
            "quantity": pa.Column(pl.Int64, pa.Check.gt(0)),
            "unit_price": pa.Column(MONEY, pa.Check.ge(Decimal(0))),
        },
        strict=True,
        ordered=True,
        unique=["order_id", "sku"],
        name="orders",
    )


def validate_orders(
    orders: pl.DataFrame,
    lines: pl.DataFrame,
    *,
    known_skus: pl.Series | list[str],
    store_currency: str,
    fallback_day: str,
) -> Validated:
    """Split raw orders and lines into accepted lines and rejects (one reason each).

    `orders` has the OrdersDatabase raw order columns (id, ...), `lines` the raw line columns. A line
    whose order is absent is a `line_without_order`, attributed to the day of the nearest lower order
    id (or `fallback_day` when there is none); an order without any line is one reject row.
    """
    known = pl.Series("sku", known_skus, dtype=pl.String).unique()
    orders = orders.rename({"id": "order_id"}).with_columns(day_expr().alias("day"))
    joined = lines.join(orders, on="order_id", how="left")
    has_order = pl.col("day").is_not_null()
    # Orphans take the day of the closest existing order id below theirs (ids are a sequence).
    orphans = joined.filter(~has_order).select(lines.columns).sort("order_id")
    if orphans.height:
        id_days = orders.select("order_id", "day").sort("order_id")
        orphans = orphans.join_asof(id_days, on="order_id", strategy="backward").with_columns(
            pl.col("day").fill_null(fallback_day)
        )
    empty_orders = orders.join(lines.select("order_id").unique(), on="order_id", how="anti")
    with_order = joined.filter(has_order)
    ingested = lines.height + empty_orders.height

    reason = (
        pl.when(~pl.col("status").is_in(list(STATUSES)))
        .then(pl.lit("unknown_status"))
        .when(~pl.col("sku").is_in(known.implode()))
        .then(pl.lit("unknown_sku"))
        .when(pl.col("quantity").is_null() | (pl.col("quantity") <= 0))
        .then(pl.lit("non_positive_quantity"))
        .when(pl.col("unit_price").is_null() | (pl.col("unit_price") < 0))
        .then(pl.lit("negative_price"))
        .when(pl.col("currency") != store_currency)
        .then(pl.lit("currency_mismatch"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    checked = with_order.with_columns(reason.alias("reason"))
    valid = checked.filter(pl.col("reason").is_null())
    # The second and later valid lines for the same (order, sku) are duplicates. Hashing finds the
    # few repeated keys; only those are ordered to pick the one kept.
    repeated = valid.select("order_id", "sku").is_duplicated()
    twins = valid.filter(repeated).sort(["order_id", "sku", "quantity", "unit_price"])
    twins = twins.with_columns(
        pl.when(pl.int_range(pl.len()).over(["order_id", "sku"]) > 0)
        .then(pl.lit("duplicate_line"))
        .alias("reason")
    )
    accepted = (
        pl.concat([valid.filter(~repeated), twins.filter(pl.col("reason").is_null())])
        .select(list(ORDERS_SCHEMA))
        .sort(["created_at", "order_id", "sku"])
    )
    rejects = pl.concat(
        [
            checked.filter(pl.col("reason").is_not_null()).select(list(ORDER_REJECTS_SCHEMA)),
            twins.filter(pl.col("reason").is_not_null()).select(list(ORDER_REJECTS_SCHEMA)),
            orphans.with_columns(
                pl.lit(None, pl.String).alias("status"),
                pl.lit(None, pl.String).alias("currency"),
                pl.lit(None, UTC_TS).alias("created_at"),
                pl.lit("line_without_order").alias("reason"),
            ).select(list(ORDER_REJECTS_SCHEMA))
            if orphans.height
            else _empty(ORDER_REJECTS_SCHEMA),
            empty_orders.with_columns(
                pl.lit(None, pl.String).alias("sku"),
                pl.lit(None, pl.Int64).alias("quantity"),
                pl.lit(None, MONEY).alias("unit_price"),
                pl.lit("order_without_lines").alias("reason"),
            ).select(list(ORDER_REJECTS_SCHEMA)),
        ],
        how="vertical_relaxed",
    )
    rejects = rejects.select([pl.col(name).cast(dtype) for name, dtype in ORDER_REJECTS_SCHEMA.items()]).sort(
        ["day", "reason", "order_id", "sku"], nulls_last=True
    )
    accepted = accepted.select([pl.col(name).cast(dtype) for name, dtype in ORDERS_SCHEMA.items()])
    return Validated(
        accepted=orders_schema(store_currency).validate(accepted), rejects=rejects, ingested=ingested
    )


def reject_counts(rejects: pl.DataFrame) -> dict[str, int]:
    """Rejected rows per reason, every reason present (zero when absent)."""
    counts = dict(rejects.group_by("reason").len().iter_rows()) if rejects.height else {}
    return {reason: int(counts.get(reason, 0)) for reason in REJECT_REASONS}


# ---------------------------------------------------------------- price snapshots


def normalize_snapshots(price_history: pl.DataFrame | None) -> pl.DataFrame:
    """price_history rows as stock snapshots: one row per (sku, supplier, valid_from), sorted.

    The same snapshot can appear in two daily files (open, then closed); the closed version wins.
    """
    schema = {name: PRICE_HISTORY_SCHEMA[name] for name in _SNAPSHOT_COLUMNS}
    if price_history is None or price_history.height == 0:
        return _empty(schema)
    frame = price_history.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])
    return (
        frame.sort(["sku", "supplier", "valid_from", "valid_to"], nulls_last=True)
        .unique(["sku", "supplier", "valid_from"], keep="first", maintain_order=True)
        .sort("valid_from")
    )


def snapshots_start(
    snapshots: pl.DataFrame, skus: pl.Series | list[str], start: datetime, end: datetime
) -> datetime | None:
    """The earliest valid_from among snapshots of these SKUs that are valid at some time in [start, end)."""
    relevant = snapshots.filter(
        pl.col("sku").is_in(pl.Series(skus, dtype=pl.String).unique().implode())
        & (pl.col("valid_from") < end)
        & (pl.col("valid_to").is_null() | (pl.col("valid_to") > start))
    )
    return relevant.get_column("valid_from").min() if relevant.height else None


def consumed_units(prior_allocations: pl.DataFrame | None) -> pl.DataFrame:
    """Units already taken from each snapshot by earlier days' allocations."""
    schema = {"sku": pl.String(), "supplier": pl.String(), "valid_from": UTC_TS, "prior": pl.Int64()}
    if prior_allocations is None or prior_allocations.height == 0:
        return _empty(schema)
    return (
        prior_allocations.filter(pl.col("allocation") == "allocated")
        .group_by("sku", "supplier", pl.col("snapshot_valid_from").alias("valid_from"))
        .agg(pl.col("quantity").sum().cast(pl.Int64).alias("prior"))
        .select([pl.col(name).cast(dtype) for name, dtype in schema.items()])
    )


_KEY = ["sku", "supplier", "valid_from"]
_DECISION = ["_seq", "_snap"]
_CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    "_seq": pl.UInt32(),
    "sku": pl.String(),
    "quantity": pl.Int64(),
    "supplier": pl.String(),
    "cost": MONEY,
    "stock": pl.Int64(),
    "prior": pl.Int64(),
    "_snap": pl.UInt32(),
}


def _candidates(live: pl.DataFrame, snaps: pl.DataFrame) -> pl.DataFrame:
    """Every (line, supplier) whose snapshot valid at the line's time is in stock.

    `live` is in _seq order (hence by created_at); `snaps` carries `_snap` (its row number) and
    `prior` (units earlier days took). Rows come out in _seq order per supplier.
    """
    left = live.select("_seq", "sku", "created_at", "quantity")
    parts = []
    for supplier in sorted(snaps.get_column("supplier").unique().to_list()):
        right = snaps.filter(pl.col("supplier") == supplier).sort("valid_from")
        joined = left.join_asof(
            right,
            left_on="created_at",
            right_on="valid_from",
            by="sku",
            strategy="backward",
            check_sortedness=False,  # both sides are sorted by their time column
        )
        parts.append(
            joined.filter(
                pl.col("valid_from").is_not_null()
                & (pl.col("valid_to").is_null() | (pl.col("created_at") < pl.col("valid_to")))
                & pl.col("in_stock").fill_null(False)
                & (pl.col("stock").is_null() | (pl.col("stock") > 0))
            ).select(list(_CANDIDATE_SCHEMA))
        )
    return pl.concat(parts) if parts else pl.DataFrame(schema=_CANDIDATE_SCHEMA)


def _stable_ranks(candidates: pl.DataFrame, snaps: pl.DataFrame) -> pl.Series:
    """Per snapshot (indexed by _snap): its supplier's rank for the SKU, 0 = cheapest; null when the
    SKU's suppliers do not keep one cost order across the snapshots its lines can use.

    Ordering a SKU's suppliers by lowest cost (then id), the order is stable when every supplier's
    highest cost stays below the next one's lowest (or equals it with the lower id first): then
    every line tries the suppliers in the same order, whatever its time.
    """
    used = snaps.join(candidates.select("_snap").unique(), on="_snap", how="semi")
    spans = (
        used.group_by("sku", "supplier")
        .agg(pl.col("cost").min().alias("_lo"), pl.col("cost").max().alias("_hi"))
        .sort(["sku", "_lo", "supplier"])
        .with_columns(pl.int_range(pl.len()).over("sku").alias("_rank"))
    )
    next_lo = pl.col("_lo").shift(-1).over("sku")
    next_supplier = pl.col("supplier").shift(-1).over("sku")
    ordered = (
        next_lo.is_null()
        | (pl.col("_hi") < next_lo)
        | ((pl.col("_hi") == next_lo) & (pl.col("supplier") < next_supplier))
    )
    spans = spans.with_columns(ordered.all().over("sku").alias("_stable"))
    ranks = snaps.select("_snap", "sku", "supplier").join(
        spans.filter(pl.col("_stable")).select("sku", "supplier", "_rank"),
        on=["sku", "supplier"],
        how="left",
    )
    return ranks.sort("_snap").get_column("_rank")


def _first_fit(pending: pl.DataFrame) -> pl.DataFrame:
    """Lines each snapshot takes when it serves them in _seq order, each whole if it still fits.

    `pending` holds _seq, _snap, quantity and `_cap` (units left; null = unlimited), in _seq order.
    A cumulative sum settles everything up to a snapshot's first misfit; the lines after it that are
    small enough for what is left go round again. Every round leaves fewer units than the misfit
    needed, so there are at most as many rounds as the largest quantity.
    """
    taken = []
    rounds = int(pending.get_column("quantity").max() or 0) + 1
    for _ in range(rounds):
        if pending.height == 0:
            break
        cum = pl.col("quantity").cum_sum().over("_snap")
        misfit = pl.col("_cap").is_not_null() & (cum > pl.col("_cap"))
        pending = pending.with_columns(
            pl.when(misfit).then(pl.col("_seq")).min().over("_snap").alias("_misfit")
        )
        take = pl.col("_misfit").is_null() | (pl.col("_seq") < pl.col("_misfit"))
        taken.append(pending.filter(take).select(_DECISION))
        left = pl.col("_cap") - pl.when(take).then(pl.col("quantity")).otherwise(0).sum().over("_snap")
        pending = (
            pending.with_columns(left.alias("_cap"))
            .filter(~take & (pl.col("quantity") <= pl.col("_cap")))
            .drop("_misfit")
        )
    return pl.concat(taken) if taken else pending.select(_DECISION)


def _decide_by_rank(candidates: pl.DataFrame, lines: int) -> pl.DataFrame:
    """Greedy FCFS for SKUs with a stable supplier order: the cheapest supplier takes what it can by
    first fit, the next one first-fits what is left, and so on (a supplier's choices depend only on
    earlier lines and on the suppliers ranked above it)."""
    decided = pl.Series("decided", [False] * lines, dtype=pl.Boolean)
    picks = []
    ranked = candidates.with_columns((pl.col("stock") - pl.col("prior")).alias("_cap")).filter(
        pl.col("_cap").is_null() | (pl.col("_cap") >= pl.col("quantity"))
    )
    for rank in range(int(ranked.get_column("_rank").max() or 0) + 1):
        level = ranked.filter(pl.col("_rank") == rank)
        level = level.filter(~decided.gather(level.get_column("_seq"))).sort("_seq")
        if level.height == 0:
            continue
        taken = _first_fit(level.select("_seq", "_snap", "quantity", "_cap"))
        picks.append(taken)
        decided = decided.scatter(taken.get_column("_seq"), True)
    return pl.concat(picks) if picks else pl.DataFrame(schema={"_seq": pl.UInt32(), "_snap": pl.UInt32()})


def _decide_sequentially(candidates: pl.DataFrame) -> pl.DataFrame:
    """Greedy FCFS for any SKU: a cumulative sum settles each SKU up to its first line that does not
    fit its cheapest snapshot; from there an exact loop walks the lines one by one."""
    candidates = candidates.sort(["_seq", "cost", "supplier"])
    best = candidates.unique("_seq", keep="first", maintain_order=True)
    best = best.with_columns(
        (pl.col("quantity").cum_sum().over("_snap") + pl.col("prior")).alias("_used")
    ).with_columns((pl.col("stock").is_null() | (pl.col("_used") <= pl.col("stock"))).alias("_fits"))
    first_fail = best.filter(~pl.col("_fits")).group_by("sku").agg(pl.col("_seq").min().alias("_fail"))
    best = best.join(first_fail, on="sku", how="left")
    settled_mask = pl.col("_fail").is_null() | (pl.col("_seq") < pl.col("_fail"))
    settled = best.filter(settled_mask).select(_DECISION)
    contested = best.filter(~settled_mask).select("_seq")
    if contested.height == 0:
        return settled
    used = best.filter(settled_mask).group_by("_snap").agg(pl.col("quantity").sum().alias("_settled"))
    pending = (
        candidates.join(contested, on="_seq", how="semi")
        .join(used, on="_snap", how="left")
        .with_columns((pl.col("stock") - pl.col("prior") - pl.col("_settled").fill_null(0)).alias("_left"))
        .sort(["_seq", "cost", "supplier"])
    )
    remaining: dict[int, int | None] = {}
    chosen_seq: list[int] = []
    chosen_snap: list[int] = []
    decided_seq = -1
    for seq, snap, quantity, left in zip(
        pending.get_column("_seq").to_list(),
        pending.get_column("_snap").to_list(),
        pending.get_column("quantity").to_list(),
        pending.get_column("_left").to_list(),
        strict=True,
    ):
        if seq == decided_seq:
            continue
        available = remaining.setdefault(snap, left)
        if available is None or available >= quantity:
            if available is not None:
                remaining[snap] = available - quantity
            chosen_seq.append(seq)
            chosen_snap.append(snap)
            decided_seq = seq
    picked = pl.DataFrame(
        {"_seq": chosen_seq, "_snap": chosen_snap}, schema={"_seq": pl.UInt32(), "_snap": pl.UInt32()}
    )
    return pl.concat([settled, picked])


def allocate(
    lines: pl.DataFrame, snapshots: pl.DataFrame, consumed: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Route every accepted line to a supplier, first come first served (see the module rules).

    `lines` are accepted `orders` rows (one or more days); `snapshots` come from normalize_snapshots;
    `consumed` (from consumed_units) holds units earlier days already took from the same snapshots.
    """
    if consumed is None:
        consumed = consumed_units(None)
    snaps = (
        snapshots.join(consumed, on=_KEY, how="left")
        .with_columns(pl.col("prior").fill_null(0))
        .with_row_index("_snap")
    )
    lines = lines.sort(["created_at", "order_id", "sku"]).with_row_index("_seq")
    live = lines.filter(pl.col("status").is_in(list(ALLOCATING_STATUSES)))
    candidates = _candidates(live, snaps)
    ranks = _stable_ranks(candidates, snaps)
    candidates = candidates.with_columns(ranks.gather(candidates.get_column("_snap")).alias("_rank"))
    stable = pl.col("_rank").is_not_null()
    decisions = pl.concat(
        [
            _decide_by_rank(candidates.filter(stable), lines.height),
            _decide_sequentially(candidates.filter(~stable)),
        ]
    )
    chosen = decisions.join(
        snaps.select("_snap", "supplier", "cost", "valid_from", "stock"), on="_snap", how="left"
    )
    out = lines.join(chosen, on="_seq", how="left", maintain_order="left")
    out = out.with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("day").alias("fcfs_rank"),
        pl.when(~pl.col("status").is_in(list(ALLOCATING_STATUSES)))
        .then(pl.lit("cancelled"))
        .when(pl.col("supplier").is_not_null())
        .then(pl.lit("allocated"))
        .otherwise(pl.lit("backordered"))
        .alias("allocation"),
        pl.col("cost").alias("unit_cost"),
        pl.col("valid_from").alias("snapshot_valid_from"),
        pl.col("stock").alias("snapshot_stock"),
    )
    return out.select([pl.col(name).cast(dtype) for name, dtype in ORDER_ALLOCATIONS_SCHEMA.items()])


def stock_balance(
    allocations: pl.DataFrame, snapshots: pl.DataFrame, consumed: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Per snapshot: stock, units taken before, units allocated now, what is left, and violations.

    Independent of the allocator's bookkeeping: each allocated line's snapshot is looked up again from
    (sku, supplier, created_at). A line with no valid in-stock snapshot is a violation, and so is a
    snapshot that earlier days alone already overdrew.
    """
    if consumed is None:
        consumed = consumed_units(None)
    key = ["sku", "supplier", "valid_from"]
    schema = {
        "sku": pl.String(),
        "supplier": pl.String(),
        "valid_from": UTC_TS,
        "stock": pl.Int64(),
        "prior": pl.Int64(),
        "allocated": pl.Int64(),
        "remaining": pl.Int64(),
        "violation": pl.Boolean(),
    }
    taken = allocations.filter(pl.col("allocation") == "allocated").select(
        "sku", "supplier", "created_at", "quantity"
    )
    looked_up = taken.sort("created_at").join_asof(
        snapshots.sort("valid_from"),
        left_on="created_at",
        right_on="valid_from",
        by=["sku", "supplier"],
        strategy="backward",
        check_sortedness=False,  # both sides are sorted by their time column
    )
    usable = (
        pl.col("valid_from").is_not_null()
        & (pl.col("valid_to").is_null() | (pl.col("created_at") < pl.col("valid_to")))
        & pl.col("in_stock").fill_null(False)
        & (pl.col("stock").is_null() | (pl.col("stock") > 0))
    )
    now = (
        looked_up.with_columns(usable.alias("usable"))
        .group_by(key)
        .agg(
            pl.col("stock").first(),
            pl.col("quantity").sum().cast(pl.Int64).alias("allocated"),
            pl.col("usable").all(),
        )
    )
    before_only = (
        consumed.join(now.select(key), on=key, how="anti")
        .join(snapshots.select(*key, "stock"), on=key, how="inner")
        .select(*key, "stock", pl.lit(0, pl.Int64).alias("allocated"), pl.lit(True).alias("usable"))
    )
    balance = (
        pl.concat([now, before_only], how="vertical_relaxed")
        .join(consumed, on=key, how="left")
        .with_columns(pl.col("prior").fill_null(0))
        .with_columns((pl.col("stock") - pl.col("prior") - pl.col("allocated")).alias("remaining"))
        .with_columns((~pl.col("usable") | (pl.col("remaining") < 0).fill_null(False)).alias("violation"))
    )
    return balance.select([pl.col(n).cast(t) for n, t in schema.items()]).sort(key, nulls_last=True)


# ---------------------------------------------------------------- report and summary


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
        return Summary(_empty(SALES_SUMMARY_SCHEMA), "_No sales in the warehouse yet._", {"days": 0})
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


def lookback_days(
    snapshots_from: datetime | None, window_start: datetime, *, max_days: int, earliest_day: date
) -> tuple[list[str], bool]:
    """Days before the window whose allocations may have used a snapshot still valid in it.

    Returns the ISO days (oldest first, at most `max_days`, none before `earliest_day`) and whether
    the cap cut the list short.
    """
    if snapshots_from is None or snapshots_from >= window_start:
        return [], False
    last = window_start.date() - timedelta(days=1)
    wanted = max(snapshots_from.date(), earliest_day)
    first = max(wanted, window_start.date() - timedelta(days=max_days))
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    return days, first > wanted
