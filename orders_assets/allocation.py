"""Stock allocation: price snapshots, first come first served, never more than a snapshot holds.

Rules (docs/architecture.md §4, docs/orders.md):
- Allocation is first come first served by (created_at, order_id, sku). A line goes whole to the
  cheapest supplier (by store-currency `cost`, ties by supplier id) whose snapshot valid at the order's
  time still has enough units; otherwise it is `backordered` (no partial fills). Units allocated from
  one snapshot (sku, supplier, valid_from) never exceed its stock; a snapshot with unknown stock that is
  flagged in stock is unlimited. Cancelled orders take no stock; refunded ones keep theirs (the goods
  were delivered before the refund).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl

from orders_assets.schemas import ALLOCATING_STATUSES, ORDER_ALLOCATIONS_SCHEMA, empty_table
from resources.schemas import MONEY, PRICE_HISTORY_SCHEMA, UTC_TS

_SNAPSHOT_COLUMNS = ("sku", "supplier", "cost", "stock", "in_stock", "valid_from", "valid_to")


def normalize_snapshots(price_history: pl.DataFrame | None) -> pl.DataFrame:
    """price_history rows as stock snapshots: one row per (sku, supplier, valid_from), sorted.

    The same snapshot can appear in two daily files (open, then closed); the closed version wins.
    """
    schema = {name: PRICE_HISTORY_SCHEMA[name] for name in _SNAPSHOT_COLUMNS}
    if price_history is None or price_history.height == 0:
        return empty_table(schema)
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
        return empty_table(schema)
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
